"""Ledger hot-path benchmark: what counting a scan costs the event loop, against baselines.

    .venv/bin/python bench/bench_ledger.py [--rounds N] [--strict]

`Ledger.on_scan` runs on the event loop for every scan; its disk writes happen on the writer
thread. Its cost is given as ratios to baselines measured in the same run on the same events:
a plain dict increment of the same key, the classifier's `classify` of the code, writing the
scan's JSON line to a Unix socket pair and reading it back (I/O every delivered scan costs
anyway), and — the target's yardstick — what a ledger written on the loop would cost: one
sqlite upsert and commit per scan (WAL, synchronous=NORMAL, as the ledger opens its file).
Target: on_scan ≤ 0.5 × that commit, with the writer thread committing in the background. (On a
warm page cache a WAL commit without fsync is cheap on average; the reason to keep it off the
loop is its tail — checkpoints, a slow or full disk — which no mean shows.)
`--strict` exits 1 above it (for a quiet machine, not CI).
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scannerd.acceptance import Ledger
from scannerd.config import AcceptanceConfig, Config, SiteConfig
from scannerd.model import DeviceInfo, ScanEvent
from scannerd.pipeline import new_event_id
from scannerd.protocol import wall_clock_iso

TARGET_RATIO = 0.5


def events(n: int, rng: random.Random) -> list[ScanEvent]:
    classifier = Config().classifier()
    out = []
    for i in range(n):
        code = "62" + "".join(rng.choice("0123456789") for _ in range(17))
        out.append(
            ScanEvent(
                new_event_id(), wall_clock_iso(), DeviceInfo(f"window-{i % 8}", "serial", "outpatient", "window"),
                code, "qr", classifier.classify(code, "qr"), 10.0, 0, None,
            )
        )
    return out


def per_call_us(fn: Callable[[ScanEvent], object], items: list[ScanEvent], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for e in items:
            fn(e)
        samples.append((time.perf_counter_ns() - t0) / len(items) / 1000)
    return statistics.median(samples)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--strict", action="store_true")
    args = ap.parse_args()
    items = events(2000, random.Random(1))
    classifier = Config().classifier()
    counts: dict[tuple[str, str, str], int] = {}

    def dict_increment(e: ScanEvent) -> object:
        key = (e.ts[:10], e.device.name, e.classification.kind)
        counts[key] = counts.get(key, 0) + 1
        return key

    def classify(e: ScanEvent) -> object:
        return classifier.classify(e.code, e.symbology)

    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    lines = {e.id: (json.dumps({"type": "scan", "id": e.id, "ts": e.ts, "device": e.device.name, "code": e.code}) + "\n").encode() for e in items}

    def socket_line(e: ScanEvent) -> object:
        data = lines[e.id]
        left.sendall(data)
        return right.recv(65536)

    with tempfile.TemporaryDirectory() as d:
        direct = sqlite3.connect(str(Path(d) / "direct.sqlite"), isolation_level=None)
        direct.execute("PRAGMA journal_mode=WAL")
        direct.execute("PRAGMA synchronous=NORMAL")
        direct.execute("CREATE TABLE scans (day TEXT, device TEXT, kind TEXT, count INTEGER, PRIMARY KEY (day, device, kind))")

        def commit_per_scan(e: ScanEvent) -> object:
            direct.execute("BEGIN")
            direct.execute(
                "INSERT INTO scans VALUES (?,?,?,1) ON CONFLICT DO UPDATE SET count = count + 1",
                (e.ts[:10], e.device.name, e.classification.kind),
            )
            return direct.execute("COMMIT")

        base_commit = per_call_us(commit_per_scan, items, max(3, args.rounds // 5))
        direct.close()
        path = str(Path(d) / "ledger.sqlite")
        ledger = Ledger(path, station="bench", site=SiteConfig(), acceptance=AcceptanceConfig(ledger=path, result_ids_max=50_000), flush_interval_s=0.05)
        ledger.start()
        base_dict = per_call_us(dict_increment, items, args.rounds)
        base_classify = per_call_us(classify, items, args.rounds)
        base_socket = per_call_us(socket_line, items, args.rounds)
        on_scan = per_call_us(ledger.on_scan, items, args.rounds)
        ledger.stop()
        written = ledger.status()["flushed_scans"]
    left.close()
    right.close()
    ratio = on_scan / base_commit
    print(f"events: {len(items)} × {args.rounds} rounds; written by the writer thread: {written}")
    print(f"dict increment  {base_dict:8.2f} µs")
    print(f"classify        {base_classify:8.2f} µs")
    print(f"socket line     {base_socket:8.2f} µs")
    print(f"sqlite commit   {base_commit:8.2f} µs   (one upsert + commit per scan, on the loop)")
    print(
        f"Ledger.on_scan  {on_scan:8.2f} µs   = {on_scan / base_dict:5.1f} × dict increment, {on_scan / base_classify:4.1f} × classify,"
        f" {on_scan / base_socket:4.1f} × socket line, {ratio:5.3f} × sqlite commit (target ≤ {TARGET_RATIO:g})"
    )
    return 1 if args.strict and ratio > TARGET_RATIO else 0


if __name__ == "__main__":
    sys.exit(main())
