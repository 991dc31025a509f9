"""Site [[rule]]s and [classify] options: add, replace, disable, priority, and every error."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scannerd.classify import Classifier, RuleError

REPO = Path(__file__).resolve().parent.parent

_rng = random.Random(4242)


def digits(n: int) -> str:
    return "".join(_rng.choice("0123456789") for _ in range(n))


def wechat() -> str:
    return "13" + digits(16)  # prefix region 13 with random date digits: checked below


RX = {"id": "his.rx", "channel": "his", "kind": "other", "regex": r"RX\d{10}", "source": "hospital HIS: 处方单号"}


# With the overlap search: what check-config runs, so every rule here is checked the strict way.
def build(*rules: dict[str, Any], **options: Any) -> Classifier:
    return Classifier.build(list(rules), options, search_overlaps=True)


def err(*rules: Any, **options: Any) -> RuleError:
    with pytest.raises(RuleError) as e:
        Classifier.build(list(rules), options, search_overlaps=True)
    return e.value


# --- rules that work ----------------------------------------------------------------------------


def test_site_rule_adds_a_his_number() -> None:
    clf = build(RX)
    c = clf.classify("RX" + digits(10), "code128")
    assert (c.channel, c.kind, c.rule, c.confidence) == ("his", "other", "his.rx", "site")
    assert c.source == "hospital HIS: 处方单号"
    assert clf.classify("RX" + digits(9), "code128").rule == "unknown"


def test_his_range_with_higher_priority_wins_over_wechat() -> None:
    visit = {"id": "his.visit", "channel": "his", "kind": "other", "prefix": "1390", "length": 18, "charset": "digits", "priority": 150}
    clf = build(visit)
    assert clf.classify("1390" + digits(14)).rule == "his.visit"
    assert clf.classify("1391" + digits(14)).rule in ("wechat.v1", "id_number.v1")


def test_his_range_at_same_priority_is_an_overlap_error_naming_both_and_an_example() -> None:
    visit = {"id": "his.visit", "channel": "his", "kind": "other", "prefix": "1390", "length": 18, "charset": "digits"}
    e = err(visit)
    assert e.key == "rule[1]"
    msg = str(e)
    assert '"his.visit"' in msg and '"wechat.v1"' in msg and "priority 100" in msg
    example = re.search(r'both match "([^"]+)"', msg)
    assert example is not None
    s = example.group(1)
    assert s.startswith("1390") and len(s) == 18 and s.isdigit()


def test_regex_only_site_rule_overlap_found_by_generation() -> None:
    e = err({"id": "his.any18", "channel": "his", "kind": "other", "regex": r"\d{18}"})
    assert "his.any18" in str(e) and "both match" in str(e)
    # with a higher priority it is allowed (and then wins)
    clf = build({"id": "his.any18", "channel": "his", "kind": "other", "regex": r"\d{18}", "priority": 300})
    assert clf.classify("13" + digits(16)).rule == "his.any18"


def test_two_site_regexes_overlapping() -> None:
    a = {"id": "his.a", "channel": "his", "kind": "other", "regex": r"RX\d{10}"}
    b = {"id": "his.b", "channel": "his", "kind": "other", "regex": r"RX[0-9]+"}
    e = err(a, b)
    assert e.key == "rule[1]" or e.key == "rule[2]"
    assert '"his.a"' in str(e) and '"his.b"' in str(e)
    m = re.search(r'both match "([^"]+)"', str(e))
    assert m and re.fullmatch(r"RX\d{10}", m.group(1))


def test_two_site_regexes_disjoint_are_fine() -> None:
    a = {"id": "his.rx", "channel": "his", "kind": "other", "regex": r"RX\d{10}"}
    b = {"id": "his.visit", "channel": "his", "kind": "other", "regex": r"(VN|MZ)\d{8}"}
    clf = build(a, b)
    assert clf.classify("MZ" + digits(8)).rule == "his.visit"


def test_overlap_with_checked_rule_uses_the_check_fixer() -> None:
    # An all-13-digit site rule overlaps EAN-13 only on strings with a valid check digit.
    e = err({"id": "his.13", "channel": "his", "kind": "other", "length": 13, "charset": "digits"})
    assert '"ean13.v1"' in str(e)


def test_same_id_replaces_a_default() -> None:
    wider = {
        "id": "wechat.v1", "channel": "wechat", "kind": "payment", "prefix": [str(p) for p in range(10, 20)],
        "length": 18, "charset": "digits", "source": "site: WeChat announced 16–19",
    }
    # 18 would overlap jdpay.v1 only if that were enabled; it is not.
    clf = build(wider)
    assert clf.classify("16" + digits(16)).rule == "wechat.v1"
    assert clf.classify("16" + digits(16)).confidence == "site"
    assert [r.id for r in clf.rules].count("wechat.v1") == 1


def test_enabled_false_removes_a_default() -> None:
    clf = build({"id": "wechat.v1", "enabled": False})
    code = "100" + digits(15)
    assert clf.classify(code).rule == "unknown"
    assert clf.classify(code, "qr").rule == "nhsa.candidate"
    assert "wechat.v1" in {r.id for r in clf.disabled}


def test_enabled_true_turns_on_jdpay() -> None:
    clf = build({"id": "jdpay.v1", "enabled": True})
    c = clf.classify("18" + digits(16))
    assert (c.channel, c.kind, c.rule) == ("jdpay", "payment", "jdpay.v1")


def test_site_medical_insurance_rule_with_issuing_app_as_channel() -> None:
    rule = {
        "id": "sh.ybm.alipay", "channel": "alipay", "kind": "medical_insurance",
        "prefix": "SHYB", "regex": r"SHYB[0-9A-Z]{24}", "examples": ["SHYB" + "A1" * 12],
    }
    clf = build(rule)
    c = clf.classify("SHYB" + "Z9" * 12, "qr")
    assert (c.channel, c.kind, c.confidence) == ("alipay", "medical_insurance", "site")


def test_site_reject_rule() -> None:
    clf = build({"id": "unionpay.receive", "channel": "unionpay", "kind": "other", "prefix": "https://qr.95516.com/", "ignore_case": True, "reject": "merchant_receive_code"})
    assert clf.classify("HTTPS://QR.95516.COM/00010000/123").reject_reason == "merchant_receive_code"


def test_length_forms() -> None:
    clf = build({"id": "his.x", "channel": "his", "kind": "other", "prefix": "ZZ", "length": [6, "8-9"]})
    assert [clf.classify("ZZ" + "1" * (n - 2)).rule for n in (5, 6, 7, 8, 9, 10)] == [
        "unknown", "his.x", "unknown", "his.x", "his.x", "unknown"
    ]


# --- options --------------------------------------------------------------------------------------


def test_options_change_candidates() -> None:
    code = "ABCDEFGHJKLMNPQRSTUV"  # 20 characters
    assert build().classify(code, "qr").rule == "nhsa.candidate"
    assert build(candidates=False).classify(code, "qr").rule == "unknown"
    assert build(candidate_min_length=21).classify(code, "qr").rule == "unknown"
    assert build(candidate_min_length_without_symbology=20).classify(code).rule == "nhsa.candidate"
    assert build(candidate_symbologies=["code128"]).classify(code, "code128").rule == "nhsa.candidate"
    assert build(candidate_symbologies=["code128"]).classify(code, "qr").rule == "unknown"
    assert build(candidate_max_length=19).classify(code, "qr").rule == "unknown"


@pytest.mark.parametrize(
    ("options", "key", "fragment"),
    [
        ({"candidate_min": 3}, "classify.candidate_min", "unknown option"),
        ({"candidates": "yes"}, "classify.candidates", "expected true or false"),
        ({"candidate_min_length": -1}, "classify.candidate_min_length", "non-negative integer"),
        ({"candidate_min_length": True}, "classify.candidate_min_length", "non-negative integer"),
        ({"candidate_symbologies": "qr"}, "classify.candidate_symbologies", "list of symbology"),
        ({"candidate_min_length": 50, "candidate_max_length": 40}, "classify.candidate_min_length", "≤"),
        ({"census_max_shapes": "many"}, "classify.census_max_shapes", "non-negative integer"),
    ],
)
def test_option_errors(options: dict[str, Any], key: str, fragment: str) -> None:
    e = err(**options)
    assert e.key == key and fragment in str(e)


# --- rule errors ----------------------------------------------------------------------------------


def test_bad_regex_message_exactly() -> None:
    e = err(RX, {"id": "his.bad", "channel": "his", "kind": "other", "regex": "("})
    assert e.key == "rule[2].regex"
    assert str(e) == 'rule[2].regex: bad regex "(": missing ): ('
    assert isinstance(e, ValueError)


BAD: list[tuple[str, Any, str, str]] = [
    ("not a table", "wechat", "rule[1]", "expected a table"),
    ("no id", {"channel": "his", "kind": "other", "prefix": "X"}, "rule[1].id", "non-empty string"),
    ("bad id", {"id": "His Rx", "channel": "his", "kind": "other", "prefix": "X"}, "rule[1].id", "lowercase"),
    ("reserved id", {"id": "unknown", "channel": "his", "kind": "other", "prefix": "X"}, "rule[1].id", "reserved"),
    ("no channel", {"id": "his.x", "kind": "other", "prefix": "X"}, "rule[1].channel", "required"),
    ("no kind", {"id": "his.x", "channel": "his", "prefix": "X"}, "rule[1].kind", "required"),
    ("bad kind", {"id": "his.x", "channel": "his", "kind": "prescription", "prefix": "X"}, "rule[1].kind", "expected one of"),
    ("bad channel", {"id": "his.x", "channel": "HIS!", "kind": "other", "prefix": "X"}, "rule[1].channel", "lowercase identifier"),
    ("bad confidence", {"id": "his.x", "channel": "his", "kind": "other", "prefix": "X", "confidence": "sure"}, "rule[1].confidence", "expected one of"),
    ("unknown check", {"id": "his.x", "channel": "his", "kind": "other", "prefix": "X", "check": "mod97"}, "rule[1].check", "unknown check 'mod97'; known: ean13, ean8, gs1, id_number, luhn"),
    ("unknown charset", {"id": "his.x", "channel": "his", "kind": "other", "prefix": "X", "charset": "letters"}, "rule[1].charset", "unknown charset"),
    ("unknown key", {"id": "his.x", "channel": "his", "kind": "other", "prefix": "X", "lenght": 5}, "rule[1].lenght", "unknown key"),
    ("bad length", {"id": "his.x", "channel": "his", "kind": "other", "prefix": "X", "length": "long"}, "rule[1].length", "expected a length"),
    ("inverted range", {"id": "his.x", "channel": "his", "kind": "other", "prefix": "X", "length": "9-3"}, "rule[1].length", "min ≤ max"),
    ("empty prefix", {"id": "his.x", "channel": "his", "kind": "other", "prefix": ""}, "rule[1].prefix", "non-empty"),
    ("bad priority", {"id": "his.x", "channel": "his", "kind": "other", "prefix": "X", "priority": "high"}, "rule[1].priority", "integer"),
    ("bool priority", {"id": "his.x", "channel": "his", "kind": "other", "prefix": "X", "priority": True}, "rule[1].priority", "integer"),
    ("matches everything", {"id": "his.x", "channel": "his", "kind": "other"}, "rule[1]", "matches everything"),
    ("prose reject", {"id": "his.x", "channel": "his", "kind": "other", "prefix": "X", "reject": "Bad code!"}, "rule[1].reject", "short token"),
    ("bad enabled", {"id": "his.x", "channel": "his", "kind": "other", "prefix": "X", "enabled": "no"}, "rule[1].enabled", "true or false"),
    ("disable unknown", {"id": "wechat.v9", "enabled": False}, "rule[1].id", "no default rule 'wechat.v9' to switch"),
    ("examples not strings", {"id": "his.x", "channel": "his", "kind": "other", "prefix": "X", "examples": [1]}, "rule[1].examples", "list of strings"),
    ("example not matching", {"id": "his.x", "channel": "his", "kind": "other", "prefix": "XY", "length": 5, "examples": ["XY1"]}, "rule[1].examples[1]", "length 3 not in 5"),
    ("example shadowed", {"id": "his.x", "channel": "his", "kind": "other", "prefix": "13", "length": 18, "charset": "digits", "priority": 50, "examples": ["139709347111868295"]}, "rule[1].examples[1]", "classifies as 'wechat.v1'"),
]


@pytest.mark.parametrize(("label", "rule", "key", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_rule_errors(label: str, rule: Any, key: str, fragment: str) -> None:
    e = err(rule)
    assert e.key == key, str(e)
    assert fragment in str(e), str(e)
    assert str(e).startswith(key + ": ")


def test_duplicate_site_ids() -> None:
    e = err(RX, dict(RX))
    assert e.key == "rule[2].id" and "also rule[1]" in str(e)


def test_rule_index_is_one_based_position_in_site_list() -> None:
    e = err(RX, {"id": "his.ok", "channel": "his", "kind": "other", "prefix": "VN"}, {"id": "his.bad", "channel": "his", "kind": "other", "regex": "[z-a]"})
    assert e.key == "rule[3].regex"


def test_shadowed_example_is_masked_in_the_message() -> None:
    code = "139709347111868295"
    e = err({"id": "his.x", "channel": "his", "kind": "other", "prefix": "13", "length": 18, "charset": "digits", "priority": 50, "examples": [code]})
    assert code not in str(e) and "1397" in str(e)


def test_default_rules_have_no_overlaps_and_build_fast_enough_to_reload() -> None:
    clf = Classifier.build(search_overlaps=True)
    assert len(clf.rules) >= 12


def test_the_daemons_build_skips_the_overlap_search_and_the_first_written_rule_wins() -> None:
    a = {"id": "his.a", "channel": "his", "kind": "other", "regex": r"RX\d{10}"}
    b = {"id": "his.b", "channel": "his", "kind": "other", "regex": r"RX[0-9]+"}
    err(a, b)  # check-config refuses the pair …
    code = "RX" + digits(10)
    # … the daemon, which never searches, decides by the order the rules are written in.
    assert Classifier.build([a, b]).classify(code).rule == "his.a"
    assert Classifier.build([b, a]).classify(code).rule == "his.b"


def test_the_daemons_build_never_loads_the_overlap_search() -> None:
    script = (
        "import sys\n"
        "from scannerd.classify import Classifier\n"
        "Classifier.build([{'id': 'his.rx', 'channel': 'his', 'kind': 'other', 'regex': r'RX\\d{10}'}])\n"
        "print('scannerd.rules.overlap' in sys.modules)\n"
        "Classifier.build(search_overlaps=True)\n"
        "print('scannerd.rules.overlap' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.stdout.split() == ["False", "True"], done.stderr
