"""The hub keeps a deadline (and a timer) only for scans it still holds (issue 17 item 2): a scan
written and settled at once leaves nothing behind, a held one still expires at its TTL."""

from __future__ import annotations

import asyncio

from test_hub_contract import FakePeer
from test_hub_regressions import Clock, hub_with, make

from scannerd.delivery.outcomes import Outcome

TTL_NS = 60 * 10**9


async def test_scans_written_at_once_leave_no_deadline_behind() -> None:
    clock = Clock()
    hub, seen = hub_with(clock)
    peer = FakePeer("his", clock)
    hub.subscribe(hub.attach(peer), "his", None, False, False)
    await asyncio.sleep(0)  # the hand-over (nothing waited)
    for n in range(1000):
        hub.deliver(make(clock, n))
        peer.read_all()
    assert sum(o.outcome is Outcome.DELIVERED for o in seen) == 1000
    assert hub._deadlines == [] and hub._timer is None  # 1000 heap entries and a timer before


async def test_a_scan_waiting_for_its_ack_still_expires_at_its_ttl() -> None:
    clock = Clock()
    hub, seen = hub_with(clock)
    peer = FakePeer("his", clock)
    hub.subscribe(hub.attach(peer), "his", None, True, False)
    await asyncio.sleep(0)
    s = make(clock, 1)
    hub.deliver(s)
    assert hub._deadlines == [s.expires_ns] and hub._timer is not None
    clock.t = s.expires_ns or 0
    hub.expire_due()
    assert [(o.outcome, o.reason) for o in seen if o.event_id == s.id][-1] == (Outcome.EXPIRED, "ttl_passed_unacked")


async def test_a_scan_held_behind_a_full_buffer_still_expires_at_its_ttl() -> None:
    clock = Clock()
    hub, seen = hub_with(clock)
    hub.client_buffer_bytes = 600  # about two scan lines
    peer = FakePeer("his", clock)
    hub.subscribe(hub.attach(peer), "his", None, False, False)
    await asyncio.sleep(0)
    held = [make(clock, n) for n in range(5)]
    for s in held:
        hub.deliver(s)  # the HIS reads nothing: the later ones stay in its outbox
    kept = set(hub._deadlines)
    assert kept and hub._timer is not None
    clock.t = max(s.expires_ns or 0 for s in held)
    hub.expire_due()
    expired = {o.event_id for o in seen if o.outcome is Outcome.EXPIRED}
    delivered = {o.event_id for o in seen if o.outcome is Outcome.DELIVERED}
    assert expired and expired | delivered == {s.id for s in held} and not expired & delivered
