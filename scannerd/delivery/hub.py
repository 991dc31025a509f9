"""The subscriber hub: who receives which event, in which order, and when a scan counts as delivered.

The delivery contract (README, "Protocol") lives here and nowhere else, for every transport:

- No scan without a subscription: a connection receives events only after `subscribe`.
- Role `his`: full codes. Each scan goes to exactly one HIS subscriber (the most specific
  device filter wins, then the earliest subscription; a device stays with the HIS that holds
  its unwritten or unacknowledged scans). Scans that waited while no HIS wanted them are
  written first, oldest first, marked `queued` with `age_ms`; live scans follow.
- Role `monitor`: live events with codes masked (full codes only with show_codes, granted by
  the command layer); never takes a waiting scan; never counts as a delivery.
- Acks (opt-in): a scan written to an acking HIS stays pending until `ack`; if the connection
  closes first the scan goes to the next HIS, same id, marked `redelivered`.
- No scan is written after its TTL, to anyone.

An HIS is never disconnected for being slow: everything for it (scans, other events, replies)
goes through its outbox, written only while its transport buffer has room, so a hand-over of
thousands of waiting scans to a client with a small buffer is paced by the client, loses
nothing and sends nothing twice. A monitor that falls behind is dropped instead. Where a scan
goes when its HIS closes is decided in one place (`_move`).

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

# How many settled scan ids (acked, expired, dropped) are remembered to answer a late `ack`
# with the right reason instead of "unknown".
SETTLED_MEMORY = 4096


class Peer(Protocol):
    """One connection of some transport, as the hub needs it."""

    description: str

    def write(self, data: bytes) -> bool:
        """Hand `data` to the connection; False when it is closing (nothing was written)."""
        ...

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
    """A scan on its way to an HIS."""

    event: ScanEvent
    queued: bool = False  # waited for an HIS before this one subscribed
    redelivered: bool = False  # an HIS closed without acknowledging it
    count_redelivery: bool = False  # report REDELIVERED when it is next written

    @property
    def order_ns(self) -> int:
        return self.event.completed_ns


@dataclass(eq=False)
class _Line:
    """Another event (reject, device state) for an HIS, kept in order with its scans."""

    data: bytes
    order_ns: int


_Entry = _Queued | _Line


@dataclass(eq=False)
class Subscriber:
    peer: Peer
    seq: int
    role: Role | None = None  # None: connected, not subscribed (replies only)
    devices: frozenset[str] | None = None  # None: every device
    ack: bool = False
    show_codes: bool = False
    subscribed_seq: int = 0
    # What waits for this HIS's buffer to have room, in order; replies go ahead of it.
    outbox: collections.deque[_Entry] = field(default_factory=collections.deque)
    replies: collections.deque[bytes] = field(default_factory=collections.deque)
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

    def holds(self, device: str) -> bool:
        """Whether scans of `device` wait here, unwritten or unacked (stops at the first)."""
        return any(isinstance(q, _Queued) and q.event.device.name == device for q in self.outbox) or any(
            q.event.device.name == device for q in self.unacked.values())

    def held_devices(self) -> set[str]:
        held = {q.event.device.name for q in self.outbox if isinstance(q, _Queued)}
        return held | {q.event.device.name for q in self.unacked.values()}


def _device_of(event: Event) -> str:
    return event.device.name if isinstance(event, ScanEvent) else event.device


def _masked_wire(event: ScanEvent, wire: dict[str, Any]) -> dict[str, Any]:
    out = dict(wire)
    out.pop("code", None)
    out["masked"] = mask(event.code)
    return out


def _in_order(entries: Iterable[_Entry]) -> collections.deque[_Entry]:
    return collections.deque(sorted(entries, key=lambda e: e.order_ns))


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
        self._settled: collections.OrderedDict[str, str] = collections.OrderedDict()  # id → how
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
        self.detach_all([sub])

    def detach_all(self, subs: Iterable[Subscriber]) -> None:
        """Several connections go at once (a transport stopping): none of them may receive what
        another one held, so all are out of the table before anything moves."""
        gone = [s for s in subs if not s.closed]
        if not gone:
            return
        for sub in gone:
            sub.closed = True
            if sub in self.subscribers:
                self.subscribers.remove(sub)
        for device in [d for d, owner in self._owner.items() if owner.closed]:
            del self._owner[device]
        # Written but unacked: redelivered. Not yet written: simply moves on. Other events that
        # were waiting for that connection are not anyone else's.
        held: list[tuple[_Queued, bool]] = []
        for sub in gone:
            held.extend((q, True) for q in sub.unacked.values())
            held.extend((q, False) for q in sub.outbox if isinstance(q, _Queued))
            sub.unacked.clear()
            sub.outbox.clear()
            sub.replies.clear()
        if held:
            held.sort(key=lambda pair: pair[0].order_ns)
            self._move(held)

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

    # --- subscribe / ack / replies ----------------------------------------------------------------

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
        wanted = None if devices is None else frozenset(devices)
        if sub.role is Role.HIS:
            if sub.ack and not ack and sub.unacked:
                raise HubError("scans are still waiting for your ack; ack them before turning acks off")
            dropped = sorted(d for d in sub.held_devices() if wanted is not None and d not in wanted)
            if dropped:
                # Its scans of those devices would otherwise reach another HIS behind newer ones.
                raise HubError(f"this connection still holds scans of {', '.join(dropped)}; take (and ack) them first")
        sub.role = r
        sub.devices = wanted
        sub.ack = ack
        sub.show_codes = show_codes
        sub.subscribed_seq = next(self._seq)
        waiting = 0
        if r is Role.HIS:
            self._expire_all()
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
            if settled == "dropped":
                raise HubError(f"scan {event_id} was dropped (the queue for the HIS was full) before this ack")
            if not sub.ack:
                raise HubError("this connection did not subscribe with \"ack\": true")
            raise HubError(f"unknown scan id {event_id!r}")
        now = self.clock()
        self._settle(event_id, "acked")
        self._report(q.event, Outcome.DELIVERED, "acked", latency_s=(now - q.event.completed_ns) / 1e9)
        return {"id": event_id}

    def reply(self, sub: Subscriber, line: bytes) -> None:
        """A transport's answer to one of `sub`'s commands. An HIS gets it ahead of its waiting
        scans but paced like them (never dropped for it); anyone else is dropped when too slow."""
        if sub.is_his:
            sub.replies.append(line)
            self._pump(sub)
        elif not sub.closed:
            self._write_or_drop(sub, line)

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
                self._wait([_Queued(event)])
                return
            q = _Queued(event)
            his.outbox.append(q)
            self._pump(his)
            # Written and settled at once (the usual case): nothing is left to expire, so its
            # deadline is not kept (a heap entry and a timer wake-up per scan, 60 s later).
            if his.closed or (his.outbox and his.outbox[-1] is q) or his.unacked.get(event.id) is q:
                self._track(event)
            return
        line = dumps(encode_event(event))
        now = self.clock()
        for sub in list(self.subscribers):
            if sub.closed or sub.role is None or not sub.wants(device):
                continue
            if sub.role is Role.HIS:
                sub.outbox.append(_Line(line, now))  # in order with that device's scans
                self._pump(sub)
            else:
                self._write_or_drop(sub, line)

    # --- reload hand-over and shutdown -------------------------------------------------------------

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
            held.extend(q for q in sub.outbox if isinstance(q, _Queued))
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
        if owner is not None and owner.is_his and owner.wants(device) and owner.holds(device):
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
        """Monitors and unsubscribed connections: one too slow to take a line is dropped rather
        than waited for (it holds no scan, so nothing is lost with it)."""
        if sub.peer.buffered() + len(line) > self.client_buffer_bytes:
            log.warning("client_dropped", peer=sub.peer.description, why="not reading: buffer full")
            sub.peer.close("not reading")
            self.detach(sub)
            return False
        return sub.peer.write(line)

    def _release(self, sub: Subscriber) -> None:
        sub.holding = False
        if not sub.closed:
            self._hand_over(sub)
            self._pump(sub)

    def _hand_over(self, his: Subscriber) -> None:
        """A new HIS: the scans waiting for it go first, oldest first, and their devices are its."""
        self._expire_all()
        mine = [q for q in self._pending if his.wants(q.event.device.name)]
        if not mine:
            return
        taken = {id(q) for q in mine}
        self._pending = collections.deque(q for q in self._pending if id(q) not in taken)
        his.outbox = _in_order([*mine, *his.outbox])
        for q in mine:
            self._owner[q.event.device.name] = his

    def _pump(self, sub: Subscriber) -> None:
        """Write what the buffer has room for; the rest waits for the peer to drain."""
        if sub.holding or sub.closed:
            return
        limit = self.client_buffer_bytes
        while (sub.replies or sub.outbox) and not sub.closed:
            if sub.replies:
                line = sub.replies[0]
                entry: _Entry | None = None
            else:
                entry = sub.outbox[0]
                if isinstance(entry, _Queued) and self._expired(entry.event):
                    sub.outbox.popleft()
                    self._expire(entry, "ttl_waiting_for_his_to_read")
                    continue
                line = entry.data if isinstance(entry, _Line) else self._his_line(entry)
            if sub.peer.buffered() + len(line) > limit and sub.peer.buffered() > 0:
                if not sub.waiting_writable:
                    sub.waiting_writable = True
                    sub.peer.on_writable(functools.partial(self._writable, sub))
                return
            if not sub.peer.write(line):
                return  # closing: its transport detaches it, and what it holds moves on
            if entry is None:
                sub.replies.popleft()
                continue
            sub.outbox.popleft()
            if isinstance(entry, _Queued):
                self._written(sub, entry)

    def _written(self, sub: Subscriber, q: _Queued) -> None:
        if q.count_redelivery:
            q.count_redelivery = False
            self._report(q.event, Outcome.REDELIVERED, "his_closed_before_ack")
        if sub.ack:
            sub.unacked[q.event.id] = q
            self._report(q.event, Outcome.SENT, "awaiting_ack")
        else:
            self._settle(q.event.id, "delivered")
            self._report(q.event, Outcome.DELIVERED, "written", latency_s=(self.clock() - q.event.completed_ns) / 1e9)

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

    def _move(self, held: list[tuple[_Queued, bool]]) -> None:
        """The one place that decides where scans go whose HIS closed: the next HIS, or back to
        waiting. `held` is oldest first; each target is sorted once, whatever the count."""
        to_his: dict[int, tuple[Subscriber, list[_Queued]]] = {}
        to_wait: list[_Queued] = []
        for q, written_unacked in held:
            if self._expired(q.event):
                self._expire(q, "ttl_passed_unacked" if written_unacked else "ttl_waiting_for_his_to_read")
                continue
            entry = _Queued(q.event, queued=True, redelivered=q.redelivered or written_unacked,
                            count_redelivery=q.count_redelivery or written_unacked)
            his = self._his_for(q.event.device.name)
            if his is None:
                to_wait.append(entry)
            else:
                to_his.setdefault(id(his), (his, []))[1].append(entry)
                self._owner[q.event.device.name] = his
        for his, entries in to_his.values():
            his.outbox = _in_order([*his.outbox, *entries])
        if to_wait:
            self._wait(to_wait)
        for his, _entries in to_his.values():
            self._pump(his)

    def _wait(self, entries: list[_Queued]) -> None:
        for q in entries:
            q.queued = True
            self._track(q.event)
        if self._pending and entries and entries[0].order_ns < self._pending[-1].order_ns:
            # Handed back by a closing HIS: older than what arrived since; keep oldest first.
            self._pending = collections.deque(sorted([*self._pending, *entries], key=lambda e: e.order_ns))
        else:
            self._pending.extend(entries)
        while len(self._pending) > self.queue_limit:
            old = self._pending.popleft()
            self._expire(old, "queue_full", outcome=Outcome.UNDELIVERED)
        last = entries[-1].event if entries else None
        if last is not None:
            log.info("queued_no_subscriber", device=last.device.name, masked=mask(last.code), queued=len(self._pending))

    def _expired(self, event: ScanEvent) -> bool:
        return event.expires_ns is not None and self.clock() >= event.expires_ns

    def _expire(self, q: _Queued, reason: str, outcome: Outcome = Outcome.EXPIRED) -> None:
        self._settle(q.event.id, "expired" if outcome is Outcome.EXPIRED else "dropped")
        self._report(q.event, outcome, reason)
        log.warning("scan_dropped_undelivered", device=q.event.device.name, masked=mask(q.event.code), why=reason, sink=self.name)

    def _expire_all(self) -> None:
        if self._pending and any(self._expired(q.event) for q in self._pending):
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
            if sub.outbox and any(isinstance(q, _Queued) and self._expired(q.event) for q in sub.outbox):
                outbox: collections.deque[_Entry] = collections.deque()
                for e in sub.outbox:
                    if isinstance(e, _Queued) and self._expired(e.event):
                        self._expire(e, "ttl_waiting_for_his_to_read")
                    else:
                        outbox.append(e)
                sub.outbox = outbox

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


__all__ = ["Hub", "HubError", "Peer", "Role", "Subscriber"]
