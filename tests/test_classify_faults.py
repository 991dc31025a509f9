"""A rule that raises while matching: the scan is still classified by the other rules, and the
fault is counted per rule and logged once per rule, masked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from scannerd import classify
from scannerd.classify import Check, Classifier
from scannerd.classify_faults import METRIC, ClassifyFaults
from scannerd.metrics import Metrics

WECHAT = "139709347111868295"  # synthetic: prefix 13, 18 digits, not a valid ID number


class Boom(Exception):
    pass


def _explode(text: str) -> bool:
    raise Boom(f"cannot check {text}")  # a bug that quotes the code: must not reach the log


@pytest.fixture
def broken() -> Iterator[Classifier]:
    classify.CHECKS["boom"] = Check("boom", _explode, lambda s: s, "always raises")
    try:
        yield Classifier.build([
            {"id": "site.boom", "channel": "his", "kind": "other", "prefix": "13", "length": 18, "check": "boom", "priority": 300},
            {"id": "site.rx", "channel": "his", "kind": "other", "prefix": "RX", "length": 12},
        ])
    finally:
        del classify.CHECKS["boom"]


def test_a_rule_that_raises_counts_as_not_matching_so_the_scan_keeps_its_channel(broken: Classifier) -> None:
    seen: list[tuple[str, str, str]] = []
    c = broken.classify(WECHAT, None, on_error=lambda rule, text, e: seen.append((rule, text, type(e).__name__)))
    assert c.rule == "wechat.v1"  # before: the whole scan became "unknown"
    assert seen == [("site.boom", WECHAT, "Boom")]
    assert broken.classify("RX0123456789", "code128", on_error=lambda *a: seen.append(a)).rule == "site.rx"
    assert len(seen) == 1  # a text the broken rule never looks at reports nothing


def test_without_a_hook_and_with_a_broken_hook_classify_still_never_raises(broken: Classifier) -> None:
    assert broken.classify(WECHAT).rule == "wechat.v1"

    def bad_hook(rule: str, text: str, e: Exception) -> None:
        raise RuntimeError("hook bug")

    assert broken.classify(WECHAT, on_error=bad_hook).rule == "wechat.v1"


def test_a_non_string_is_an_index_fault_not_a_crash() -> None:
    seen: list[str] = []
    c = Classifier.build().classify(None, on_error=lambda rule, text, e: seen.append(rule))  # type: ignore[arg-type]
    assert c.rule == "unknown" and seen == ["index"]


def test_faults_are_counted_every_time_and_logged_once_per_rule_masked(broken: Classifier) -> None:
    metrics = Metrics()
    faults = ClassifyFaults(lambda rule: metrics.inc(METRIC, {"rule": rule}))
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            assert broken.classify(WECHAT, on_error=faults).rule == "wechat.v1"
        faults("site.other", "RX0123456789", ValueError("x"))
    assert metrics.counters[METRIC] == {(("rule", "site.boom"),): 5, (("rule", "site.other"),): 1}
    assert [(e["event"], e["rule"]) for e in logs] == [("classify_rule_failed", "site.boom"), ("classify_rule_failed", "site.other")]
    assert logs[0]["masked"] == "1397**********8295" and logs[0]["error"] == "Boom"
    assert WECHAT not in repr(logs)
    text = metrics.render()
    assert 'scannerd_classify_errors_total{rule="site.boom"} 5' in text


def test_the_pipeline_counts_a_rule_fault_per_rule_and_still_delivers_the_scan(broken: Classifier) -> None:
    from scannerd.config import PolicyConfig
    from scannerd.model import DeviceInfo, Frame, ScanEvent
    from scannerd.pipeline import Pipeline

    metrics = Metrics()
    out: list[object] = []

    class Sink:
        name = "list"

        def deliver(self, event: object) -> None:
            out.append(event)

    pipeline = Pipeline(PolicyConfig(duplicate_window_ms=0), broken, [Sink()], metrics)
    device = DeviceInfo("window-1", "serial", "outpatient", "window")
    for _ in range(3):
        pipeline.submit(device, Frame("window-1", WECHAT, None, 1, 2, 3))
    assert metrics.value(METRIC, {"rule": "site.boom"}) == 3
    assert [e.classification.rule for e in out if isinstance(e, ScanEvent)] == ["wechat.v1"] * 3
