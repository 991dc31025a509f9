"""Rule regexes run under RE2: hostile patterns and hostile codes cannot freeze the daemon."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scannerd.classify import Classifier, RuleError, _default_tables
from scannerd.rules.regex import (
    MAX_PATTERN_CHARS,
    RegexRefused,
    _counted_repeats,
    compile_linear,
)

from helpers import REPO, Client, Daemon, PtyScanner, wechat_code

CATASTROPHIC = [r"(a+)+b", r"V(\d+)+-\d{4}", r"(\w|\d)+\$", r"(x+x+)+y"]
HOSTILE_CODES = ["a" * 32 + "!", "V" + "1" * 32 + "!", "1" * 32 + "!", "x" * 40]


def rule(regex: str, rid: str = "site.x", **extra: object) -> dict[str, object]:
    return {"id": rid, "channel": "his", "kind": "other", "regex": regex, "priority": 150, **extra}


def err(*rules: dict[str, object]) -> RuleError:
    with pytest.raises(RuleError) as e:
        Classifier.build(list(rules))
    return e.value


def test_catastrophic_site_rules_classify_hostile_codes_and_still_match_their_own() -> None:
    # In a child process with a generous deadline: under a backtracking engine the first
    # hostile code alone takes 2^32 steps (hours), so a regression fails by timing out here.
    script = textwrap.dedent(
        f"""
        from scannerd.classify import Classifier
        rules = [{{"id": f"site.r{{i}}", "channel": "his", "kind": "other", "regex": p, "priority": 150 + i}}
                 for i, p in enumerate({CATASTROPHIC!r})]
        clf = Classifier.build(rules)
        for _ in range(200):
            out = [clf.classify(t, "code128").rule for t in {HOSTILE_CODES!r}]
        print(",".join(out))
        print(clf.classify("aaab").rule, clf.classify("V123-4567").rule, clf.classify("xxy").rule)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    hostile, own = done.stdout.splitlines()
    assert hostile == "unknown,unknown,unknown,unknown"
    assert own.split() == ["site.r0", "site.r1", "site.r3"]


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("a{1000000000}", "repetition count 1000000000 is larger than the 1000 allowed"),
        ("a{2,5000}", "repetition count 5000"),
        ("(a{1000}){1000}", "invalid repetition size"),
        (r"\pL{1000}", "pattern too large"),
        ("x" * (MAX_PATTERN_CHARS + 1), f"longer than the {MAX_PATTERN_CHARS} allowed"),
        (r"RX(?=\d)\d+", "no lookaround, no backreferences"),
        (r"(RX)\d+\1", "no lookaround, no backreferences"),
    ],
)
def test_patterns_re2_cannot_run_in_bounds_are_refused_naming_the_rule(pattern: str, fragment: str) -> None:
    t0 = time.monotonic()
    e = err({"id": "his.ok", "channel": "his", "kind": "other", "prefix": "VN"}, rule(pattern))
    assert time.monotonic() - t0 < 10  # refused, not compiled into a 178 MB program first
    assert e.key == "rule[2].regex"
    assert str(e).startswith("rule[2].regex: bad regex ")
    assert fragment in str(e)
    assert len(str(e)) < 300  # a 1025-character pattern is not printed whole


def test_counted_repeats_ignore_escapes_classes_and_literal_braces() -> None:
    assert _counted_repeats(r"a{3}b{2,}c{4,9}") == [3, 2, 4, 9]
    assert _counted_repeats(r"\{5000}[{]{2}[]{9}]x") == [2]
    assert _counted_repeats(r"[^]{7}]{1}") == [1]
    assert _counted_repeats("{,5}a{x}") == []


def test_refused_before_compiling() -> None:
    with pytest.raises(RegexRefused, match="1000000000"):
        compile_linear("a{1000000000}")


def test_check_config_refuses_a_hostile_rule_in_bounded_time(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[[rule]]\nid = 'site.rx'\nchannel = 'his'\nkind = 'other'\nprefix = 'RX'\n\n"
                   "[[rule]]\nid = 'site.big'\nchannel = 'his'\nkind = 'other'\nregex = 'a{1000000000}'\n")
    done = subprocess.run([sys.executable, "-m", "scannerd", "check-config", "-c", str(cfg)],
                          check=False, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 2
    assert f"{cfg}: rule[2].regex: bad regex" in done.stderr and "1000" in done.stderr


def test_surrogates_and_non_ascii_never_match_ascii_classes() -> None:
    p = compile_linear(r"\d+")
    assert p.fullmatch("0123") and not p.fullmatch("١٢٣") and not p.fullmatch("12\ud800")
    assert compile_linear("wxp://.*", ignore_case=True).fullmatch("WXP://x")


# Every default regex: RE2 decides exactly as Python's re (ASCII) did, on strings built from
# the characters the rules care about.
DEFAULT_REGEXES = [(t["id"], t["regex"], bool(t.get("ignore_case"))) for t in _default_tables() if "regex" in t]
_ALPHABET = "0123456789ABCDEFXxaz:,.+/=-é١ "


@pytest.mark.parametrize(("rid", "pattern", "ignore_case"), DEFAULT_REGEXES, ids=[r[0] for r in DEFAULT_REGEXES])
def test_default_rule_regexes_compile_under_re2(rid: str, pattern: str, ignore_case: bool) -> None:
    compile_linear(pattern, ignore_case)


@settings(max_examples=400)
@given(data=st.data())
def test_default_rule_regexes_decide_as_python_re_did(data: st.DataObject) -> None:
    rid, pattern, ignore_case = data.draw(st.sampled_from(DEFAULT_REGEXES))
    examples = next(t for t in _default_tables() if t["id"] == rid).get("examples", [])
    text = data.draw(
        st.one_of(
            st.text(alphabet=_ALPHABET, max_size=90),
            # Mutations of the rule's own examples reach deep into the pattern.
            st.builds(lambda ex, i, ch: ex[:i] + ch + ex[i + 1:], st.sampled_from(examples), st.integers(0, 90), st.sampled_from(_ALPHABET)),
            st.builds(lambda ex, n: ex[:n], st.sampled_from(examples), st.integers(0, 90)),
        )
    )
    flags = re.ASCII | (re.IGNORECASE if ignore_case else 0)
    assert compile_linear(pattern, ignore_case).fullmatch(text) == (re.fullmatch(pattern, text, flags) is not None)


def test_catastrophic_rule_cannot_freeze_the_daemon(tmp_path: Path) -> None:
    pty = PtyScanner(tmp_path, "scanner")
    sock = tmp_path / "scannerd.sock"
    config = tmp_path / "config.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [socket]
            path = "{sock}"
            [[scanner]]
            name = "window-1"
            path = "{pty.link}"
            terminator = "CR"
            [[rule]]
            id = "site.evil"
            channel = "his"
            kind = "other"
            regex = '(a+)+b'
            priority = 150
            [[rule]]
            id = "site.visit"
            channel = "his"
            kind = "other"
            regex = 'V(\\d+)+-\\d{{4}}'
            priority = 160
            """
        )
    )
    daemon = Daemon(config, sock)
    try:
        daemon.wait_ready()
        client = Client(sock)  # subscribed as the HIS
        client.wait_present()
        pty.release_slave()
        pty.write(("a" * 32 + "!\r").encode(), baud=None)
        pty.write(("V" + "1" * 32 + "!\r").encode(), baud=None)
        first, second = client.next_of("scan", timeout=30), client.next_of("scan", timeout=30)
        assert {first["rule"], second["rule"]} <= {"unknown", "nhsa.candidate"}
        # The loop is free: a command answers and the next scan goes through.
        assert client.command({"cmd": "status"}, timeout=30)["ok"]
        code = wechat_code()
        pty.write(f"{code}\r".encode(), baud=None)
        got = client.next_of("scan", timeout=30)
        assert (got["rule"], got["code"]) == ("wechat.v1", code)
        pty.write(b"V123-4567\r", baud=None)
        assert client.next_of("scan", timeout=30)["rule"] == "site.visit"
        client.close()
    finally:
        daemon.stop()
        pty.close()
