"""Framer benchmark: scans/s framing whole serial reads, against a bare `str.split` in the same run.

    .venv/bin/python bench/bench_framer.py [--rounds N] [--scans N]

Each round frames the same synthetic stream (payment codes and 医保码-like strings, CR-terminated,
AIM-prefixed, in serial-sized reads of 1–64 scans) three ways: `str.split("\\r")` over each read
(the floor: nothing but finding terminators), Framer.feed with one call per read (how the serial
source feeds it), and Framer.feed_char per character (the old per-character path, still the API
replay uses). Rounds are interleaved so machine load hits every variant alike; the median round
is reported, as scans/s and as a ratio to the str.split baseline.
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

from scannerd.framing import Framer, FramingSpec


def stream(rng: random.Random, scans: int) -> list[str]:
    """Serial reads: scans joined with CR, cut into reads at scan boundaries (never real data)."""
    codes = []
    for i in range(scans):
        if i % 3 == 2:
            body = "".join(rng.choice("0123456789ABCDEF") for _ in range(40))  # 医保码-like length
        else:
            body = "1" + str(rng.randint(0, 5)) + "".join(rng.choice("0123456789") for _ in range(16))
        codes.append("]Q1" + body + "\r")
    reads, i = [], 0
    while i < len(codes):
        n = rng.randint(1, 64)
        reads.append("".join(codes[i : i + n]))
        i += n
    return reads


def run_split(reads: list[str]) -> int:
    n = 0
    for chunk in reads:
        n += len(chunk.split("\r")) - 1
    return n


def run_feed(reads: list[str]) -> int:
    framer = Framer("bench", FramingSpec(terminator="\r"))
    n = 0
    for t, chunk in enumerate(reads):
        n += len(framer.feed(chunk, t))
    return n


def run_feed_char(reads: list[str]) -> int:
    framer = Framer("bench", FramingSpec(terminator="\r"))
    n = 0
    for t, chunk in enumerate(reads):
        for ch in chunk:
            n += len(framer.feed_char(ch, t))
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--scans", type=int, default=20_000)
    args = ap.parse_args()
    reads = stream(random.Random(17), args.scans)
    variants: dict[str, Callable[[list[str]], int]] = {
        "str.split (baseline)": run_split,
        "Framer.feed per read": run_feed,
        "Framer.feed_char per char": run_feed_char,
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            count = fn(reads)
            seconds[name].append(time.perf_counter() - t0)
            if count != args.scans:
                print(f"{name}: framed {count} scans, expected {args.scans}", file=sys.stderr)
                return 1
    base = statistics.median(seconds["str.split (baseline)"])
    print(f"{args.scans} scans in {len(reads)} reads, median of {args.rounds} interleaved rounds")
    print(f"{'variant':<28} {'scans/s':>12} {'µs/scan':>9} {'× baseline time':>16}")
    for name, runs in seconds.items():
        med = statistics.median(runs)
        print(f"{name:<28} {args.scans / med:>12,.0f} {med / args.scans * 1e6:>9.2f} {med / base:>16.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
