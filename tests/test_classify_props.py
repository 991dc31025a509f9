"""Hypothesis properties of the classifier: total, consistent with its rules, overridable."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scannerd.classify import (
    CANDIDATE_RULE_ID,
    UNKNOWN_RULE_ID,
    Classifier,
    _id_number_ok,
)
from scannerd.model import TWO_D_SYMBOLOGIES, Channel, Classification, Kind

CLF = Classifier.build(search_overlaps=True)
ALL_RULES = (*CLF.rules, *CLF.disabled)
SYMBOLOGIES = st.sampled_from([None, "code128", "ean13", "code39", *sorted(TWO_D_SYMBOLOGIES)])

# Text that looks like what scanners send, plus anything at all.
digit_text = st.text(alphabet="0123456789", min_size=0, max_size=40)
prefixed = st.builds(
    lambda p, rest: p + rest,
    st.sampled_from(["10", "13", "15", "18", "25", "30", "51", "62", "01", "01,", "hQVDUFYwM", "wxp://", "HTTPS://QR.ALIPAY.COM/", "11", "44"]),
    st.text(alphabet="0123456789ABCDEFabcdef:/,.+=X", max_size=70),
)
any_text = st.one_of(st.text(max_size=200), digit_text, prefixed)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(text=any_text, symbology=SYMBOLOGIES)
def test_any_string_has_exactly_one_outcome_and_never_raises(text: str, symbology: str | None) -> None:
    c = CLF.classify(text, symbology)
    assert isinstance(c, Classification)
    assert c.channel in {ch.value for ch in Channel}
    assert c.kind in {k.value for k in Kind}
    matching = [r for r in CLF.rules if r.matches(text)]
    if matching:
        # The winner is the first matching rule in priority order, and only one rule at that priority matches.
        assert c.rule == matching[0].id
        top = [r for r in matching if r.priority == matching[0].priority]
        assert len(top) == 1, [r.id for r in top]
    else:
        assert c.rule in (UNKNOWN_RULE_ID, CANDIDATE_RULE_ID)
        if c.rule == CANDIDATE_RULE_ID:
            assert text.isprintable() and (symbology in TWO_D_SYMBOLOGIES or symbology is None)
    assert CLF.classify(text, symbology) == c  # pure
    assert CLF.explain(text, symbology)[0].startswith("→")


@pytest.mark.parametrize("rule", ALL_RULES, ids=[r.id for r in ALL_RULES])
def test_every_default_rule_example_round_trips(rule: Any) -> None:
    clf = CLF if rule.enabled else Classifier.build([{"id": rule.id, "enabled": True}])
    assert rule.examples
    for ex in rule.examples:
        for sym in (None, "qr"):
            c = clf.classify(ex, sym)
            assert c.rule == rule.id, (ex, clf.explain(ex, sym))
            assert (c.channel, c.kind, c.reject_reason) == (rule.channel, rule.kind, rule.reject)


# Digit-only prefix+length rules: any string of their shape lands on them, unless it is a valid
# ID number (the one higher-priority rule allowed to take it).
SHAPE_RULES = [r for r in ALL_RULES if r.charset == "digits" and r.prefixes and r.lengths and not r.check]


@settings(max_examples=300)
@given(data=st.data())
def test_generated_codes_of_each_payment_shape_route_to_their_rule(data: st.DataObject) -> None:
    rule = data.draw(st.sampled_from(SHAPE_RULES))
    clf = CLF if rule.enabled else Classifier.build([{"id": rule.id, "enabled": True}])
    prefix = data.draw(st.sampled_from(rule.prefixes))
    length = data.draw(st.sampled_from(sorted(rule.lengths)))
    code = prefix + data.draw(st.text(alphabet="0123456789", min_size=length - len(prefix), max_size=length - len(prefix)))
    got = clf.classify(code, data.draw(SYMBOLOGIES)).rule
    if _id_number_ok(code) and prefix in next(r for r in clf.rules if r.id == "id_number.v1").prefixes:
        assert got == "id_number.v1"
    else:
        assert got == rule.id


@settings(max_examples=300)
@given(st.text(alphabet="0123456789", min_size=16, max_size=16), st.sampled_from(["10", "11", "12", "13", "14", "15"]))
def test_wechat_shaped_codes_failing_id_checks_go_to_wechat(rest: str, prefix: str) -> None:
    code = prefix + rest
    assume(not _id_number_ok(code))
    assert CLF.classify(code).channel == "wechat"


@settings(max_examples=150, deadline=None)
@given(
    prefix=st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ", min_size=2, max_size=4),
    length=st.integers(min_value=6, max_value=30),
    channel=st.sampled_from(["his", "alipay", "nhsa", "wechat"]),
    kind=st.sampled_from([k.value for k in Kind]),
    priority=st.integers(min_value=101, max_value=1000),
    data=st.data(),
)
def test_site_rules_take_effect(prefix: str, length: int, channel: str, kind: str, priority: int, data: st.DataObject) -> None:
    assume(length > len(prefix))
    rule = {"id": "site.x", "channel": channel, "kind": kind, "prefix": prefix, "length": length, "charset": "alnum_upper", "priority": priority}
    # Built the strict way (check-config's): the overlap search of the default rules' pairs is
    # cached per process, so each example pays only for the site rule's own pairs.
    clf = Classifier.build([rule], search_overlaps=True)
    body = data.draw(st.text(alphabet="0123456789ABCDEFGHJKLMNPQRSTUVWXYZ", min_size=length - len(prefix), max_size=length - len(prefix)))
    c = clf.classify(prefix + body, data.draw(SYMBOLOGIES))
    assert (c.rule, c.channel, c.kind, c.confidence) == ("site.x", channel, kind, "site")


def test_disabling_a_default_takes_effect() -> None:
    # Once, not per example above: it does not depend on the drawn rule.
    disabled = Classifier.build([{"id": "alipay.v1", "enabled": False}], search_overlaps=True)
    assert disabled.classify("28" + "1" * 16).rule == UNKNOWN_RULE_ID
    assert CLF.classify("28" + "1" * 16).rule == "alipay.v1"


@settings(max_examples=100, deadline=None)
@given(extra=st.sampled_from(["16", "17", "19"]), rest=st.text(alphabet="0123456789", min_size=16, max_size=16))
def test_site_can_widen_a_default_by_replacing_it(extra: str, rest: str) -> None:
    wider: dict[str, Any] = {
        "id": "wechat.v1", "channel": "wechat", "kind": "payment",
        "prefix": ["10", "11", "12", "13", "14", "15", extra], "length": 18, "charset": "digits",
    }
    clf = Classifier.build([wider], search_overlaps=True)
    assert CLF.classify(extra + rest).rule == UNKNOWN_RULE_ID
    assert clf.classify(extra + rest).rule == "wechat.v1"
