"""End-to-end scenarios: pty write → event at the HIS, for scannerd and the bare baseline.

Every scenario runs both targets in the same run, in alternating rounds, so machine noise (other
processes, frequency changes) falls on both; ratios are taken between figures of one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from harness import HisClient, Process, PtyScanner, bench_code, latency_summary, percentile, request

from scannerd.looplag import LoopLagMonitor

BAUD = 115200
_codes = count(1)


def next_code() -> str:
    return bench_code(next(_codes))


@dataclass
class Target:
    """One process under test, its scanners and its HIS client."""

    name: str  # "scannerd" or "baseline"
    proc: Process
    scanners: list[PtyScanner]
    client: HisClient

    @classmethod
    async def attach(cls, name: str, proc: Process, scanners: list[PtyScanner]) -> Target:
        client = await HisClient.connect(proc.socket_path, raw=name == "baseline")
        target = cls(name, proc, scanners, client)
        await target.warm_up()
        return target

    async def warm_up(self) -> None:
        """One scan per scanner, waited for: every port is open and the path is hot."""
        for s in self.scanners:
            await scan_once(self.client, s, None, timeout=30.0)


# A paced scan whose slices the bench (descheduled on a busy machine) wrote further apart than
# this is void: the daemon's serial idle gap (50 ms) rightly cuts it, no UART pauses mid-scan.
VOID_SPAN_NS = 25_000_000


class Void(Exception):
    """The bench could not write the scan as a scanner would (stalled between slices)."""


async def scan_once(client: HisClient, scanner: PtyScanner, baud: int | None, timeout: float = 10.0,
                    arrival: Callable[[str], asyncio.Future[int]] | None = None) -> float:
    """Write one scan (code + CR) and wait for it at the client; the latency in µs from the write
    of the last byte (the terminator: the earliest moment a scan can be complete) to arrival.
    TimeoutError when it never arrives; Void when the bench stalled while writing it."""
    code = next_code()
    fut = (arrival or client.expect)(code)
    data = (code + "\r").encode()
    if baud is None:
        t0 = scanner.write_now(data)
        span = 0
    else:
        times = await scanner.write_paced(data, baud)
        t0, span = (None, 0) if times is None else (times[1], times[1] - times[0])
    if t0 is None:
        raise RuntimeError(f"{scanner.name}: pty full, the reader is not reading")
    if span > VOID_SPAN_NS:
        with contextlib.suppress(TimeoutError):  # let whatever the daemon makes of it go by
            await asyncio.wait_for(fut, 1.0)
        raise Void(f"{span / 1e6:.0f} ms between the first and last slice")
    t1 = await asyncio.wait_for(fut, timeout)
    return (t1 - t0) / 1000


async def sequential(targets: Sequence[Target], scans: int, rounds: int, baud: int | None,
                     arrival: dict[str, Callable[[str], asyncio.Future[int]]] | None = None,
                     scan_timeout: float = 10.0) -> dict[str, Any]:
    """`scans` scans per target, one at a time, in `rounds` alternating rounds. A scan that never
    arrives is counted as lost (and the run goes on); a void one is counted and written again."""
    samples: dict[str, list[float]] = {t.name: [] for t in targets}
    lost = dict.fromkeys(samples, 0)
    void = dict.fromkeys(samples, 0)
    per_round = math.ceil(scans / rounds)
    for r in range(rounds):
        order = targets if r % 2 == 0 else list(reversed(targets))
        for t in order:
            get = None if arrival is None else arrival[t.name]
            goal = min(scans, len(samples[t.name]) + lost[t.name] + per_round)
            while len(samples[t.name]) + lost[t.name] < goal and void[t.name] < scans:
                try:
                    samples[t.name].append(await scan_once(t.client, t.scanners[0], baud, scan_timeout, arrival=get))
                except TimeoutError:
                    lost[t.name] += 1
                except Void:
                    void[t.name] += 1
    return {name: {**latency_summary(s), "lost": lost[name], "void_bench_stalled": void[name]} for name, s in samples.items()}


@dataclass
class LoadResult:
    sent: int = 0
    not_sent: int = 0
    lost: int = 0
    latencies_us: list[float] = field(default_factory=list)
    cpu_pct: float = 0.0
    rss_mb: float = 0.0
    bench_cpu_pct: float = 0.0
    wall_s: float = 0.0
    # How late the bench's own event loop ran a 10 ms timer meanwhile: machine noise that hits
    # every figure of the round, whichever process is under test.
    bench_lags_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = latency_summary(self.latencies_us)
        return {"sent": self.sent, "not_sent": self.not_sent, "lost": self.lost, "cpu_pct_of_one_core": round(self.cpu_pct, 2),
                "rss_mb": round(self.rss_mb, 1), "bench_process_cpu_pct": round(self.bench_cpu_pct, 1),
                "wall_s": round(self.wall_s, 2), **{k: (round(v, 1) if isinstance(v, float) else v) for k, v in lat.items()},
                "bench_loop_lag_ms": noise_summary(self.bench_lags_ms)}


def noise_summary(lags_ms: list[float]) -> dict[str, float]:
    s = sorted(lags_ms)
    return {"p99": round(percentile(s, 99), 2), "max": round(s[-1], 2) if s else float("nan")}


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


async def load(target: Target, rate_per_scanner: float, seconds: float, drain_s: float = 15.0) -> LoadResult:
    """Every scanner of `target` scans at `rate_per_scanner` (each scan one write, as a USB-CDC
    scanner delivers it) for `seconds`; then wait for stragglers. One scheduler tick per ms
    writes whatever is due, so the load generator is not 64 tasks' worth of wake-ups."""
    scanners = target.scanners
    period = 1 / rate_per_scanner
    sent: dict[str, int] = {}
    res = LoadResult()
    lag = LoopLagMonitor(lambda s: res.bench_lags_ms.append(s * 1000), interval_s=0.01)
    lag.start()
    cpu0, own0, wall0 = target.proc.cpu_s(), _own_cpu_s(), time.perf_counter()
    start = time.perf_counter()
    due = [start + period * i / len(scanners) for i in range(len(scanners))]  # spread phases
    end = start + seconds
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        for i, s in enumerate(scanners):
            while due[i] <= now and due[i] < end:
                code = next_code()
                t0 = s.write_now((code + "\r").encode())
                if t0 is None:
                    res.not_sent += 1
                else:
                    sent[code] = t0
                due[i] += period
        await asyncio.sleep(max(0.0, min(min(due), end) - time.perf_counter()))
    arrivals = target.client.arrivals
    deadline = time.perf_counter() + drain_s
    while time.perf_counter() < deadline and any(c not in arrivals for c in sent):
        await asyncio.sleep(0.05)
    lag.stop()
    res.wall_s = time.perf_counter() - wall0
    res.cpu_pct = (target.proc.cpu_s() - cpu0) / res.wall_s * 100
    res.bench_cpu_pct = (_own_cpu_s() - own0) / res.wall_s * 100
    res.rss_mb = target.proc.rss_mb()
    res.sent = len(sent)
    res.lost = sum(1 for c in sent if c not in arrivals)
    res.latencies_us = [(arrivals[c] - t0) / 1000 for c, t0 in sent.items() if c in arrivals]
    for c in sent:
        arrivals.pop(c, None)
    return res


async def interleaved_load(targets: Sequence[Target], rate_per_scanner: float, seconds: float,
                           segments: int) -> dict[str, dict[str, Any]]:
    """`seconds` of load per target, cut into `segments` alternating segments; figures merged."""
    merged: dict[str, list[LoadResult]] = {t.name: [] for t in targets}
    for seg in range(segments):
        order = targets if seg % 2 == 0 else list(reversed(targets))
        for t in order:
            merged[t.name].append(await load(t, rate_per_scanner, seconds / segments))
    out: dict[str, dict[str, Any]] = {}
    for name, parts in merged.items():
        total = LoadResult()
        wall = sum(p.wall_s for p in parts)
        for p in parts:
            total.sent += p.sent
            total.not_sent += p.not_sent
            total.lost += p.lost
            total.latencies_us += p.latencies_us
            total.cpu_pct += p.cpu_pct * p.wall_s / wall
            total.bench_cpu_pct += p.bench_cpu_pct * p.wall_s / wall
            total.rss_mb = max(total.rss_mb, p.rss_mb)
            total.bench_lags_ms += p.bench_lags_ms
        total.wall_s = wall
        out[name] = total.summary()
    return out


async def knee(targets: Sequence[Target], rates_per_scanner: Sequence[float], seconds: float,
               limit_us: float = 10_000.0) -> dict[str, Any]:
    """Raise the load step by step (alternating targets at each step) until a target's p99
    passes `limit_us` or it loses a scan; the knee is the first aggregate rate where it did."""
    steps: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    knees: dict[str, float | None] = {t.name: None for t in targets}
    last_ok: dict[str, float | None] = {t.name: None for t in targets}
    for step, rate in enumerate(rates_per_scanner):
        live = [t for t in targets if knees[t.name] is None]
        if not live:
            break
        for t in (live if step % 2 == 0 else list(reversed(live))):
            r = await load(t, rate, seconds)
            summary = {"scans_per_s": rate * len(t.scanners), **r.summary()}
            steps[t.name].append(summary)
            if summary["p99_us"] > limit_us or r.lost or r.not_sent:
                knees[t.name] = rate * len(t.scanners)
            else:
                last_ok[t.name] = rate * len(t.scanners)
    return {"limit_p99_us": limit_us, "knee_scans_per_s": knees, "last_within_limit_scans_per_s": last_ok, "steps": steps,
            "max_tested_scans_per_s": rates_per_scanner[-1] * len(targets[0].scanners)}


async def idle(targets: Sequence[Target], seconds: float) -> dict[str, dict[str, float]]:
    """CPU while every scanner is attached and nobody scans (both targets at once: both idle)."""
    before = {t.name: t.proc.cpu_s() for t in targets}
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    wall = time.perf_counter() - t0
    return {t.name: {"cpu_pct_of_one_core": round((t.proc.cpu_s() - before[t.name]) / wall * 100, 3),
                     "rss_mb": round(t.proc.rss_mb(), 1), "seconds": round(wall, 1)} for t in targets}


async def daemon_histogram(proc: Process, name: str, labels: dict[str, str]) -> dict[str, Any] | None:
    """One histogram of the daemon's own metrics (count, mean, bucket-bound p50/p99)."""
    reply = await request(proc.socket_path, {"cmd": "metrics"})
    metrics = reply.get("metrics", reply)
    for series in metrics.get(name, []):
        if series.get("labels") == labels:
            count_, total = series["count"], series["sum"]
            return {"count": count_, "mean_us": round(total / count_ * 1e6, 1) if count_ else None,
                    "p50_bucket_le_us": series["p50"] * 1e6, "p99_bucket_le_us": series["p99"] * 1e6}
    return None


class MqttSubscriber:
    """A subscriber on the broker for both targets' scan topics; timestamps each message."""

    def __init__(self, host: str, port: int, prefixes: dict[str, str]) -> None:
        self.host, self.port, self.prefixes = host, port, prefixes
        self.arrivals: dict[str, int] = {}
        self.waiters: dict[str, asyncio.Future[int]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait([self._task, ready], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            ready.cancel()
            self._task.result()  # raises why the subscriber could not start
            raise RuntimeError("MQTT subscriber stopped before subscribing")
        if not self._ready.is_set():
            ready.cancel()
            raise TimeoutError(f"MQTT subscriber: not subscribed on {self.host}:{self.port} within 30 s")

    async def _run(self) -> None:
        import json

        import aiomqtt

        async with aiomqtt.Client(self.host, self.port) as client:
            for prefix in self.prefixes.values():
                await client.subscribe(f"{prefix}/scan/#", qos=1)
            self._ready.set()
            async for message in client.messages:
                t = time.perf_counter_ns()
                payload = message.payload
                assert isinstance(payload, bytes)
                if payload.startswith(b"{"):
                    code = json.loads(payload)["code"]
                else:
                    code = payload.rstrip(b"\n").decode()
                self.arrivals.setdefault(code, t)
                waiter = self.waiters.pop(code, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(t)

    def expect(self, code: str) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if code in self.arrivals:
            fut.set_result(self.arrivals[code])
        else:
            self.waiters[code] = fut
        return fut

    async def stop(self) -> None:
        if self._task is not None:
            import aiomqtt

            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):  # going away either way
                await self._task
