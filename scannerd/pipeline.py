"""The daemon's core policy: classify, suppress double reads, stamp TTL, arm kiosks, fan out.

Frames come in from sources; events go out to sinks. Everything here runs on the one event
loop and never blocks: a sink that cannot keep up queues or drops by its own rules.
"""

from __future__ import annotations

import collections
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from .classify_faults import METRIC as CLASSIFY_ERRORS
from .classify_faults import ClassifyFaults
from .config import PolicyConfig
from .metrics import Metrics
from .model import (
    Classification,
    DeviceInfo,
    DeviceStateEvent,
    Event,
    Frame,
    Rejected,
    RejectEvent,
    ScanEvent,
    mask,
)
from .protocol import wall_clock_iso

log = structlog.get_logger("scannerd.pipeline")


class ClassifierLike(Protocol):
    def classify(self, text: str, symbology: str | None = None,
                 on_error: Callable[[str, str, Exception], None] | None = None) -> Classification: ...


class CensusLike(Protocol):
    def observe(self, text: str, symbology: str | None, c: Classification) -> None: ...


class EventSink(Protocol):
    name: str

    def deliver(self, event: Event) -> None: ...


_CROCKFORD = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two base32 digits for every 10-bit value: the time part is five lookups.
_DIGIT_PAIRS = [chr(_CROCKFORD[v >> 5]) + chr(_CROCKFORD[v & 31]) for v in range(1024)]
# A random byte → one base32 digit of its low 5 bits (256 = 8 × 32: each digit equally likely).
_RANDOM_DIGIT = bytes(_CROCKFORD[b & 31] for b in range(256))
RANDOM_DIGITS = 16  # 80 random bits


class RandomPool:
    """os.urandom in 4 KiB chunks handed out a few bytes at a time: one getrandom(2) per 256
    event ids instead of one per scan. Emptied in a forked child, which must not repeat its
    parent's bytes."""

    def __init__(self, chunk: int = 4096, source: Callable[[int], bytes] = os.urandom) -> None:
        self.chunk = chunk
        self.source = source
        self._buf = b""
        self._at = 0
        self._lock = threading.Lock()  # ids are made on the loop; a second thread must not share bytes

    def take(self, n: int) -> bytes:
        with self._lock:
            at = self._at
            if at + n > len(self._buf):
                self._buf, at = self.source(max(self.chunk, n)), 0
            self._at = at + n
            return self._buf[at:at + n]

    def reset(self) -> None:
        self._buf, self._at = b"", 0


_random = RandomPool()
os.register_at_fork(after_in_child=_random.reset)
_last_ms_prefix: tuple[int, str] = (-1, "")


def ulid(ms: int, random_bytes: bytes) -> str:
    """The ULID of 48-bit millisecond time `ms` whose 16 random digits are the low 5 bits of
    each of `random_bytes` (16 bytes): 26 Crockford base32 digits, sorting by time."""
    global _last_ms_prefix
    last_ms, prefix = _last_ms_prefix
    if ms != last_ms:
        p = _DIGIT_PAIRS
        prefix = p[(ms >> 40) & 1023] + p[(ms >> 30) & 1023] + p[(ms >> 20) & 1023] + p[(ms >> 10) & 1023] + p[ms & 1023]
        _last_ms_prefix = (ms, prefix)
    return prefix + random_bytes.translate(_RANDOM_DIGIT).decode("ascii")


def new_event_id(now_ms: int | None = None) -> str:
    """A ULID: 48-bit millisecond time + 80 random bits, Crockford base32, sorts by time."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return ulid(ms, _random.take(RANDOM_DIGITS))


@dataclass
class _Arming:
    armed_until_ns: int | None  # None: armed with no deadline


class Pipeline:
    """source → (frame) → classify → dedupe → arming → TTL → sinks."""

    def __init__(
        self,
        policy: PolicyConfig,
        classifier: ClassifierLike,
        sinks: Iterable[EventSink],
        metrics: Metrics,
        census: CensusLike | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.policy = policy
        self.classifier = classifier
        self.sinks: list[EventSink] = list(sinks)
        self.metrics = metrics
        self.census = census
        self.clock = clock
        # A rule that raises counts as not matching; the fault is counted and logged once per rule.
        self.classify_faults = ClassifyFaults(lambda rule: metrics.inc(CLASSIFY_ERRORS, {"rule": rule}))
        # device → {code digest: last seen ns}; digests, so no bearer token lingers in memory
        # longer than the framer's own buffer.
        # Oldest first (each sighting moves its digest to the end), so forgetting what left the
        # window pops from the front: O(1) a scan, however many codes the window holds.
        self._recent: dict[str, collections.OrderedDict[bytes, int]] = {}
        self._arming: dict[str, _Arming] = {}
        self.devices: dict[str, DeviceInfo] = {}
        self.last_scan_ns: dict[str, int] = {}
        self.scans_today = 0
        self._today = time.localtime().tm_yday

    # --- configuration --------------------------------------------------------------------

    def reconfigure(self, policy: PolicyConfig, classifier: ClassifierLike) -> None:
        self.policy = policy
        self.classifier = classifier

    def set_sinks(self, sinks: Iterable[EventSink]) -> None:
        self.sinks = list(sinks)

    def register_device(self, device: DeviceInfo) -> None:
        self.devices[device.name] = device

    # --- arming (kiosks scan only while the payment page is shown) -------------------------

    def arm(self, device: str, ttl_s: float | None) -> None:
        deadline = None if ttl_s is None else self.clock() + int(ttl_s * 1e9)
        self._arming[device] = _Arming(deadline)
        # A read refused while disarmed must not count as "seen": the patient's phone is often
        # still in front of the scan window when the payment page appears.
        self._recent.pop(device, None)

    def disarm(self, device: str) -> None:
        self._arming.pop(device, None)

    def is_armed(self, device: DeviceInfo) -> bool:
        if device.role != "kiosk" or device.transport == "inject":
            return True
        arming = self._arming.get(device.name)
        if arming is None:
            return False
        if arming.armed_until_ns is not None and self.clock() > arming.armed_until_ns:
            del self._arming[device.name]
            return False
        return True

    def arming_state(self) -> dict[str, Any]:
        now = self.clock()
        out: dict[str, Any] = {}
        for name, device in self.devices.items():
            if device.role != "kiosk":
                continue
            a = self._arming.get(name)
            if a is None or (a.armed_until_ns is not None and now > a.armed_until_ns):
                out[name] = {"armed": False}
            else:
                left = None if a.armed_until_ns is None else round((a.armed_until_ns - now) / 1e9, 1)
                out[name] = {"armed": True, "remaining_s": left}
        return out

    # --- the flow -------------------------------------------------------------------------

    def submit(self, device: DeviceInfo, item: Frame | Rejected) -> ScanEvent | RejectEvent | None:
        """Take one framed read from a source; returns what was emitted (for tests and inject)."""
        if isinstance(item, Rejected):
            return self._reject(device.name, item.reason, item.text)
        frame = item
        c = self.classifier.classify(frame.text, frame.symbology, on_error=self.classify_faults)
        if self.census is not None:
            self.census.observe(frame.text, frame.symbology, c)  # it counts unknown/candidate shapes only
        if c.reject_reason:
            return self._reject(device.name, c.reject_reason, frame.text)
        if not frame.injected and self._is_duplicate(device.name, frame.text, frame.completed_ns):
            self.metrics.inc("scannerd_duplicates_total", {"device": device.name})
            log.info("duplicate_suppressed", device=device.name, masked=mask(frame.text))
            return None
        if not self.is_armed(device):
            return self._reject(device.name, "not_armed", frame.text)
        # 医保码 are short-lived bearer credentials too: they get the payment TTL.
        ttl_s = self.policy.payment_ttl_s if c.sensitive else self.policy.other_ttl_s
        event = ScanEvent(
            id=new_event_id(),
            ts=wall_clock_iso(),
            device=device,
            code=frame.text,
            symbology=frame.symbology,
            classification=c,
            scan_ms=frame.scan_ms,
            completed_ns=frame.completed_ns,
            expires_ns=frame.completed_ns + int(ttl_s * 1e9),
            injected=frame.injected,
        )
        self._count_scan(event)
        self._fan_out(event)
        # Logged after the hand-over: the log line's cost is not part of the scan's latency.
        fields = {"injected": True} if frame.injected else {}
        log.info(
            "scan",
            device=device.name,
            channel=c.channel,
            kind=c.kind,
            rule=c.rule,
            masked=mask(frame.text),
            scan_ms=round(frame.scan_ms, 1),
            **fields,
        )
        return event

    def device_state(self, event: DeviceStateEvent) -> None:
        log.info("device_state", device=event.device, state=event.state, reason=event.reason or None)
        self._fan_out(event)

    def _reject(self, device: str, reason: str, text: str) -> RejectEvent:
        event = RejectEvent(ts=wall_clock_iso(), device=device, reason=reason, masked=mask(text))
        self.metrics.inc("scannerd_rejects_total", {"device": device, "reason": reason})
        log.info("reject", device=device, reason=reason, masked=event.masked)
        self._fan_out(event)
        return event

    def _is_duplicate(self, device: str, text: str, now_ns: int) -> bool:
        window = self.policy.duplicate_window_ms * 1_000_000
        if window <= 0:
            return False
        recent = self._recent.setdefault(device, collections.OrderedDict())
        while recent:
            oldest, seen_ns = next(iter(recent.items()))
            if now_ns - seen_ns <= window:
                break
            del recent[oldest]
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        seen = digest in recent
        recent[digest] = now_ns
        recent.move_to_end(digest)
        return seen

    def _count_scan(self, event: ScanEvent) -> None:
        c = event.classification
        self.metrics.inc(
            "scannerd_scans_total", {"device": event.device.name, "channel": c.channel, "kind": c.kind}
        )
        self.metrics.observe("scannerd_scan_duration_seconds", event.scan_ms / 1000, {"device": event.device.name})
        day = time.localtime().tm_yday
        if day != self._today:
            self._today, self.scans_today = day, 0
        self.scans_today += 1
        self.last_scan_ns[event.device.name] = self.clock()

    def _fan_out(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink.deliver(event)
            except Exception:  # one broken sink must not starve the others
                log.exception("sink_deliver_failed", sink=sink.name)
