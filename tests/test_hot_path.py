"""The per-scan shortcuts of issue 17 item 2 give exactly what the long way gave."""

from __future__ import annotations

import dataclasses
import os
import random
import time

import pytest

from scannerd import protocol
from scannerd.config import ScannerConfig
from scannerd.model import Frame
from scannerd.pipeline import RandomPool, new_event_id, ulid
from scannerd.sources.serial import with_wire_time

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _ulid_reference(ms: int, rand: int) -> str:
    """The ULID spec spelled out: 26 Crockford base32 digits of (48-bit ms << 80 | 80 random bits)."""
    value = (ms << 80) | rand
    return "".join(ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def test_ids_are_the_spec_s_ulids_of_their_random_digits() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        ms, rand = rng.getrandbits(48), rng.getrandbits(80)
        # Each random byte gives its low 5 bits: the high bits are noise that must not matter.
        digits = bytes(((rand >> (5 * i)) & 31) | (rng.getrandbits(3) << 5) for i in reversed(range(16)))
        assert ulid(ms, digits) == _ulid_reference(ms, rand)


def test_ids_draw_the_system_random_source_once_per_4_kib() -> None:
    calls: list[int] = []

    def source(n: int) -> bytes:
        calls.append(n)
        return os.urandom(n)

    pool = RandomPool(source=source)
    ids = {ulid(1_700_000_000_000, pool.take(16)) for _ in range(1000)}
    assert len(ids) == 1000
    assert calls == [4096] * 4  # 256 ids a chunk


def test_every_random_digit_is_used_about_equally() -> None:
    counts = dict.fromkeys(ALPHABET, 0)
    for _ in range(4000):
        for ch in new_event_id()[10:]:
            counts[ch] += 1
    expected = 4000 * 16 / 32
    # 64,000 digits: a fair digit lands within ±20 % of 2000 with overwhelming probability.
    assert all(abs(n - expected) < expected * 0.2 for n in counts.values()), counts


def test_a_forked_child_does_not_repeat_its_parent_s_ids() -> None:
    new_event_id()  # the pool holds bytes now, which the child would otherwise share
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then out without running the test session's atexit
        os.write(write_fd, new_event_id().encode())
        os._exit(0)
    os.close(write_fd)
    parent_id = new_event_id()
    child_id = b""
    while chunk := os.read(read_fd, 64):
        child_id += chunk
    os.close(read_fd)
    os.waitpid(pid, 0)
    assert len(child_id) == 26
    assert child_id.decode()[10:] != parent_id[10:]


def test_ids_of_one_millisecond_share_its_time_digits_and_sort_with_time() -> None:
    ids = [new_event_id(1_700_000_000_000 + i // 3) for i in range(30)]
    assert len(set(ids)) == 30
    assert [i[:10] for i in ids] == sorted(i[:10] for i in ids)
    assert new_event_id()[:10] >= _ulid_reference(time.time_ns() // 1_000_000 - 1000, 0)[:10]


def _reference_iso(ns: int) -> str:
    """The timestamp the long way: localtime and strftime for every call."""
    sec, us = divmod(ns // 1000, 1_000_000)
    lt = time.localtime(sec)
    off = abs(lt.tm_gmtoff)
    sign = "+" if lt.tm_gmtoff >= 0 else "-"
    return time.strftime("%Y-%m-%dT%H:%M:%S", lt) + f".{us:06d}{sign}{off // 3600:02d}:{(off % 3600) // 60:02d}"


@pytest.mark.parametrize("tz", ["Asia/Shanghai", "America/New_York", "UTC", "Asia/Kolkata"])
def test_timestamps_match_the_long_way_across_seconds_and_zones(tz: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", tz)
    time.tzset()
    try:
        rng = random.Random(tz)
        base = 1_790_000_000 * 10**9
        # Runs within one second (the cached prefix), jumps back and forth, and a DST change.
        stamps = [base + i * 137_000_000 for i in range(40)] + [rng.randrange(0, 4 * 10**18) for _ in range(500)]
        stamps += [1_793_512_800 * 10**9 + d for d in range(-2 * 10**9, 2 * 10**9, 250_000_000)]  # 2026-11-01 US DST end
        for ns in stamps:
            assert protocol.wall_clock_iso(ns) == _reference_iso(ns)
        before = time.time_ns()
        now = protocol.wall_clock_iso()
        assert _reference_iso(before) <= now <= _reference_iso(time.time_ns())
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
        protocol._last_second = (-1, "", "")


def test_wire_time_keeps_every_other_field_of_the_frame() -> None:
    values = {"device": "s", "text": "134567890123456789", "symbology": "qr", "first_ns": 5_000_000_000,
              "last_ns": 5_000_000_000, "completed_ns": 5_000_000_123, "gaps_ns": (1, 2, 3), "ended_by": "idle",
              "injected": True}
    assert set(values) == {f.name for f in dataclasses.fields(Frame)}, "a new Frame field: add it here and in with_wire_time"
    got: list[object] = []
    with_wire_time(got.append, ScannerConfig(name="s", path="/dev/x", baudrate=9600))(Frame(**values))  # type: ignore[arg-type]
    frame = got[0]
    assert isinstance(frame, Frame)
    assert {k: getattr(frame, k) for k in values if k != "first_ns"} == {k: v for k, v in values.items() if k != "first_ns"}
    assert frame.first_ns == 5_000_000_000 - 17 * 1_041_666

