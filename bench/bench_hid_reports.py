"""HID-POS reassembly benchmark: reports/s through the Reassembler, against bare slicing in the same run.

    .venv/bin/python bench/bench_hid_reports.py [--rounds N] [--scans N]

Each round feeds the same synthetic report stream (64-byte Honeywell-layout reports: payment
codes in one report, 医保码-length codes, and 150-byte codes over three reports) two ways: the
floor, which only slices `report[5:5+count]` and joins while the continued bit is set (nothing
but finding the bytes), and Reassembler.feed, which also checks the layout, reads the AIM id,
decodes, strips and makes Frames. Rounds are interleaved so machine load hits both alike; the
median round is reported as reports/s and as a ratio to the floor. A scanner sends at most a
few hundred reports a second: the ratio says what the checks cost, not whether it keeps up.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from hidpos_fixtures import pos_reports

from scannerd.framing import FramingSpec
from scannerd.sources.hid_descriptor import HONEYWELL
from scannerd.sources.hid_reports import Reassembler


def stream(rng: random.Random, scans: int) -> list[bytes]:
    reports: list[bytes] = []
    for i in range(scans):
        if i % 5 == 4:
            body = "".join(rng.choice("0123456789") for _ in range(150))  # three reports
        elif i % 3 == 2:
            body = "".join(rng.choice("0123456789ABCDEF") for _ in range(40))
        else:
            body = "1" + str(rng.randint(0, 5)) + "".join(rng.choice("0123456789") for _ in range(16))
        reports.extend(pos_reports(body.encode(), aim=b"]Q1"))
    return reports


def run_floor(reports: list[bytes]) -> int:
    n, parts = 0, []
    for r in reports:
        parts.append(r[5: 5 + r[1]])
        if not r[63] & 1:
            b"".join(parts)
            parts = []
            n += 1
    return n


def run_reassembler(reports: list[bytes]) -> int:
    r = Reassembler("bench", HONEYWELL, FramingSpec(max_length=512))
    n = 0
    for t, report in enumerate(reports):
        n += len(r.feed(report, t))
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--scans", type=int, default=20_000)
    args = ap.parse_args()
    reports = stream(random.Random(13), args.scans)
    variants: dict[str, Callable[[list[bytes]], int]] = {"floor (slice + join)": run_floor, "Reassembler.feed": run_reassembler}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            t = time.perf_counter()
            got = fn(reports)
            times[name].append(time.perf_counter() - t)
            assert got == args.scans, (name, got)
    floor = statistics.median(times["floor (slice + join)"])
    print(f"{len(reports)} reports, {args.scans} scans, median of {args.rounds} rounds")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:<22} {len(reports) / med:>12,.0f} reports/s  {med / floor:6.1f}× the floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
