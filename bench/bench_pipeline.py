"""End-to-end delivery cost: frame → classify → pipeline → Unix socket → client, per scan.

Reported as a ratio against a baseline measured in the same run on the same machine: the bare
cost of writing one JSON line to a Unix socket and reading it back on the other side. The
ratio says how much scannerd adds on top of the unavoidable I/O; absolute µs are printed too.

    .venv/bin/python bench/bench_pipeline.py [--scans 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scannerd.census import Census  # noqa: E402
from scannerd.classify import Classifier  # noqa: E402
from scannerd.config import PolicyConfig, SocketConfig  # noqa: E402
from scannerd.metrics import Metrics  # noqa: E402
from scannerd.model import DeviceInfo, Frame  # noqa: E402
from scannerd.pipeline import Pipeline  # noqa: E402
from scannerd.protocol import reply  # noqa: E402
from scannerd.sinks.socket import SocketSink  # noqa: E402

DEVICE = DeviceInfo("window-1", "serial", "outpatient", "window")
LINE = json.dumps({"type": "scan", "id": "01KBX3ABCDEFGHJKMNPQRSTVWX", "code": "134567890123456789", "channel": "wechat"}) + "\n"


async def baseline(path: str, n: int) -> list[float]:
    """Bare Unix-socket round: write one line, read it on the other end."""
    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        server_writer.append(w)

    server_writer: list[asyncio.StreamWriter] = []
    server = await asyncio.start_unix_server(serve, path=path)
    reader, writer = await asyncio.open_unix_connection(path)
    while not server_writer:
        await asyncio.sleep(0.001)
    out = server_writer[0]
    samples = []
    data = LINE.encode()
    for _ in range(n):
        t0 = time.perf_counter_ns()
        out.write(data)
        await reader.readline()
        samples.append((time.perf_counter_ns() - t0) / 1000)
    writer.close()
    server.close()
    return samples


async def scannerd_path(path: str, n: int) -> list[float]:
    async def commands(cmd: dict) -> dict:  # type: ignore[type-arg]
        return reply(cmd["cmd"], True)

    metrics = Metrics()
    sink = SocketSink(SocketConfig(path=path), hostname="bench", metrics=metrics, on_command=commands)
    await sink.start()
    pipeline = Pipeline(PolicyConfig(duplicate_window_ms=0), Classifier.build(), [sink], metrics, Census())
    reader, writer = await asyncio.open_unix_connection(path)
    await reader.readline()  # hello
    samples = []
    for i in range(n):
        code = f"13{i:016d}"
        t0 = time.perf_counter_ns()
        now = time.monotonic_ns()
        pipeline.submit(DEVICE, Frame("window-1", code, "qr", now, now, now))
        await reader.readline()
        samples.append((time.perf_counter_ns() - t0) / 1000)
    writer.close()
    await sink.stop()
    return samples


def summary(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s), s[int(len(s) * 0.99) - 1]


async def main(n: int) -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # no per-scan log I/O in the timing
    with tempfile.TemporaryDirectory() as d:
        base = await baseline(str(Path(d) / "b.sock"), n)
        ours = await scannerd_path(str(Path(d) / "s.sock"), n)
    b50, b99 = summary(base)
    s50, s99 = summary(ours)
    print(f"scans: {n}")
    print(f"baseline  (bare socket line)      p50 {b50:8.1f} µs   p99 {b99:8.1f} µs")
    print(f"scannerd  (classify+policy+send)  p50 {s50:8.1f} µs   p99 {s99:8.1f} µs")
    print(f"ratio p50 {s50 / b50:.2f}x   p99 {s99 / b99:.2f}x   added p50 {s50 - b50:.1f} µs")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--scans", type=int, default=5000)
    asyncio.run(main(ap.parse_args().scans))
