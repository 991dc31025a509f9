"""Table tests for the classifier: every default rule, every collision, every reject, candidates.

Codes are synthetic: random digits with the right prefix and length from a seeded generator
(check digits computed where a rule needs one). Never a real person's data.
"""

from __future__ import annotations

import random
from datetime import date

import pytest

from scannerd.classify import (
    CANDIDATE_RULE_ID,
    CHECKS,
    UNKNOWN_RULE_ID,
    Classifier,
    _gs1_digit,
    _id_check_char,
    _id_number_ok,
    _luhn_ok,
)
from scannerd.model import Channel, Classification, Kind

_rng = random.Random(31337)


def digits(n: int) -> str:
    return "".join(_rng.choice("0123456789") for _ in range(n))


def pay(prefix: str, length: int) -> str:
    """A payment-shaped code that is *not* a valid ID number (so it cannot collide)."""
    while True:
        s = prefix + digits(length - len(prefix))
        if not _id_number_ok(s):
            return s


def id_number(region: str, born: str, check_ok: bool = True, digit_check: bool = False) -> str:
    body = region + born + digits(3)
    good = _id_check_char(body)
    while digit_check and good == "X":  # all-digit, so only the date/region decides
        body = region + born + digits(3)
        good = _id_check_char(body)
    if check_ok:
        return body + good
    return body + next(c for c in "0123456789X" if c != good)


def ean13(prefix: str = "690") -> str:
    body = prefix + digits(12 - len(prefix))
    return body + _gs1_digit(body)


def bad_check_digit(code: str) -> str:
    return code[:-1] + str((int(code[-1]) + 1) % 10)


def hexup(n: int) -> str:
    return "".join(_rng.choice("0123456789ABCDEF") for _ in range(n))


def alnum(n: int, chars: str = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") -> str:
    return "".join(_rng.choice(chars) for _ in range(n))


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier.build()


W, A, U, E, B = "wechat.v1", "alipay.v1", "unionpay.v1", "ecny.v1", "bestpay.v1"
UNK, CAND, ID = UNKNOWN_RULE_ID, CANDIDATE_RULE_ID, "id_number.v1"
EC = "nhsa.ec28.v1"

# (label, text, symbology, expected rule id)
CASES: list[tuple[str, str, str | None, str]] = [
    # WeChat: 10–14 mainland, 15 Hong Kong, 18 digits.
    *[(f"wechat {p}", pay(p, 18), None, W) for p in ("10", "11", "12", "13", "14", "15")],
    ("wechat as QR (same digits as 1D)", pay("13", 18), "qr", W),
    ("wechat as code128", pay("13", 18), "code128", W),
    ("wechat prefix 16 is not wechat", pay("16", 18), None, UNK),
    ("wechat prefix 19 is not wechat", pay("19", 18), None, UNK),
    ("wechat 17 digits", pay("13", 17), None, UNK),
    ("wechat 19 digits", pay("13", 19), None, UNK),
    ("wechat with a letter", pay("13", 17) + "A", None, UNK),
    ("wechat with a space", pay("13", 9) + " " + digits(8), None, UNK),
    ("wechat full-width digits", "１３" + digits(16), None, UNK),
    # Alipay: 25–30, 16–24 digits.
    *[(f"alipay {p}/{n}", pay(p, n), None, A) for p, n in (("25", 16), ("26", 17), ("27", 18), ("28", 20), ("29", 22), ("30", 24), ("28", 19), ("25", 21), ("30", 23))],
    ("alipay 15 digits", pay("28", 15), None, UNK),
    ("alipay 25 digits no symbology", pay("28", 25), None, CAND),  # 2D-like length: candidate
    ("alipay 25 digits code128", pay("28", 25), "code128", UNK),
    ("alipay prefix 24", pay("24", 18), None, UNK),
    ("alipay prefix 31", pay("31", 18), None, UNK),
    # UnionPay 云闪付: 62, 19 digits.
    ("unionpay", pay("62", 19), None, U),
    ("unionpay qr", pay("62", 19), "qr", U),
    ("unionpay 18 digits", pay("62", 18), None, UNK),
    ("unionpay 20 digits", pay("62", 20), None, UNK),
    # e-CNY: 01, 19 digits.
    ("ecny", pay("01", 19), None, E),
    ("ecny qr", pay("01", 19), "qr", E),
    ("ecny 18 digits", pay("01", 18), None, UNK),
    # Bestpay: 51, 18 digits.
    ("bestpay", pay("51", 18), None, B),
    ("bestpay 19 digits", pay("51", 19), None, UNK),
    # JD Pay's own 18-prefix code ships disabled.
    ("jdpay disabled by default", pay("18", 18), None, UNK),
    # EMV consumer-presented QR.
    ("emv cpv01", "hQVDUFYwMWEoTwigAAADMwEBAaVNyhglMLsdbRMs3tYjey7ZHj9yH8sZcRdElNZJPA==", "qr", "emv.cpv01"),
    ("emv cpv01 other tag", "hQVDUFYwMQ" + alnum(40), None, "emv.cpv01"),
    ("emv prefix then junk", "hQVDUFYwM!" + alnum(40), "qr", CAND),
    ("emv lowercase prefix is not emv", "hqvdufywm" + alnum(40).lower(), None, CAND),
    # Collision: valid 身份证 numbers are not payments.
    ("id 11 (wechat-shaped)", id_number("110105", "19850312"), None, ID),
    ("id 13 (wechat-shaped)", id_number("130102", "19991231"), None, ID),
    ("id 15 (wechat HK-shaped)", id_number("150102", "19700101"), None, ID),
    ("id 51 (bestpay-shaped)", id_number("510104", "20000229"), None, ID),
    ("id 44 (no payment shape)", id_number("440305", "19600704"), None, ID),
    ("id 62 18 digits", id_number("620102", "19881111"), None, ID),
    ("id as qr", id_number("110105", "19850312"), "qr", ID),
    ("id with lowercase x check", "11010519491231002x", None, ID),  # synthetic: check char X
    ("id bad check → wechat", id_number("110105", "19850312", check_ok=False), None, W),
    ("id bad check 51 → bestpay", id_number("510104", "19850312", check_ok=False), None, B),
    ("id bad check 44 → unknown", id_number("440305", "19850312", check_ok=False), None, UNK),
    ("id month 13 → wechat", "13010219851312" + digits(4), None, W),
    ("id born 1899 → wechat", id_number("130102", "18991231", digit_check=True), None, W),
    ("id Feb 30 → wechat", id_number("130102", "19900230", digit_check=True), None, W),
    ("id born in the future → wechat", id_number("130102", f"{date.today().year + 1}0101", digit_check=True), None, W),
    ("id region 10 is wechat", id_number("100105", "19850312", digit_check=True), None, W),
    # Merchant receive codes: rejects, never payments.
    ("wechat receive", "wxp://f2f0" + alnum(30), "qr", "wechat.receive"),
    ("wechat receive upper", "WXP://F2F1" + alnum(20), "qr", "wechat.receive"),
    ("wechat native url", "weixin://wxpay/bizpayurl?pr=" + alnum(7), "qr", "wechat.native_url"),
    ("alipay receive", "https://qr.alipay.com/fkx" + alnum(15).lower(), "qr", "alipay.receive"),
    ("alipay receive upper", "HTTPS://QR.ALIPAY.COM/FKX" + alnum(15), "qr", "alipay.receive"),
    ("alipay receive http", "http://qr.alipay.com/" + alnum(18), None, "alipay.receive"),
    ("not alipay host", "https://qr.alipay.com.example/" + alnum(10), "qr", CAND),
    # Electronic health card.
    ("health card :1", hexup(64) + ":1", "qr", "health_card.v1"),
    ("health card with validity", hexup(64) + ":0:" + digits(10), "qr", "health_card.v1"),
    ("health card no symbology", hexup(64) + ":1", None, "health_card.v1"),
    ("health card lowercase hex → candidate", hexup(64).lower() + ":1", "qr", CAND),
    ("health card 63 hex → candidate", hexup(63) + ":1", "qr", CAND),
    # EAN-13 with its check digit.
    ("ean13 690", ean13("690"), "ean13", "ean13.v1"),
    ("ean13 693", ean13("693"), None, "ean13.v1"),
    ("ean13 foreign", ean13("400"), "ean13", "ean13.v1"),
    ("ean13 bad check", bad_check_digit(ean13("690")), "ean13", UNK),
    ("ean13 12 digits", digits(12), "ean", UNK),
    # VAT invoice QR.
    ("vat invoice 10", f"01,10,{digits(12)},{digits(8)},123.45,20260711,{digits(20)},{hexup(4)},", "qr", "vat_invoice.v1"),
    ("vat invoice 04", f"01,04,{digits(12)},{digits(8)},9.5,20250101,{digits(20)},", "qr", "vat_invoice.v1"),
    ("vat invoice digital", f"01,32,,{digits(20)},764.11,20260502,,", "qr", "vat_invoice.v1"),
    ("vat invoice broken → candidate", f"01,10,{digits(12)},abc,1,2,3", "qr", CAND),
    # The one public 医保码 generation rule: 424|opc + 19 digits + province + 0000, 28 in all.
    ("医保码 424, 浙江", "424" + digits(19) + "330000", "qr", EC),
    ("医保码 424, 北京, no symbology", "424" + digits(19) + "110000", None, EC),
    ("医保码 424, 香港", "424" + digits(19) + "810000", "qr", EC),
    ("医保码 opc variant", "opc" + digits(19) + "440000", "qr", EC),
    ("医保码 424 any symbology", "424" + digits(19) + "370000", "code128", EC),
    ("424 unknown province 99 → fallback", "424" + digits(19) + "990000", "qr", CAND),
    ("424 province 10 → fallback", "424" + digits(19) + "100000", "qr", CAND),
    ("424 not ending 0000 → fallback", "424" + digits(19) + "330001", "qr", CAND),
    ("424 27 digits → fallback", "424" + digits(18) + "330000", "qr", CAND),
    ("424 29 digits → fallback", "424" + digits(20) + "330000", "qr", CAND),
    ("OPC upper case → fallback", "OPC" + digits(19) + "330000", "qr", CAND),
    ("424 with a letter → fallback", "424" + digits(18) + "A330000", "qr", CAND),
    # Medical-insurance candidates: printable 2D codes no rule knows.
    ("candidate qr alnum", alnum(28), "qr", CAND),
    ("candidate datamatrix", alnum(40), "datamatrix", CAND),
    ("candidate gs1 qr", alnum(20), "gs1_qr", CAND),
    ("candidate qr digits", pay("99", 30), "qr", CAND),
    ("candidate no symbology long", alnum(32), None, CAND),
    ("no candidate: no symbology, 24", alnum(24), None, UNK),
    ("no candidate: 1D symbology", alnum(40), "code128", UNK),
    ("no candidate: qr too short", alnum(10), "qr", UNK),
    ("no candidate: qr with a tab", alnum(10) + "\t" + alnum(10), "qr", UNK),
    ("no candidate: GS separator", alnum(10) + "\x1d" + alnum(10), "qr", UNK),
    ("candidate with CJK", "医保" + alnum(20), "qr", CAND),
    # Garbage never raises.
    ("empty", "", None, UNK),
    ("one char", "1", None, UNK),
    ("lone surrogate", "\ud800" * 20, "qr", UNK),
    ("NUL", "\x00" * 18, None, UNK),
]


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 60
    rules_covered = {rule for _, _, _, rule in CASES}
    enabled = {r.id for r in Classifier.build().rules}
    assert enabled <= rules_covered, enabled - rules_covered


@pytest.mark.parametrize(("label", "text", "symbology", "rule"), CASES, ids=[c[0] for c in CASES])
def test_table(clf: Classifier, label: str, text: str, symbology: str | None, rule: str) -> None:
    c = clf.classify(text, symbology)
    assert c.rule == rule, "\n".join(clf.explain(text, symbology))
    assert isinstance(c, Classification)


def test_vocabulary_is_the_model_enums(clf: Classifier) -> None:
    channels = {ch.value for ch in Channel}
    kinds = {k.value for k in Kind}
    for r in (*clf.rules, *clf.disabled):
        assert r.channel in channels, r.id
        assert r.kind in kinds, r.id


def test_outcome_fields(clf: Classifier) -> None:
    c = clf.classify(pay("13", 18))
    assert (c.channel, c.kind, c.confidence, c.reject_reason) == ("wechat", "payment", "high", None)
    assert "WeChat Pay" in c.source
    u = clf.classify("hello")
    assert (u.channel, u.kind, u.rule, u.confidence) == ("unknown", "other", "unknown", "none")
    m = clf.classify(alnum(30), "qr")
    assert (m.channel, m.kind, m.confidence) == ("nhsa", "medical_insurance", "candidate")
    i = clf.classify(id_number("110105", "19850312"))
    assert (i.channel, i.kind) == ("id_number", "other")
    assert i.sensitive  # masked like a payment code
    r = clf.classify("wxp://f2f0abc")
    assert r.reject_reason == "merchant_receive_code" and r.kind == "other"


def test_real_shaped_wechat_codes_failing_id_checks_stay_wechat(clf: Classifier) -> None:
    """10 000 random WeChat-shaped codes: those failing the ID checks all route to WeChat,
    and the ones that pass them are rare (check + a valid past birth date)."""
    rng = random.Random(5)
    id_like = 0
    for _ in range(10_000):
        s = rng.choice(["10", "11", "12", "13", "14", "15"]) + "".join(rng.choice("0123456789") for _ in range(16))
        c = clf.classify(s)
        if _id_number_ok(s) and s[:2] != "10":
            id_like += 1
            assert c.rule == ID
        else:
            assert c.rule == W
    assert id_like < 10  # ≈ 1/11 check × ~0.05 % valid dates


def test_checks() -> None:
    assert CHECKS["ean13"].ok("6901234567892")
    assert not CHECKS["ean13"].ok("6901234567893")
    assert CHECKS["ean8"].ok("96385074")
    assert _luhn_ok("79927398713") and not _luhn_ok("79927398710")
    assert _id_number_ok("11010519491231002X")  # the GB 11643 textbook example
    assert not _id_number_ok("11010519491231002Y")
    assert not _id_number_ok("１１010519491231002X")
    for name, check in CHECKS.items():
        assert not check.ok(""), name
        assert not check.ok("abc"), name


def test_fixers_make_checks_pass() -> None:
    assert CHECKS["ean13"].ok(CHECKS["ean13"].fix("6901234567890"))
    assert CHECKS["luhn"].ok(CHECKS["luhn"].fix("79927398710"))
    assert CHECKS["id_number"].ok(CHECKS["id_number"].fix("130102" + "0" * 12))


def test_explain_names_winner_source_and_near_misses(clf: Classifier) -> None:
    lines = clf.explain(pay("25", 25))
    text = "\n".join(lines)
    assert "alipay.v1: prefix ok, length 25 not in 16–24" in text
    lines = clf.explain(id_number("130102", "19850312", digit_check=True))
    text = "\n".join(lines)
    assert "winner id_number.v1" in text and "GB 11643" in text
    assert "also matches wechat.v1" in text
    text = "\n".join(clf.explain(pay("13", 18)))
    assert "winner wechat.v1" in text and "source: WeChat Pay" in text
    assert "near miss id_number.v1" in text and "check id_number fails" in text
    text = "\n".join(clf.explain(pay("18", 18)))
    assert "disabled rule jdpay.v1 would match" in text
    text = "\n".join(clf.explain("wxp://x"))
    assert "REJECTED: merchant_receive_code" in text and "付款码" in text


def test_explain_never_shows_the_code(clf: Classifier) -> None:
    for code in (pay("13", 18), pay("28", 20), id_number("110105", "19850312"), alnum(30)):
        for sym in (None, "qr", "code128"):
            assert all(code not in line for line in clf.explain(code, sym))
            assert all(code[4:-4] not in line for line in clf.explain(code, sym))


def test_index_buckets_keep_priority_order(clf: Classifier) -> None:
    """The prefix index must not change outcomes: same answer as a plain scan of all rules."""
    rng = random.Random(9)
    for _ in range(3000):
        n = rng.choice([13, 16, 18, 19, 20, 24, 66])
        s = rng.choice(["1", "2", "3", "5", "6", "0", "h", "w"]) + "".join(rng.choice("0123456789") for _ in range(n - 1))
        expected = next((r.id for r in clf.rules if r.matches(s)), None)
        got = clf.classify(s).rule
        if expected is not None:
            assert got == expected, s
        else:
            assert got in (UNK, CAND)


def test_default_rules_each_name_a_source(clf: Classifier) -> None:
    for r in (*clf.rules, *clf.disabled):
        assert r.source and r.examples, r.id
        # "candidate" only for the 医保码 generation rule: thin evidence, said so in every event.
        assert r.confidence in {"high", "medium", "low"} or (r.id, r.confidence) == (EC, "candidate"), r.id
        assert r.origin == "default"
