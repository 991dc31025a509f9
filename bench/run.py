"""scannerd's end-to-end benchmark: one command, every figure against a baseline of the same run.

    .venv/bin/python bench/run.py [--quick] [--json FILE] [--only SECTION …] [--profile FILE]

Sections (issue 17):
  e2e      pty write → scan at a Unix-socket HIS client, unpaced and paced like 115200 baud,
           scannerd with its default logging vs the bare baseline (bench/baseline.py)
  mqtt     the same through a local mosquitto: to a subscriber, and to PUBACK (daemon's histogram)
  load     16 and 64 pty scanners at 20 scans/s each: CPU % of one core, RSS, lost, p99; the knee
  idle     CPU with 16 scanners attached and no scans
  startup  start-up to READY=1 on a NOTIFY_SOCKET we bind, `scannerd --version`, against
           `python -c "import asyncio"` and `python -c pass`
  decode   recorded key streams through keymap + framer + classifier, in-process, and through
           barcode-server's decoder (its own venv under the cache dir); exact-match counts
  replay   `scannerd replay FILE --json` on a 2000-scan recording vs the peer on the same file

Scannerd and its baseline run in alternating rounds so that noise from the machine falls on
both; read the ratios, not the absolute times, when the machine is shared. Not part of the
test run (tests/test_bench_harness.py runs a small version of it to prove the harness).
--profile FILE also runs the daemon under cProfile with the 64-scanner load and prints its top
entries (a separate daemon: cProfile slows it down, so none of its figures go in the table).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # scannerd from this checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

import decode
import e2e
import startup
from harness import REPO, cache_dir, make_scanners, start_baseline, start_scannerd
from report import render_table

SECTIONS = ("e2e", "mqtt", "load", "idle", "startup", "decode", "replay")


@dataclass(frozen=True)
class Plan:
    scans: int  # per target and pacing, sequential
    rounds: int
    mqtt_scans: int
    load_seconds: float  # per target and level
    load_segments: int
    knee_rates: tuple[float, ...]  # scans/s per scanner, 64 scanners
    knee_seconds: float
    idle_seconds: float
    startup_reps: int
    replay_scans: int
    replay_reps: int
    decode_reps: int


FULL = Plan(scans=2000, rounds=8, mqtt_scans=1000, load_seconds=30, load_segments=3,
            knee_rates=(20, 40, 80, 120, 160, 240), knee_seconds=5, idle_seconds=10, startup_reps=10,
            replay_scans=2000, replay_reps=5, decode_reps=5)
QUICK = Plan(scans=1000, rounds=4, mqtt_scans=300, load_seconds=3, load_segments=1,
             knee_rates=(20, 60, 120), knee_seconds=1.5, idle_seconds=5, startup_reps=3,
             replay_scans=2000, replay_reps=2, decode_reps=2)


async def section_e2e(plan: Plan, tmp: Path) -> dict[str, Any]:
    sd_pty, bare_pty = make_scanners(tmp / "pty", "e2e-sd", 1), make_scanners(tmp / "pty", "e2e-bare", 1)
    sd = start_scannerd(tmp, "e2e-scannerd", sd_pty)
    bare = start_baseline(tmp, "e2e-baseline", bare_pty)
    try:
        targets = [await e2e.Target.attach("scannerd", sd, sd_pty), await e2e.Target.attach("baseline", bare, bare_pty)]
        unpaced = await e2e.sequential(targets, plan.scans, plan.rounds, None)
        paced = await e2e.sequential(targets, plan.scans, plan.rounds, e2e.BAUD)
        lost = {t.name: t.client.rejects for t in targets}
        return {"unpaced": unpaced, "paced_115200": paced, "rejects": lost, "rss_mb": {"scannerd": sd.rss_mb(), "baseline": bare.rss_mb()}}
    finally:
        sd.stop()
        bare.stop()
        for s in sd_pty + bare_pty:
            s.close()


async def section_mqtt(plan: Plan, tmp: Path) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "tests"))  # the tests' way of starting a mosquitto on a free port
    from mqtt_broker import Broker

    broker = Broker(tmp / "mosquitto")
    broker.start()
    sd_pty, bare_pty = make_scanners(tmp / "pty", "mqtt-sd", 1), make_scanners(tmp / "pty", "mqtt-bare", 1)
    prefixes = {"scannerd": "bench-sd", "baseline": "bench-bare"}
    sd = start_scannerd(tmp, "mqtt-scannerd", sd_pty, mqtt=(broker.host, broker.port, prefixes["scannerd"]))
    bare = start_baseline(tmp, "mqtt-baseline", bare_pty, mqtt=(broker.host, broker.port, prefixes["baseline"]))
    sub = e2e.MqttSubscriber(broker.host, broker.port, prefixes)
    try:
        await sub.start()
        # The HIS socket client stays connected too (a site with both), so scans do not queue.
        targets = [await e2e.Target.attach("scannerd", sd, sd_pty), await e2e.Target.attach("baseline", bare, bare_pty)]
        arrival: dict[str, Callable[[str], asyncio.Future[int]]] = {t.name: sub.expect for t in targets}
        for t in targets:  # the first message on each topic path, before timing
            await e2e.scan_once(t.client, t.scanners[0], None, timeout=30, arrival=sub.expect)
        to_subscriber = await e2e.sequential(targets, plan.mqtt_scans, plan.rounds, None, arrival=arrival)
        puback = await e2e.daemon_histogram(sd, "scannerd_delivery_latency_seconds", {"sink": "mqtt"})
        return {"to_subscriber_unpaced": to_subscriber, "scannerd_frame_to_puback": puback,
                "note": "PUBACK figure is the daemon's own histogram (frame complete → PUBACK): mean exact, p50/p99 are bucket bounds"}
    finally:
        await sub.stop()
        sd.stop()
        bare.stop()
        broker.stop()
        for s in sd_pty + bare_pty:
            s.close()


async def section_load(plan: Plan, tmp: Path, do_idle: bool, do_load: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in (16, 64):
        if n == 64 and not do_load:
            break
        sd_pty, bare_pty = make_scanners(tmp / "pty", f"load{n}-sd", n), make_scanners(tmp / "pty", f"load{n}-bare", n)
        sd = start_scannerd(tmp, f"load{n}-scannerd", sd_pty)
        bare = start_baseline(tmp, f"load{n}-baseline", bare_pty)
        try:
            targets = [await e2e.Target.attach("scannerd", sd, sd_pty), await e2e.Target.attach("baseline", bare, bare_pty)]
            if n == 16 and do_idle:
                await asyncio.sleep(1.0)  # let the warm-up's aftermath settle before idling
                out["idle_16"] = await e2e.idle(targets, plan.idle_seconds)
            if do_load:
                out[f"load_{n}x20"] = await e2e.interleaved_load(targets, 20, plan.load_seconds, plan.load_segments)
                if n == 64:
                    out["knee_64"] = await e2e.knee(targets, plan.knee_rates, plan.knee_seconds)
        finally:
            sd.stop()
            bare.stop()
            for s in sd_pty + bare_pty:
                s.close()
    return out


async def profile_daemon(plan: Plan, tmp: Path, path: Path) -> str:
    """The daemon under cProfile (CPU time) through the 64 × 20 scans/s load; its top entries."""
    import pstats

    pty = make_scanners(tmp / "pty", "prof", 64)
    sd = start_scannerd(tmp, "profiled", pty, profile=path)
    try:
        target = await e2e.Target.attach("scannerd", sd, pty)
        await e2e.load(target, 20, max(plan.load_seconds, 10))
    finally:
        sd.stop()
        for s in pty:
            s.close()
    import io

    buf = io.StringIO()
    stats = pstats.Stats(str(path), stream=buf)
    buf.write("cProfile of the daemon, CPU time (time.process_time), 64 scanners × 20 scans/s\n")
    stats.sort_stats("tottime").print_stats(25)
    buf.write("\n--- by cumulative time ---\n")
    stats.sort_stats("cumulative").print_stats(30)
    return buf.getvalue()


async def py_spy_daemon(plan: Plan, tmp: Path, path: Path) -> str:
    """py-spy sampling the (unprofiled) daemon through the 64 × 20 scans/s load: own time per
    function from its collapsed stacks. Unlike cProfile it does not slow every call down."""
    import shutil

    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    pty = make_scanners(tmp / "pty", "spy", 64)
    sd = start_scannerd(tmp, "spied", pty)
    seconds = max(plan.load_seconds, 10)
    try:
        target = await e2e.Target.attach("scannerd", sd, pty)
        recorder = await asyncio.create_subprocess_exec(
            spy, "record", "--pid", str(sd.pid), "--duration", str(int(seconds)), "--rate", "250",
            "--format", "raw", "--output", str(path), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        await e2e.load(target, 20, seconds + 1)
        _, err = await recorder.communicate()
        if recorder.returncode != 0:
            raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-400:]}")
    finally:
        sd.stop()
        for s in pty:
            s.close()
    return collapsed_top(path)


# Innermost frames that mean a thread is waiting, not working (py-spy samples them anyway).
_IDLE_FRAMES = ("EpollSelector.select", "Condition.wait", "_worker (concurrent/futures/thread.py)")


def collapsed_top(path: Path, n: int = 25) -> str:
    """Own samples (the innermost frame) and inclusive samples per function, from collapsed stacks."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_ = line.rpartition(" ")
        # "func (file.py:123)" → "func (file.py)": one row per function, not per line
        frames = [f.rsplit(":", 1)[0] + ")" if f.endswith(")") and ":" in f else f for f in stack.split(";")]
        k = int(count_)
        if frames[-1].startswith(_IDLE_FRAMES):  # waiting (epoll, a thread's condition or queue): not cost
            idle += k
            continue
        total += k
        own[frames[-1]] = own.get(frames[-1], 0) + k
        for f in set(frames):
            incl[f] = incl.get(f, 0) + k
    out = [f"py-spy: {total} busy samples of the daemon under 64 × 20 scans/s ({idle} more waiting in epoll or in idle threads, left out)",
           "own %   incl %  function (% of busy samples)"]
    for f, k in sorted(own.items(), key=lambda kv: -kv[1])[:n]:
        out.append(f"{k / total * 100:5.1f}  {incl[f] / total * 100:6.1f}   {f}")
    return "\n".join(out)


async def gather_sections(plan: Plan, only: set[str], tmp: Path, results: dict[str, Any]) -> None:
    async def guarded(name: str, job: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        t0 = time.perf_counter()
        print(f"… {name}", file=sys.stderr, flush=True)
        try:
            results[name] = await job()
        except Exception as e:  # one broken section must not lose the others' figures
            results[name] = {"error": f"{type(e).__name__}: {e}"}
            print(f"  {name} FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        print(f"  {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    if "e2e" in only:
        await guarded("e2e", lambda: section_e2e(plan, tmp))
    if "mqtt" in only:
        await guarded("mqtt", lambda: section_mqtt(plan, tmp))
    if "load" in only or "idle" in only:
        await guarded("load", lambda: section_load(plan, tmp, "idle" in only, "load" in only))
    if "startup" in only:
        await guarded("startup", lambda: asyncio.to_thread(startup.measure, tmp, plan.startup_reps))
    if "decode" in only:
        await guarded("decode", lambda: asyncio.to_thread(decode.measure_decode, tmp, cache_dir(), plan.decode_reps))
    if "replay" in only:
        await guarded("replay", lambda: asyncio.to_thread(decode.measure_replay, tmp, cache_dir(), plan.replay_scans, plan.replay_reps))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter runs (≤ 60 s in all): a check, not the figures to publish")
    ap.add_argument("--json", type=Path, help="write every figure to this JSON file")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    ap.add_argument("--profile", type=Path, help="also profile the daemon under load (cProfile output file)")
    ap.add_argument("--py-spy", type=Path, help="also sample the daemon under load with py-spy (collapsed stacks file)")
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else FULL
    only = set(args.only or SECTIONS)
    results: dict[str, Any] = {
        "plan": {"name": "quick" if args.quick else "full", **asdict(plan)},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
                    "loadavg_start": os.getloadavg()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scannerd-bench-") as d:
        tmp = Path(d)
        asyncio.run(gather_sections(plan, only, tmp, results))
        if args.profile:
            print("… profile", file=sys.stderr, flush=True)
            results["profile_top"] = asyncio.run(profile_daemon(plan, tmp, args.profile.resolve()))
        if args.py_spy:
            print("… py-spy", file=sys.stderr, flush=True)
            results["py_spy_top"] = asyncio.run(py_spy_daemon(plan, tmp, args.py_spy.resolve()))
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    print(render_table(results))
    for key in ("profile_top", "py_spy_top"):
        if key in results:
            print(results[key])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
