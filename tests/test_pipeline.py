"""Pipeline policy with the real classifier: dedupe, TTL stamps, arming, rejects, census."""

from __future__ import annotations

from typing import Any

from scannerd.census import Census
from scannerd.classify import Classifier
from scannerd.config import PolicyConfig
from scannerd.metrics import Metrics
from scannerd.model import DeviceInfo, Event, Frame, Rejected, RejectEvent, ScanEvent
from scannerd.pipeline import Pipeline, new_event_id

from helpers import alipay_code, wechat_code

MS = 1_000_000
WINDOW = DeviceInfo("window-1", "serial", "outpatient", "window")
KIOSK = DeviceInfo("kiosk-1", "evdev", "outpatient", "kiosk")


class ListSink:
    name = "list"

    def __init__(self) -> None:
        self.events: list[Event] = []

    def deliver(self, event: Event) -> None:
        self.events.append(event)


class BrokenSink:
    name = "broken"

    def deliver(self, event: Event) -> None:
        raise RuntimeError("boom")


class Clock:
    def __init__(self) -> None:
        self.now = 10**12

    def __call__(self) -> int:
        return self.now


def make(policy: PolicyConfig | None = None) -> tuple[Pipeline, ListSink, Clock]:
    sink, clock = ListSink(), Clock()
    p = Pipeline(policy or PolicyConfig(), Classifier.build(), [BrokenSink(), sink], Metrics(), Census(), clock)
    for d in (WINDOW, KIOSK):
        p.register_device(d)
    return p, sink, clock


def frame(text: str, t: int, device: str = "window-1", symbology: str | None = None, **kw: Any) -> Frame:
    return Frame(device, text, symbology, t - 20 * MS, t, t, **kw)


def test_scan_event_stamped_with_ttl_and_latency() -> None:
    p, sink, clock = make()
    code = wechat_code()
    event = p.submit(WINDOW, frame(code, clock.now))
    assert isinstance(event, ScanEvent) and sink.events == [event]
    assert event.classification.channel == "wechat" and event.classification.kind == "payment"
    assert event.expires_ns == clock.now + 60 * 10**9
    assert abs(event.scan_ms - 20.0) < 1e-9
    assert p.metrics.value("scannerd_scans_total", {"device": "window-1", "channel": "wechat", "kind": "payment"}) == 1


def test_non_payment_uses_other_ttl() -> None:
    p, sink, clock = make(PolicyConfig(other_ttl_s=5))
    event = p.submit(WINDOW, frame("6901234567892", clock.now, symbology="ean13"))
    assert isinstance(event, ScanEvent) and event.classification.kind != "payment"
    assert event.expires_ns == clock.now + 5 * 10**9


def test_double_read_within_window_is_one_scan() -> None:
    p, sink, clock = make(PolicyConfig(duplicate_window_ms=1500))
    code = alipay_code()
    assert p.submit(WINDOW, frame(code, clock.now)) is not None
    assert p.submit(WINDOW, frame(code, clock.now + 200 * MS)) is None
    # Another device reading the same code is not a double read of this one.
    p.arm("kiosk-1", None)
    assert p.submit(KIOSK, frame(code, clock.now + 300 * MS, device="kiosk-1")) is not None
    # After the window (measured from the last read) it is a new scan.
    assert p.submit(WINDOW, frame(code, clock.now + 2000 * MS)) is not None
    assert len([e for e in sink.events if isinstance(e, ScanEvent)]) == 3
    assert p.metrics.value("scannerd_duplicates_total", {"device": "window-1"}) == 1


def test_injected_scans_are_never_deduplicated() -> None:
    p, sink, clock = make()
    code = wechat_code()
    assert p.submit(WINDOW, frame(code, clock.now, injected=True)) is not None
    assert p.submit(WINDOW, frame(code, clock.now, injected=True)) is not None


def test_kiosk_scans_only_while_armed() -> None:
    p, sink, clock = make()
    event = p.submit(KIOSK, frame(wechat_code(), clock.now, device="kiosk-1"))
    assert isinstance(event, RejectEvent) and event.reason == "not_armed"
    p.arm("kiosk-1", ttl_s=30)
    assert isinstance(p.submit(KIOSK, frame(wechat_code(), clock.now, device="kiosk-1")), ScanEvent)
    clock.now += 31 * 10**9
    assert isinstance(p.submit(KIOSK, frame(wechat_code(), clock.now, device="kiosk-1")), RejectEvent)
    assert p.arming_state() == {"kiosk-1": {"armed": False}}
    p.arm("kiosk-1", None)
    p.disarm("kiosk-1")
    assert isinstance(p.submit(KIOSK, frame(wechat_code(), clock.now, device="kiosk-1")), RejectEvent)


def test_a_read_refused_before_arming_does_not_swallow_the_scan_after_arming() -> None:
    p, sink, clock = make()
    code = wechat_code()
    assert isinstance(p.submit(KIOSK, frame(code, clock.now, device="kiosk-1")), RejectEvent)
    # A presentation scanner re-reading the phone: no flood of rejects.
    assert p.submit(KIOSK, frame(code, clock.now + 100 * MS, device="kiosk-1")) is None
    p.arm("kiosk-1", ttl_s=60)
    event = p.submit(KIOSK, frame(code, clock.now + 800 * MS, device="kiosk-1"))
    assert isinstance(event, ScanEvent) and event.code == code


def test_medical_insurance_codes_get_the_payment_ttl() -> None:
    p, sink, clock = make(PolicyConfig(payment_ttl_s=60, other_ttl_s=3600))
    event = p.submit(WINDOW, frame("QWERTYUIOPASDFGHJKLZXCVBNM1234567890ABCD", clock.now, symbology="qr"))
    assert isinstance(event, ScanEvent) and event.classification.kind == "medical_insurance"
    assert event.expires_ns == clock.now + 60 * 10**9


def test_source_rejects_pass_through_masked() -> None:
    p, sink, clock = make()
    code = wechat_code()
    event = p.submit(WINDOW, Rejected("window-1", "device_removed", code[:10], clock.now))
    assert isinstance(event, RejectEvent) and event.reason == "device_removed"
    assert code[:10] not in event.masked and event.masked.startswith(code[:2])
    assert p.metrics.value("scannerd_rejects_total", {"device": "window-1", "reason": "device_removed"}) == 1


def test_merchant_receive_code_is_a_reject() -> None:
    p, sink, clock = make()
    event = p.submit(WINDOW, frame("wxp://f2f0abcdefghijklmnopqrstuvwxyz", clock.now, symbology="qr"))
    assert isinstance(event, RejectEvent) and event.reason


def test_unknown_codes_feed_the_census_by_shape_only() -> None:
    p, sink, clock = make()
    p.submit(WINDOW, frame("ZZ-unknown-thing", clock.now, symbology="code128"))
    assert p.census is not None
    shapes = p.census.snapshot()  # type: ignore[attr-defined]
    assert shapes and shapes[0]["count"] == 1
    assert "ZZ-unknown-thing" not in repr(shapes)


def test_event_ids_are_unique_and_time_ordered() -> None:
    ids = [new_event_id(1_700_000_000_000 + i) for i in range(50)]
    assert len(set(ids)) == 50 and ids == sorted(ids)
    assert all(len(i) == 26 for i in ids)


# The ULID layout against the spec, and the random pool behind it: tests/test_hot_path.py.
