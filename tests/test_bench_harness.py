"""bench/run.py's harness on a small run: 50 scans through scannerd and through the bare
baseline, real ptys and sockets, nothing lost. No time is asserted (speed is bench/'s job)."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import REPO

sys.path.insert(0, str(REPO / "bench"))

import decode
import e2e
import harness
import run as bench_run
from report import render_table

TINY = replace(bench_run.QUICK, scans=50, rounds=2)


async def test_fifty_scans_each_way_arrive_and_are_timed(tmp_path: Path) -> None:
    result = await bench_run.section_e2e(TINY, tmp_path)
    for mode in ("unpaced", "paced_115200"):
        for target in ("scannerd", "baseline"):
            s = result[mode][target]
            assert s["n"] == 50 and s["lost"] == 0
            assert 0 < s["p50_us"] <= s["p90_us"] <= s["p99_us"] <= s["max_us"]
    assert result["rejects"] == {"scannerd": 0, "baseline": 0}


async def test_load_counts_every_scan_and_loses_none(tmp_path: Path) -> None:
    sd_pty = harness.make_scanners(tmp_path / "pty", "sd", 2)
    bare_pty = harness.make_scanners(tmp_path / "pty", "bare", 2)
    sd = harness.start_scannerd(tmp_path, "sd", sd_pty)
    bare = harness.start_baseline(tmp_path, "bare", bare_pty)
    try:
        targets = [await e2e.Target.attach("scannerd", sd, sd_pty), await e2e.Target.attach("baseline", bare, bare_pty)]
        out = await e2e.interleaved_load(targets, rate_per_scanner=25, seconds=1.0, segments=2)
    finally:
        sd.stop()
        bare.stop()
        for s in sd_pty + bare_pty:
            s.close()
    for name in ("scannerd", "baseline"):
        r = out[name]
        assert r["sent"] >= 40, r  # 2 scanners × 25/s × 1 s, give or take the last tick
        assert r["lost"] == 0 and r["not_sent"] == 0, r
        assert r["n"] == r["sent"]
        assert r["rss_mb"] > 0 and r["cpu_pct_of_one_core"] >= 0


async def test_a_scan_the_reader_never_delivers_counts_as_lost(tmp_path: Path) -> None:
    """The loss count can fail: a baseline whose client is gone gets scans that never arrive."""
    pty = harness.make_scanners(tmp_path / "pty", "bare", 1)
    bare = harness.start_baseline(tmp_path, "bare", pty)
    try:
        target = await e2e.Target.attach("baseline", bare, pty)
        target.client.close()
        await asyncio.wait_for(target.client.closed, 10)
        r = await e2e.load(target, rate_per_scanner=20, seconds=0.5, drain_s=0.5)
    finally:
        bare.stop()
        pty[0].close()
    assert r.sent > 0 and r.lost == r.sent


async def test_a_sequential_scan_that_never_arrives_is_lost_not_a_crash(tmp_path: Path) -> None:
    pty = harness.make_scanners(tmp_path / "pty", "bare", 1)
    bare = harness.start_baseline(tmp_path, "bare", pty)
    try:
        target = await e2e.Target.attach("baseline", bare, pty)
        target.client.close()
        await asyncio.wait_for(target.client.closed, 10)
        out = await e2e.sequential([target], scans=3, rounds=1, baud=None, scan_timeout=0.3)
    finally:
        bare.stop()
        pty[0].close()
    assert out["baseline"]["lost"] == 3 and out["baseline"]["n"] == 0


def test_decode_section_is_exact_on_every_recording(tmp_path: Path) -> None:
    out = decode.measure_decode(tmp_path, tmp_path / "cache", reps=1, digit_scans=50, use_peer=False, fixture_repeat=1)
    assert out["digits"]["scannerd"]["exact"] == out["digits"]["scannerd"]["of"] == 50
    fixtures = out["fixtures"]["scannerd"]
    assert fixtures["exact"] == fixtures["of"] and fixtures["wrong"] == 0
    assert fixtures["recordings_exact"] == len(decode.FIXTURES)


def test_replay_section_counts_what_scannerd_replay_prints(tmp_path: Path) -> None:
    out = decode.measure_replay(tmp_path, tmp_path / "cache", scans=50, reps=1, use_peer=False)
    assert out["scannerd"]["events"] == 50 and out["scannerd"]["exact_masked"] == 50


def test_exact_counts_in_order_and_counts_garbage() -> None:
    assert decode.exact(("a", "b"), ["a", "b"]) == (2, 0)
    assert decode.exact(("a", "b"), ["a", "x", "b"]) == (2, 1)
    assert decode.exact(("a", "b"), ["b", "a"]) == (1, 1)
    assert decode.exact((), ["numlock1"]) == (0, 1)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert harness.percentile(values, 50) == 50
    assert harness.percentile(values, 99) == 99
    assert harness.percentile(values, 100) == 100
    assert harness.percentile([7.0], 99) == 7


def test_bench_codes_are_unique_and_classify_as_payment_codes() -> None:
    from scannerd.classify import Classifier

    codes = {harness.bench_code(n) for n in range(10_000)}
    assert len(codes) == 10_000
    c = Classifier.build().classify(harness.bench_code(123))
    assert c.kind == "payment" and not c.reject_reason


def test_the_table_shows_a_failed_section_instead_of_hiding_it() -> None:
    table = render_table({"e2e": {"error": "RuntimeError: daemon did not start"}, "machine": {}, "plan": {}})
    assert "e2e: FAILED" in table and "daemon did not start" in table


@pytest.mark.parametrize("plan", [bench_run.QUICK, bench_run.FULL])
def test_plans_ask_for_what_the_issue_asks(plan: bench_run.Plan) -> None:
    assert plan.replay_scans >= 2000
    if plan is bench_run.FULL:
        assert plan.scans >= 2000 and plan.load_seconds >= 30 and plan.idle_seconds >= 10
