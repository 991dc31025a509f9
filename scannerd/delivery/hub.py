"""The subscriber hub: who receives which event, in which order, and when a scan counts as delivered.

The delivery contract (README, "Protocol") lives here and nowhere else, for every transport:

- No scan without a subscription: a connection receives events only after `subscribe`.
- Role `his`: full codes. Each scan goes to exactly one HIS subscriber (the most specific
  device filter wins, then the earliest subscription). Scans that waited while no HIS wanted
  them are written first, oldest first, marked `queued` with `age_ms`; live scans follow.
- Role `monitor`: live events with codes masked (full codes only with show_codes, granted by
  the command layer); never takes a waiting scan; never counts as a delivery.
- Acks (opt-in): a scan written to an acking HIS stays pending until `ack`; if the connection
  closes first the scan goes to the next HIS, same id, marked `redelivered`.
- No scan is written after its TTL, to anyone.

Every subscriber has an outbox written only while its transport buffer has room, so a hand-over
of thousands of waiting scans to a client with a small buffer is paced by the client, loses
nothing and sends nothing twice. Re-queueing is decided in one place (`_requeue`).

The hub knows nothing of sockets: a transport gives it a Peer (write, buffered, on_writable,
close) per connection.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import functools
import heapq
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from ..model import Event, ScanEvent, mask
from ..protocol import Refused, dumps, encode_event
from ..sinks.base import Sink
from .outcomes import DeliveryOutcome, Outcome, Outcomes

log = structlog.get_logger("scannerd.hub")

# How many settled scan ids (acked, expired) are remembered to answer a late `ack` with the
# right reason instead of "unknown".
SETTLED_MEMORY = 4096


class Peer(Protocol):
    """One connection of some transport, as the hub needs it."""

    description: str

    def write(self, data: bytes) -> None: ...

    def buffered(self) -> int:
        """Bytes written but not yet taken by the peer."""
        ...

    def on_writable(self, callback: Callable[[], None]) -> None:
        """Call `callback` once, soon after the buffer has drained below its low mark."""
        ...

    def close(self, why: str | None) -> None:
        """Close now; `why` set means abort (its backlog is not worth waiting for)."""
        ...


class Role(str, enum.Enum):
    HIS = "his"
    MONITOR = "monitor"


class HubError(Refused):
    """A subscribe or ack that cannot be honoured; the message is the reply's error."""


@dataclass(eq=False)
class _Queued:
    event: ScanEvent
    queued: bool = False  # waited for an HIS before this one subscribed
    redelivered: bool = False


@dataclass(eq=False)
class Subscriber:
    peer: Peer
    seq: int
    role: Role | None = None  # None: connected, not subscribed (replies only)
    devices: frozenset[str] | None = None  # None: every device
    ack: bool = False
    show_codes: bool = False
    subscribed_seq: int = 0
    # Scans for this HIS not yet written (its buffer was full), in order.
    outbox: collections.deque[_Queued] = field(default_factory=collections.deque)
    # Written to an acking HIS, waiting for its ack: id → entry, in write order.
    unacked: dict[str, _Queued] = field(default_factory=dict)
    waiting_writable: bool = False
    # Just subscribed: nothing is written until the scans that waited are in front (the reply to
    # `subscribe` goes out first, then the waiting scans, then live ones).
    holding: bool = False
    closed: bool = False

    def wants(self, device: str) -> bool:
        return self.devices is None or device in self.devices

    @property
    def is_his(self) -> bool:
        return self.role is Role.HIS and not self.closed


def _device_of(event: Event) -> str:
    return event.device.name if isinstance(event, ScanEvent) else event.device


def _masked_wire(event: ScanEvent, wire: dict[str, Any]) -> dict[str, Any]:
    out = dict(wire)
    out.pop("code", None)
    out["masked"] = mask(event.code)
    return out


class Hub(Sink):
    name = "socket"  # the sink name its outcomes carry (every local transport shares the hub)

    def __init__(
        self,
        outcomes: Outcomes,
        *,
        client_buffer_bytes: int = 1 << 20,
        queue_limit: int = 256,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.outcomes = outcomes
        self.client_buffer_bytes = client_buffer_bytes
        self.queue_limit = queue_limit
        self.clock = clock
        self.subscribers: list[Subscriber] = []
        self._seq = itertools.count(1)
        # Scans no HIS wanted yet, oldest first.
        self._pending: collections.deque[_Queued] = collections.deque()
        self._settled: collections.OrderedDict[str, str] = collections.OrderedDict()  # id → "acked" | "expired"
        self._deadlines: list[int] = []  # heap of expiry times of everything held
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0
        self._owner: dict[str, Subscriber] = {}  # device → the HIS that took its last scan

    # --- connections --------------------------------------------------------------------------

    def attach(self, peer: Peer) -> Subscriber:
        sub = Subscriber(peer=peer, seq=next(self._seq))
        self.subscribers.append(sub)
        return sub

    def detach(self, sub: Subscriber) -> None:
        """The connection is gone: what it held goes on to the next HIS, or back to waiting."""
        if sub.closed:
            return
        sub.closed = True
        if sub in self.subscribers:
            self.subscribers.remove(sub)
        # Written but unacked: redelivered. Not yet written: simply moves on.
        held = [(q, True) for q in sub.unacked.values()] + [(q, False) for q in sub.outbox]
        sub.unacked.clear()
        sub.outbox.clear()
        if held:
            held.sort(key=lambda pair: pair[0].event.completed_ns)
            for q, written in held:
                self._requeue(q, written_unacked=written)
            self._pump_all()

    def counts(self) -> dict[str, int]:
        his = sum(1 for s in self.subscribers if s.role is Role.HIS)
        monitors = sum(1 for s in self.subscribers if s.role is Role.MONITOR)
        return {
            "his": his,
            "monitors": monitors,
            "unsubscribed": len(self.subscribers) - his - monitors,
            "queued": len(self._pending),
            "unacked": sum(len(s.unacked) for s in self.subscribers),
        }

    # --- subscribe / ack ------------------------------------------------------------------------

    def subscribe(self, sub: Subscriber, role: str, devices: Iterable[str] | None, ack: bool, show_codes: bool) -> dict[str, Any]:
        """Make `sub` a subscriber; returns the reply fields. The caller checked show_codes rights."""
        try:
            r = Role(role)
        except ValueError:
            raise HubError(f'"role" must be "his" or "monitor", got {role!r}') from None
        if r is Role.HIS and show_codes:
            raise HubError('"show_codes" is for monitors; an HIS always receives full codes')
        if r is Role.MONITOR and ack:
            raise HubError('"ack" is for role "his"; a monitor never takes a scan')
        if sub.role is not None and sub.role is not r:
            raise HubError(f"already subscribed as {sub.role.value}; open another connection for another role")
        if sub.role is Role.HIS and sub.ack and not ack and sub.unacked:
            raise HubError("scans are still waiting for your ack; ack them before turning acks off")
        sub.role = r
        sub.devices = None if devices is None else frozenset(devices)
        sub.ack = ack
        sub.show_codes = show_codes
        sub.subscribed_seq = next(self._seq)
        waiting = 0
        if r is Role.HIS:
            waiting = sum(1 for q in self._pending if sub.wants(q.event.device.name))
            sub.holding = True
            asyncio.get_running_loop().call_soon(self._release, sub)
        return {"role": r.value, "devices": None if sub.devices is None else sorted(sub.devices), "ack": ack,
                "show_codes": show_codes, "queued": waiting}

    def ack(self, sub: Subscriber, event_id: str) -> dict[str, Any]:
        q = sub.unacked.pop(event_id, None)
        if q is None:
            if any(event_id in s.unacked for s in self.subscribers):
                raise HubError(f"scan {event_id} was written to another connection")
            settled = self._settled.get(event_id)
            if settled == "acked":
                raise HubError(f"scan {event_id} was already acknowledged")
            if settled == "expired":
                raise HubError(f"scan {event_id} expired (its TTL passed) before this ack")
            if not sub.ack:
                raise HubError("this connection did not subscribe with \"ack\": true")
            raise HubError(f"unknown scan id {event_id!r}")
        now = self.clock()
        self._settle(event_id, "acked")
        self._report(q.event, Outcome.DELIVERED, "acked", latency_s=(now - q.event.completed_ns) / 1e9)
        return {"id": event_id}

    # --- events from the pipeline ---------------------------------------------------------------

    def deliver(self, event: Event) -> None:
        device = _device_of(event)
        if isinstance(event, ScanEvent):
            self._expire_all()
            if self._expired(event):
                self._report(event, Outcome.EXPIRED, "ttl_before_delivery")
                return
            his = self._his_for(device)
            self._to_monitors(event, device)
            if his is None:
                self._wait(_Queued(event))
                return
            his.outbox.append(_Queued(event))
            self._track(event)
            self._pump(his)
            return
        line = dumps(encode_event(event))
        for sub in list(self.subscribers):
            if sub.role is not None and not sub.closed and sub.wants(device):
                self._write_or_drop(sub, line)

    # --- reload hand-over -----------------------------------------------------------------------

    def take_pending(self) -> list[Event]:
        pending: list[Event] = [q.event for q in self._pending]
        self._pending.clear()
        return pending

    def reconfigure(self, *, client_buffer_bytes: int, queue_limit: int) -> None:
        self.client_buffer_bytes = client_buffer_bytes
        self.queue_limit = queue_limit

    async def start(self) -> None:
        pass  # the hub has nothing to bring up; its transports listen

    async def stop(self) -> None:
        self.close("stopped")

    def status(self) -> dict[str, Any]:
        return self.counts()

    def close(self, reason: str = "stopped") -> None:
        """The daemon is stopping: everything still held is counted and logged, not lost silently."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held: list[_Queued] = list(self._pending)
        self._pending.clear()
        for sub in list(self.subscribers):
            held.extend(sub.outbox)
            held.extend(sub.unacked.values())
            sub.outbox.clear()
            sub.unacked.clear()
        for q in held:
            self._report(q.event, Outcome.UNDELIVERED, reason)
            log.warning("scan_dropped_undelivered", device=q.event.device.name, masked=mask(q.event.code), why=reason, sink=self.name)

    # --- internals ------------------------------------------------------------------------------

    def _his_for(self, device: str) -> Subscriber | None:
        """The HIS that takes this device's next scan. While an HIS still holds scans of the
        device (unwritten or unacked) it keeps the device, so a hand-over can never put an
        older scan behind a newer one; otherwise the most specific filter, then the earliest."""
        owner = self._owner.get(device)
        if owner is not None and owner.is_his and owner.wants(device) and _holds(owner, device):
            return owner
        best: Subscriber | None = None
        for sub in self.subscribers:
            if not sub.is_his or not sub.wants(device):
                continue
            if best is None or (sub.devices is not None, -sub.subscribed_seq) > (best.devices is not None, -best.subscribed_seq):
                best = sub
        if best is None:
            self._owner.pop(device, None)
        else:
            self._owner[device] = best
        return best

    def _to_monitors(self, event: ScanEvent, device: str) -> None:
        monitors = [s for s in self.subscribers if s.role is Role.MONITOR and not s.closed and s.wants(device)]
        if not monitors:
            return
        wire = encode_event(event, self.clock())  # once for every monitor
        masked_line: bytes | None = None
        full_line: bytes | None = None
        for sub in monitors:
            if sub.show_codes:
                full_line = full_line or dumps(wire)
                self._write_or_drop(sub, full_line)
            else:
                masked_line = masked_line or dumps(_masked_wire(event, wire))
                self._write_or_drop(sub, masked_line)

    def _write_or_drop(self, sub: Subscriber, line: bytes) -> bool:
        """Events that are not scans (and everything to monitors): a peer too slow to take them is
        dropped rather than waited for."""
        if sub.peer.buffered() + len(line) > self.client_buffer_bytes:
            self._drop(sub, "not reading: buffer full")
            return False
        sub.peer.write(line)
        return True

    def _drop(self, sub: Subscriber, why: str) -> None:
        log.warning("client_dropped", peer=sub.peer.description, why=why)
        sub.peer.close(why)
        self.detach(sub)

    def _release(self, sub: Subscriber) -> None:
        sub.holding = False
        if not sub.closed:
            self._hand_over(sub)
            self._pump(sub)

    def _hand_over(self, his: Subscriber) -> int:
        """A new HIS: the scans waiting for it go first, oldest first."""
        self._expire_all()
        mine = [q for q in self._pending if his.wants(q.event.device.name)]
        if not mine:
            return 0
        ids = {id(q) for q in mine}
        self._pending = collections.deque(q for q in self._pending if id(q) not in ids)
        # Ahead of anything already in its outbox (there is none for a fresh subscription).
        his.outbox.extendleft(reversed(mine))
        self._pump(his)
        return len(mine)

    def _pump_all(self) -> None:
        for sub in list(self.subscribers):
            if sub.is_his and sub.outbox:
                self._pump(sub)

    def _pump(self, sub: Subscriber) -> None:
        """Write what the buffer has room for; the rest waits for the peer to drain."""
        if sub.holding:
            return
        limit = self.client_buffer_bytes
        while sub.outbox and not sub.closed:
            q = sub.outbox[0]
            if self._expired(q.event):
                sub.outbox.popleft()
                self._expire(q, "ttl_waiting_for_his_to_read")
                continue
            line = self._his_line(q)
            if sub.peer.buffered() + len(line) > limit and sub.peer.buffered() > 0:
                if not sub.waiting_writable:
                    sub.waiting_writable = True
                    sub.peer.on_writable(functools.partial(self._writable, sub))
                return
            sub.outbox.popleft()
            sub.peer.write(line)
            now = self.clock()
            if sub.ack:
                sub.unacked[q.event.id] = q
                self._report(q.event, Outcome.SENT, "awaiting_ack")
            else:
                self._settle(q.event.id, "delivered")
                self._report(q.event, Outcome.DELIVERED, "written", latency_s=(now - q.event.completed_ns) / 1e9)

    def _writable(self, sub: Subscriber) -> None:
        sub.waiting_writable = False
        if not sub.closed:
            self._pump(sub)

    def _his_line(self, q: _Queued) -> bytes:
        now = self.clock()
        wire = encode_event(q.event, now)
        if q.queued:
            wire["queued"] = True
            wire["age_ms"] = max(0, (now - q.event.completed_ns) // 1_000_000)
        if q.redelivered:
            wire["redelivered"] = True
        return dumps(wire)

    def _requeue(self, q: _Queued, *, written_unacked: bool) -> None:
        """One place decides where a scan that lost its HIS goes: the next HIS, or waiting."""
        if self._expired(q.event):
            self._expire(q, "ttl_passed_unacked" if written_unacked else "ttl_waiting_for_his_to_read")
            return
        entry = _Queued(q.event, queued=True, redelivered=q.redelivered or written_unacked)
        if written_unacked:
            self._report(q.event, Outcome.REDELIVERED, "his_closed_before_ack")
        his = self._his_for(q.event.device.name)
        if his is None:
            self._wait(entry, front=True)
            return
        his.outbox.append(entry)
        if len(his.outbox) > 1 and his.outbox[-2].event.completed_ns > entry.event.completed_ns:
            his.outbox = collections.deque(sorted(his.outbox, key=lambda e: e.event.completed_ns))

    def _wait(self, q: _Queued, *, front: bool = False) -> None:
        q.queued = True
        if front:
            # Keep oldest first: a scan handed back is older than what arrived since.
            self._pending.append(q)
            self._pending = collections.deque(sorted(self._pending, key=lambda e: e.event.completed_ns))
        else:
            self._pending.append(q)
        while len(self._pending) > self.queue_limit:
            old = self._pending.popleft()
            self._expire(old, "queue_full", outcome=Outcome.UNDELIVERED)
        self._track(q.event)
        log.info("queued_no_subscriber", device=q.event.device.name, masked=mask(q.event.code), queued=len(self._pending))

    def _expired(self, event: ScanEvent) -> bool:
        return event.expires_ns is not None and self.clock() >= event.expires_ns

    def _expire(self, q: _Queued, reason: str, outcome: Outcome = Outcome.EXPIRED) -> None:
        self._settle(q.event.id, "expired")
        self._report(q.event, outcome, reason)
        log.warning("scan_dropped_undelivered", device=q.event.device.name, masked=mask(q.event.code), why=reason, sink=self.name)

    def _expire_all(self) -> None:
        if self._pending:
            keep: collections.deque[_Queued] = collections.deque()
            for q in self._pending:
                if self._expired(q.event):
                    self._expire(q, "ttl_passed_with_no_his")
                else:
                    keep.append(q)
            self._pending = keep
        for sub in self.subscribers:
            for event_id, q in list(sub.unacked.items()):
                if self._expired(q.event):
                    del sub.unacked[event_id]
                    self._expire(q, "ttl_passed_unacked")
            if sub.outbox and any(self._expired(q.event) for q in sub.outbox):
                keep = collections.deque()
                for q in sub.outbox:
                    if self._expired(q.event):
                        self._expire(q, "ttl_waiting_for_his_to_read")
                    else:
                        keep.append(q)
                sub.outbox = keep

    def _track(self, event: ScanEvent) -> None:
        if event.expires_ns is None:
            return
        heapq.heappush(self._deadlines, event.expires_ns)
        self._arm_timer()

    def _arm_timer(self) -> None:
        if not self._deadlines:
            return
        first = self._deadlines[0]
        if self._timer is not None and self._timer_at == first:
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, (first - self.clock()) / 1e9)
        self._timer_at = first
        self._timer = asyncio.get_running_loop().call_later(delay + 0.001, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.expire_due()

    def expire_due(self) -> None:
        """Settle everything whose TTL has passed (the hub's timer calls this; so may a test
        that drives the hub's clock by hand)."""
        now = self.clock()
        while self._deadlines and self._deadlines[0] <= now:
            heapq.heappop(self._deadlines)
        self._expire_all()
        self._arm_timer()

    def _settle(self, event_id: str, how: str) -> None:
        self._settled[event_id] = how
        self._settled.move_to_end(event_id)
        while len(self._settled) > SETTLED_MEMORY:
            self._settled.popitem(last=False)

    def _report(self, event: ScanEvent, outcome: Outcome, reason: str, latency_s: float | None = None) -> None:
        self.outcomes.report(DeliveryOutcome(self.name, outcome, event.id, event.device.name, reason, latency_s))


def _holds(sub: Subscriber, device: str) -> bool:
    return any(q.event.device.name == device for q in sub.outbox) or any(
        q.event.device.name == device for q in sub.unacked.values())


__all__ = ["Hub", "HubError", "Peer", "Role", "Subscriber"]
