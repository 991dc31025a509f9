"""The delivery contract as a property: any interleaving of connects, subscribes (both roles,
with and without acks), disconnects, stalls, reads, acks, scans and the clock moving on,
checked against what the contract promises.

For every scan: delivered to the HIS side exactly once, or expired / given up with exactly one
count; never written to anyone after its TTL; never to a monitor in full; per device never out
of order on any connection. The hub runs on a real event loop with its clock driven by the test.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Callable
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from scannerd.delivery.hub import Hub, HubError, Subscriber
from scannerd.delivery.outcomes import DeliveryOutcome, Outcome, Outcomes
from scannerd.model import Classification, DeviceInfo, DeviceStateEvent, ScanEvent, mask

DEVICES = [DeviceInfo(f"dev-{i}", "serial", "outpatient", "window") for i in range(2)]
PAY = Classification("wechat", "payment", "wechat.v1", "high")
TTL_NS = 60 * 10**9
BUFFER = 4096  # a small client buffer, so hand-overs and live scans really wait for reads


class FakePeer:
    """A connection whose client reads only when the test says so."""

    def __init__(self, name: str, now: Callable[[], int]) -> None:
        self.description = name
        self.now = now
        self.unread = b""
        self.received: list[tuple[int, dict[str, Any]]] = []  # (clock at write, message)
        self.waiters: list[Callable[[], None]] = []
        self.closed = False

    def write(self, data: bytes) -> bool:
        if self.closed:
            return False  # a closing connection takes nothing (the hub must not count it)
        self.unread += data
        for line in data.splitlines():
            self.received.append((self.now(), json.loads(line)))
        return True

    def buffered(self) -> int:
        return len(self.unread)

    def on_writable(self, callback: Callable[[], None]) -> None:
        self.waiters.append(callback)

    def close(self, why: str | None) -> None:
        self.closed = True

    def read_all(self) -> None:
        self.unread = b""
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            w()


class Contract(RuleBasedStateMachine):
    peers = Bundle("peers")

    @initialize()
    def start(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.t = 10**12
        self.outcomes: list[DeliveryOutcome] = []
        bus = Outcomes()
        bus.subscribe(self.outcomes.append)
        self.hub = Hub(bus, client_buffer_bytes=BUFFER, queue_limit=10_000, clock=lambda: self.t)
        self.subs: dict[str, Subscriber] = {}
        self.fakes: dict[str, FakePeer] = {}
        self.roles: dict[str, str | None] = {}
        self.scans: dict[str, ScanEvent] = {}
        self.n = 0

    def teardown(self) -> None:
        if hasattr(self, "loop"):
            self.finish()
            self.loop.close()
            asyncio.set_event_loop(None)

    def settle(self) -> None:
        self.loop.run_until_complete(asyncio.sleep(0))

    def on_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call into the hub from inside the event loop, as a transport would, then let the
        loop run what the call scheduled."""
        async def call() -> Any:
            return fn(*args)

        result = self.loop.run_until_complete(call())
        self.settle()
        return result

    # --- rules --------------------------------------------------------------------------------

    @rule(target=peers)
    def connect(self) -> str:
        self.n += 1
        name = f"p{self.n}"
        fake = FakePeer(name, lambda: self.t)
        self.fakes[name] = fake
        self.subs[name] = self.hub.attach(fake)
        self.roles[name] = None
        return name

    @rule(peer=peers, role=st.sampled_from(["his", "monitor"]), ack=st.booleans(),
          devices=st.none() | st.sets(st.sampled_from([d.name for d in DEVICES]), min_size=1))
    def subscribe(self, peer: str, role: str, ack: bool, devices: set[str] | None) -> None:
        sub = self.subs[peer]
        if sub.closed:
            return
        try:
            self.on_loop(self.hub.subscribe, sub, role, devices, ack and role == "his", False)
        except HubError:
            return
        self.roles[peer] = role
        self.settle()

    @rule(device=st.integers(0, len(DEVICES) - 1), ttl_s=st.sampled_from([1, 5, 60]))
    def scan(self, device: int, ttl_s: int) -> None:
        self.n += 1
        code = f"1345678901{self.n:08d}"
        # completed_ns carries a strictly increasing sequence (the clock plus the scan's number),
        # so "in order" is checked exactly even between scans of one clock tick.
        e = ScanEvent(f"ID{self.n:08d}", "ts", DEVICES[device], code, "qr", PAY, 1.0, self.t + self.n,
                      self.t + ttl_s * 10**9)
        self.scans[e.id] = e
        self.on_loop(self.hub.deliver, e)

    @rule(peer=peers)
    def read(self, peer: str) -> None:
        self.on_loop(self.fakes[peer].read_all)

    @rule(peer=peers, pick=st.integers(0, 50))
    def ack(self, peer: str, pick: int) -> None:
        sub = self.subs[peer]
        if sub.closed or not sub.unacked:
            return
        event_id = list(sub.unacked)[pick % len(sub.unacked)]
        self.on_loop(self.fakes[peer].read_all)
        self.on_loop(self.hub.ack, sub, event_id)

    @rule(peer=peers)
    def hang_up(self, peer: str) -> None:
        """The client goes away; its transport only notices later (a later `disconnect`). Meanwhile
        writes to it fail and must not count."""
        self.fakes[peer].closed = True

    @rule(peer=peers)
    def disconnect(self, peer: str) -> None:
        self.fakes[peer].closed = True
        self.on_loop(self.hub.detach, self.subs[peer])

    @rule(device=st.integers(0, len(DEVICES) - 1))
    def device_event(self, device: int) -> None:
        self.on_loop(self.hub.deliver, DeviceStateEvent(DEVICES[device].name, "absent", "unplugged"))

    @rule(peer=peers)
    def reply(self, peer: str) -> None:
        """A reply to some command: an HIS gets it paced with its scans, never dropped for it."""
        sub = self.subs[peer]
        self.on_loop(self.hub.reply, sub, b'{"type":"reply","cmd":"status","ok":true}\n')
        if self.roles[peer] == "his" and not self.fakes[peer].closed:
            assert not sub.closed, "an HIS was disconnected for being slow"

    @rule(data=st.data())
    def transport_stops(self, data: st.DataObject) -> None:
        """A transport stops (reload to a new path, shutdown): its connections go at once."""
        names = [n for n, s in self.subs.items() if not s.closed]
        if not names:
            return
        going = data.draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
        for name in going:
            self.fakes[name].closed = True
        self.on_loop(self.hub.detach_all, [self.subs[n] for n in going])

    @rule(seconds=st.sampled_from([0.5, 2, 10, 61]))
    def clock(self, seconds: float) -> None:
        self.t += int(seconds * 1e9)
        self.on_loop(self.hub.expire_due)

    # --- what must always hold ---------------------------------------------------------------

    @invariant()
    def never_late_never_full_to_a_monitor_never_out_of_order(self) -> None:
        if not hasattr(self, "hub"):
            return
        for name, fake in self.fakes.items():
            last: dict[str, int] = {}
            for at, msg in fake.received:
                if msg.get("type") != "scan":
                    continue
                e = self.scans[msg["id"]]
                assert e.expires_ns is not None and at < e.expires_ns, f"{msg['id']} written after its TTL"
                if self.roles[name] == "monitor":
                    assert "code" not in msg and msg["masked"] == mask(e.code) and "queued" not in msg
                else:
                    assert msg["code"] == e.code
                device = msg["device"]
                assert e.completed_ns > last.get(device, -1), f"{name}: {device} out of order"
                last[device] = e.completed_ns

    @invariant()
    def each_scan_is_settled_at_most_once(self) -> None:
        if not hasattr(self, "hub"):
            return
        final = collections.Counter(o.event_id for o in self.outcomes
                                    if o.outcome in (Outcome.DELIVERED, Outcome.EXPIRED, Outcome.UNDELIVERED))
        assert all(n == 1 for n in final.values()), final.most_common(3)

    def finish(self) -> None:
        """An HIS that reads and acks everything arrives, then every TTL passes: each scan must
        have exactly one final outcome, and a delivered one reached an HIS connection."""
        his = self.connect()
        self.on_loop(self.hub.subscribe, self.subs[his], "his", None, True, False)
        for _ in range(len(self.scans) + 2):
            self.on_loop(self.fakes[his].read_all)
            for event_id in list(self.subs[his].unacked):
                self.on_loop(self.hub.ack, self.subs[his], event_id)
        self.t += 3600 * 10**9
        self.on_loop(self.hub.expire_due)
        final = collections.Counter(o.event_id for o in self.outcomes
                                    if o.outcome in (Outcome.DELIVERED, Outcome.EXPIRED, Outcome.UNDELIVERED))
        assert set(final) == set(self.scans), set(self.scans) - set(final)
        assert all(n == 1 for n in final.values())
        his_writes = collections.Counter(msg["id"] for name, f in self.fakes.items()
                                         if self.roles.get(name) == "his" or name == his
                                         for _, msg in f.received if msg.get("type") == "scan")
        redelivered_writes = collections.Counter(msg["id"] for f in self.fakes.values()
                                                 for _, msg in f.received if msg.get("type") == "scan" and msg.get("redelivered"))
        delivered = {o.event_id for o in self.outcomes if o.outcome is Outcome.DELIVERED}
        assert delivered <= set(his_writes)
        # Written to the HIS side once, plus once more for each redelivery (after an HIS closed
        # without acking), never more.
        for event_id, n in his_writes.items():
            assert n == 1 + redelivered_writes[event_id], (event_id, n, redelivered_writes[event_id])
        counted = collections.Counter(o.event_id for o in self.outcomes if o.outcome is Outcome.REDELIVERED)
        assert counted == redelivered_writes, "REDELIVERED counted for scans not written again"


Contract.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestContract = Contract.TestCase


def test_monitor_lines_carry_no_code_even_in_a_rejected_role_switch() -> None:
    """Precondition sanity for the machine above: a monitor cannot become an HIS on one connection."""
    loop = asyncio.new_event_loop()
    try:
        hub = Hub(Outcomes())
        sub = hub.attach(FakePeer("x", lambda: 0))
        loop.run_until_complete(_subscribe_twice(hub, sub))
        assert hub.counts()["monitors"] == 1
    finally:
        loop.close()


async def _subscribe_twice(hub: Hub, sub: Subscriber) -> None:
    hub.subscribe(sub, "monitor", None, False, False)
    try:
        hub.subscribe(sub, "his", None, False, False)
    except HubError as e:
        assert "already subscribed as monitor" in str(e)
    else:
        raise AssertionError("a monitor turned into an HIS")


