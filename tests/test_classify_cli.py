"""`scannerd classify` and `scannerd stats --shapes`: output, masking, config, a real socket."""

from __future__ import annotations

import argparse
import io
import json
import random
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from scannerd.census import Census
from scannerd.classify import Classifier
from scannerd.commands import classify as classify_cmd
from scannerd.commands import stats as stats_cmd

WECHAT = "139709347111868295"  # synthetic: random digits, prefix 13, 18 long
ALIPAY = "2867767590915105906978"


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scannerd")
    sub = parser.add_subparsers()
    classify_cmd.register(sub)
    stats_cmd.register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def no_system_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from scannerd import config

    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")


def lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_one_json_line_per_code_masked(capsys: pytest.CaptureFixture[str], no_system_config: None) -> None:
    assert run(["classify", WECHAT, ALIPAY, "wxp://f2f0abcdef"]) == 0
    out = capsys.readouterr().out
    assert WECHAT not in out and ALIPAY not in out
    rows = lines(out)
    assert [r["rule"] for r in rows] == ["wechat.v1", "alipay.v1", "wechat.receive"]
    assert rows[0] == {"masked": "1397**********8295", "channel": "wechat", "kind": "payment", "rule": "wechat.v1", "confidence": "high", "symbology": None}
    assert rows[2]["reject"] == "merchant_receive_code"


def test_show_prints_full_code(capsys: pytest.CaptureFixture[str], no_system_config: None) -> None:
    assert run(["classify", "--show", WECHAT]) == 0
    assert lines(capsys.readouterr().out)[0]["code"] == WECHAT


def test_explain(capsys: pytest.CaptureFixture[str], no_system_config: None) -> None:
    assert run(["classify", "--explain", "2537495106933305123456789"]) == 0
    out = capsys.readouterr().out
    assert "alipay.v1: prefix ok, length 25 not in 16–24" in out
    assert "2537495106933305123456789" not in out
    assert run(["classify", "--explain", WECHAT]) == 0
    out = capsys.readouterr().out
    assert "winner wechat.v1" in out and "source: WeChat Pay POS guide" in out and WECHAT not in out


def test_stdin_and_aim(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_system_config: None) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{WECHAT}\n]Q1{'NH' + 'A1' * 13}\n\n"))
    assert run(["classify", "--aim", "-"]) == 0
    rows = lines(capsys.readouterr().out)
    assert [(r["rule"], r["symbology"]) for r in rows] == [("wechat.v1", None), ("nhsa.candidate", "qr")]


def test_site_rules_from_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[classify]\ncandidates = false\n\n'
        '[[rule]]\nid = "his.rx"\nchannel = "his"\nkind = "other"\nregex = \'RX\\d{10}\'\nsource = "HIS 处方单号"\n\n'
        '[[rule]]\nid = "alipay.v1"\nenabled = false\n',
        encoding="utf-8",
    )
    assert run(["classify", "-c", str(cfg), "-s", "code128", "RX0123456789", ALIPAY, "NH" + "A1" * 13]) == 0
    rows = lines(capsys.readouterr().out)
    assert [r["rule"] for r in rows] == ["his.rx", "unknown", "unknown"]
    assert run(["classify", "-c", str(cfg), "--rules"]) == 0
    out = capsys.readouterr().out
    assert "his.rx" in out and "off  alipay.v1" in out and "candidates off" in out


def test_bad_site_rule_exits_2_naming_the_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[[rule]]\nid = "his.bad"\nchannel = "his"\nkind = "other"\nregex = "("\n', encoding="utf-8")
    assert run(["classify", "-c", str(cfg), WECHAT]) == 2
    err = capsys.readouterr().err
    assert "rule[1].regex" in err and 'bad regex "("' in err and str(cfg) in err


def test_no_codes_is_an_error(capsys: pytest.CaptureFixture[str], no_system_config: None) -> None:
    assert run(["classify"]) == 2


# --- stats --shapes against a real Unix socket ------------------------------------------------------


class FakeDaemon:
    """Speaks protocol v1 just enough: hello, then one reply to `shapes`."""

    def __init__(self, path: Path, shapes: list[dict[str, Any]]) -> None:
        self.path, self.shapes = path, shapes
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.commands: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn, conn.makefile("rwb", buffering=0) as f:
            f.write(b'{"type":"hello","protocol":2,"version":"test","host":"h"}\n')
            while True:
                cmd = json.loads(f.readline())
                self.commands.append(cmd)
                f.write((json.dumps({"type": "reply", "cmd": "shapes", "ok": True, "shapes": self.shapes}) + "\n").encode())
                return

    def close(self) -> None:
        self.thread.join(5)
        self.sock.close()


def census_shapes() -> list[dict[str, Any]]:
    clf, census = Classifier.build(), Census()
    for text, sym in [("NH" + "A1" * 13, "qr")] * 3 + [("1234567", "code128")]:
        census.observe(text, sym, clf.classify(text, sym))
    return census.snapshot()


def test_stats_shapes_table_and_suggestion(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    daemon = FakeDaemon(tmp_path / "s.sock", census_shapes())
    try:
        assert run(["stats", "--shapes", "--suggest", "--socket", str(daemon.path)]) == 0
    finally:
        daemon.close()
    # A tool asking a question never subscribes, so it can never take a scan.
    assert daemon.commands == [{"cmd": "shapes"}]
    out = capsys.readouterr().out
    assert "count" in out and "nhsa/medical_insurance" in out and '"NH"' in out
    # The suggested rule, pasted into a site config, claims codes of that shape.
    sketch = out.split("[[rule]]", 1)[1].split("\n\n", 1)[0]
    import tomllib

    rule = tomllib.loads(sketch)
    clf = Classifier.build([rule])
    assert clf.classify("NH" + "B2" * 13, "qr").rule == "site.shape1"


def test_stats_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    shapes = census_shapes()
    daemon = FakeDaemon(tmp_path / "s.sock", shapes)
    try:
        assert run(["stats", "--shapes", "--json", "--socket", str(daemon.path)]) == 0
    finally:
        daemon.close()
    assert lines(capsys.readouterr().out) == shapes


def test_stats_without_daemon(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(["stats", "--shapes", "--socket", str(tmp_path / "none.sock")]) == 1
    assert "no such socket" in capsys.readouterr().err


def test_empty_census_table() -> None:
    assert "no unknown" in stats_cmd.format_table([])


def shapes_of(scans: list[tuple[str, str | None]]) -> list[dict[str, Any]]:
    clf, census = Classifier.build(), Census()
    for text, sym in scans:
        census.observe(text, sym, clf.classify(text, sym))
    return census.snapshot()


def ec28(province: str = "33") -> str:
    return "424" + "".join(random.choice("0123456789") for _ in range(19)) + province + "0000"


def test_shapes_tell_the_generation_rule_from_the_fallback(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    scans = [(ec28(), "qr") for _ in range(4)] + [("NH" + "A1" * 13, "qr")] * 3 + [(ec28("99"), "qr")]
    daemon = FakeDaemon(tmp_path / "s.sock", shapes_of(scans))
    try:
        assert run(["stats", "--shapes", "--socket", str(daemon.path)]) == 0
    finally:
        daemon.close()
    out = capsys.readouterr().out
    assert "nhsa.ec28.v1" in out and "nhsa.candidate" in out
    assert "医保码 (medical_insurance) candidates: 8: 4 matched nhsa.ec28.v1, 4 only the generic fallback nhsa.candidate" in out


def test_suggest_only_from_shapes_that_look_like_a_medical_insurance_code(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    scans = (
        [("zz-1234-5678", "code128")] * 10  # a HIS slip: unknown, 1D
        + [("zz-1234-5678-" + "9" * 20, "qr")] * 10  # 2D but with punctuation
        + [("https://example.org/" + "a" * 20, "qr")] * 10  # a web link
        + [(ec28(), "qr") for _ in range(5)]  # already the generation rule
        + [("QX" + "B2" * 13, "qr")] * 2  # 医保码-like, but seen twice only
        + [("NH" + "A1" * 13, "qr")] * 3  # 医保码-like, enough evidence
    )
    daemon = FakeDaemon(tmp_path / "s.sock", shapes_of(scans))
    try:
        assert run(["stats", "--shapes", "--suggest", "--socket", str(daemon.path)]) == 0
    finally:
        daemon.close()
    out = capsys.readouterr().out
    assert out.count("[[rule]]") == 1
    refusals = [line for line in out.splitlines() if "no rule suggested" in line]
    assert len(refusals) == 5, refusals
    assert any("length 12" in r and "HIS number" in r for r in refusals)
    assert any("already matched by nhsa.ec28.v1" in r for r in refusals)
    assert sum("a 医保码 is letters and digits" in r for r in refusals) == 2
    assert any("seen 2 time(s)" in r for r in refusals)
    import tomllib

    rule = tomllib.loads("[[rule]]" + out.split("[[rule]]", 1)[1].split("\n\n", 1)[0])["rule"][0]
    assert (rule["kind"], rule["confidence"], rule["prefix"]) == ("medical_insurance", "candidate", "NH")
    clf = Classifier.build([rule], search_overlaps=True)  # what check-config would say of it
    assert clf.classify("NH" + "C3" * 13, "qr").rule == "site.shape1"
    assert clf.classify("139709347111868295").rule == "wechat.v1"
    # With a lower bar the twice-seen shape is suggested too.
    daemon = FakeDaemon(tmp_path / "t.sock", shapes_of(scans))
    try:
        assert run(["stats", "--shapes", "--suggest", "--min-count", "2", "--socket", str(daemon.path)]) == 0
    finally:
        daemon.close()
    assert capsys.readouterr().out.count("[[rule]]") == 2
