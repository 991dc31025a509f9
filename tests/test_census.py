"""The code-shape census counts shapes of unknown/candidate codes and never keeps a code."""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from scannerd.census import Census, shape_classes
from scannerd.classify import Classifier

CLF = Classifier.build()
_rng = random.Random(77)


def alnum(n: int) -> str:
    return "".join(_rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(n))


def observe(census: Census, text: str, symbology: str | None = None) -> None:
    census.observe(text, symbology, CLF.classify(text, symbology))


def test_shape_classes() -> None:
    assert shape_classes("123") == "digit"
    assert shape_classes("AB12") == "digit+upper"
    assert shape_classes("ab:/1") == "digit+lower+punct"
    assert shape_classes("医保A") == "upper+cjk"
    assert shape_classes("a b\x1d") == "lower+space+control"
    assert shape_classes("") == ""


def test_counts_unknown_and_candidate_shapes_only() -> None:
    c = Census()
    observe(c, "NH" + alnum(26), "qr")  # candidate
    observe(c, "NH" + alnum(26), "qr")
    observe(c, "1234567", "code128")  # unknown
    observe(c, "13" + "9709347111868295")  # wechat: not counted
    observe(c, "wxp://f2f0abc", "qr")  # reject rule: not counted
    snap = c.snapshot()
    assert snap[0] == {
        "length": 28, "classes": "digit+upper", "symbology": "qr", "head": "NH", "count": 2,
        "channel": "nhsa", "kind": "medical_insurance", "rule": "nhsa.candidate",
    }
    assert snap[1] == {
        "length": 7, "classes": "digit", "symbology": "code128", "head": None, "count": 1,
        "channel": "unknown", "kind": "other", "rule": "unknown",
    }
    assert len(snap) == 2


def test_head_only_for_codes_that_are_not_all_digits() -> None:
    c = Census()
    observe(c, "9" * 30, "qr")
    observe(c, "X9" + "9" * 28, "qr")
    heads = {s["head"] for s in c.snapshot()}
    assert heads == {None, "X9"}


def test_sorted_by_count_desc() -> None:
    c = Census()
    for n, times in ((30, 1), (31, 5), (32, 3)):
        for _ in range(times):
            observe(c, alnum(n), "qr")
    counts = [s["count"] for s in c.snapshot()]
    assert counts == sorted(counts, reverse=True)


def test_bounded_memory_counts_overflow() -> None:
    c = Census(max_shapes=3)
    for n in range(30, 40):
        observe(c, "Q" * n, "qr")
    assert len(c) == 3 and c.overflow == 7
    observe(c, "Q" * 30, "qr")  # a known shape still counts
    assert c.snapshot()[0]["count"] == 2
    c.clear()
    assert c.snapshot() == [] and c.overflow == 0


def test_from_options() -> None:
    assert Census.from_options({"census_max_shapes": 5}).max_shapes == 5
    assert Census.from_options(None).max_shapes == 1000


@settings(max_examples=300)
@given(codes=st.lists(st.tuples(st.text(min_size=5, max_size=60), st.sampled_from([None, "qr", "code128"])), max_size=20))
def test_never_stores_a_code(codes: list[tuple[str, str | None]]) -> None:
    c = Census()
    for text, sym in codes:
        observe(c, text, sym)
    # Structure, not substring search: the only text-derived strings are the class vocabulary
    # and a head of at most two characters.
    vocabulary = {"digit", "upper", "lower", "punct", "space", "cjk", "other", "control"}
    for s in c.snapshot():
        assert s["head"] is None or len(s["head"]) <= 2
        assert set(s["classes"].split("+")) <= vocabulary | {""}
        assert s["symbology"] in (None, "qr", "code128")
    for key in vars(c)["_counts"]:
        assert [type(x) for x in key[:2]] == [int, str] and (key[3] is None or len(key[3]) <= 2)
    assert json.dumps(c.snapshot())  # serialisable for the socket reply
    assert sum(s["count"] for s in c.snapshot()) + c.overflow == sum(
        1 for text, sym in codes if CLF.classify(text, sym).rule in ("unknown", "nhsa.candidate", "nhsa.ec28.v1")
    )
    assert all(set(s) == {"length", "classes", "symbology", "head", "count", "channel", "kind", "rule"} for s in c.snapshot())
    assert {s["rule"] for s in c.snapshot()} <= {"unknown", "nhsa.candidate", "nhsa.ec28.v1"}


def test_the_generation_rule_and_the_fallback_are_counted_apart() -> None:
    c = Census()
    for province in ("33", "37", "11"):
        observe(c, "424" + "".join(_rng.choice("0123456789") for _ in range(19)) + province + "0000", "qr")
    observe(c, "424" + "7" * 19 + "990000", "qr")  # province 99: not the rule, the fallback
    observe(c, "NH" + alnum(26), "qr")
    by_rule = {(s["rule"], s["length"], s["head"]): s["count"] for s in c.snapshot()}
    assert by_rule == {("nhsa.ec28.v1", 28, None): 3, ("nhsa.candidate", 28, None): 1, ("nhsa.candidate", 28, "NH"): 1}
