"""What a control profile adds to reading: the reply demultiplexer in front of the framer.

A controlled scanner's every read goes through its profile's demultiplexer before the framer.
Reported as a ratio against a baseline measured in the same run: the framer alone on the same
scan bytes. The stream is what a serial port delivers: scans as code + CR LF in reads of a
few bytes, with reply frames (Newland box) or echoes (Honeywell) between them.

    .venv/bin/python bench/bench_control.py [--scans 5000]
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

from scannerd.control import encode
from scannerd.control.replies import Demux, HoneywellDemux, NewlandBoxDemux
from scannerd.framing import Framer, FramingSpec


def stream(scans: int, reply: Callable[[int], bytes], rng: random.Random) -> tuple[list[bytes], list[bytes]]:
    """(reads of scans only, reads of the same scans with a reply after each) in 1–16 byte reads."""
    plain, mixed = b"", b""
    for i in range(scans):
        code = b"13" + b"%016d" % rng.randrange(10**16) + b"\r\n"
        plain += code
        mixed += code + reply(i)

    def chop(data: bytes) -> list[bytes]:
        out, pos = [], 0
        while pos < len(data):
            n = rng.randint(1, 16)
            out.append(data[pos : pos + n])
            pos += n
        return out

    return chop(plain), chop(mixed)


def run_framer(reads: list[bytes]) -> tuple[float, int]:
    framer = Framer("bench", FramingSpec(terminator="\r\n"))
    t0 = time.perf_counter_ns()
    frames = 0
    for i, data in enumerate(reads):
        frames += len(framer.feed(data.decode("ascii"), i))
    return (time.perf_counter_ns() - t0) / 1e3, frames


def run_demux_framer(reads: list[bytes], demux: Demux, expect: bool) -> tuple[float, int]:
    framer = Framer("bench", FramingSpec(terminator="\r\n"))
    t0 = time.perf_counter_ns()
    frames = 0
    for i, data in enumerate(reads):
        if expect:
            demux.expect()
        out = demux.feed(data)
        frames += len(framer.feed(out.passthrough.decode("ascii"), i))
    return (time.perf_counter_ns() - t0) / 1e3, frames


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scans", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(1)
    cases: list[tuple[str, Callable[[int], bytes], Callable[[], Demux], bool]] = [
        ("newland-box", lambda i: encode.newland_box_frame("SET", i % 100, [b"00"]), NewlandBoxDemux, False),
        ("honeywell", lambda i: b"TRGMOD3\x06!", HoneywellDemux, True),
    ]
    for name, reply, make, expect in cases:
        plain, mixed = stream(args.scans, reply, rng)
        base, quiet, busy = [], [], []
        for _ in range(args.rounds):
            t, n = run_framer(plain)
            assert n == args.scans
            base.append(t)
            t, n = run_demux_framer(plain, make(), False)  # no command outstanding
            assert n == args.scans, (name, n)
            quiet.append(t)
            t, n = run_demux_framer(mixed, make(), expect)
            assert n == args.scans, (name, n)  # every scan once, no reply became a frame
            busy.append(t)
        b, q, c = statistics.median(base), statistics.median(quiet), statistics.median(busy)
        per = args.scans
        print(f"{name:12} framer alone {b / per:6.2f} µs/scan | + demux {q / per:6.2f} µs/scan (ratio {q / b:4.2f})"
              f" | + demux, a reply after every scan {c / per:6.2f} µs/scan (ratio {c / b:4.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
