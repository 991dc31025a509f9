"""The loop-lag monitor: a stall of the event loop shows up as a late tick, nothing else does."""

from __future__ import annotations

import asyncio
import time

import pytest

from scannerd.looplag import LoopLagMonitor


async def wait_until(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.005)


async def test_a_blocked_loop_is_reported_with_its_length() -> None:
    lags: list[float] = []
    monitor = LoopLagMonitor(lags.append, interval_s=0.01)
    monitor.start()
    await wait_until(lambda: len(lags) >= 3)
    time.sleep(0.3)  # the stall under test: the loop is blocked on purpose
    await wait_until(lambda: any(lag >= 0.25 for lag in lags))
    monitor.stop()
    assert all(lag >= 0 for lag in lags)
    assert monitor.max_lag_s >= 0.25


async def test_one_stall_is_one_late_tick_not_a_burst_of_catch_up_ticks() -> None:
    lags: list[float] = []
    monitor = LoopLagMonitor(lags.append, interval_s=0.01)
    monitor.start()
    await wait_until(lambda: len(lags) >= 2)
    before = len(lags)
    time.sleep(0.3)  # a stall: 30 intervals missed
    await wait_until(lambda: len(lags) >= before + 1)
    await asyncio.sleep(0)  # let any catch-up tick that was (wrongly) due at once run
    monitor.stop()
    late = [lag for lag in lags[before:] if lag >= 0.2]
    assert len(late) == 1, lags[before:]


async def test_stop_stops_ticking_and_start_twice_is_one_chain() -> None:
    lags: list[float] = []
    monitor = LoopLagMonitor(lags.append, interval_s=0.005)
    monitor.start()
    monitor.start()
    await wait_until(lambda: len(lags) >= 5)
    monitor.stop()
    assert not monitor.running
    seen = len(lags)
    await asyncio.sleep(0.05)
    assert len(lags) == seen
    assert monitor.ticks == seen


async def test_a_failing_callback_does_not_stop_the_monitor() -> None:
    calls: list[float] = []

    def record(lag: float) -> None:
        calls.append(lag)
        raise RuntimeError("metrics broke")

    monitor = LoopLagMonitor(record, interval_s=0.005)
    monitor.start()
    await wait_until(lambda: len(calls) >= 3)
    monitor.stop()


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        LoopLagMonitor(lambda _s: None, interval_s=0)
