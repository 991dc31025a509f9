"""Start-up: `scannerd run` to READY=1 (on a NOTIFY_SOCKET we bind) and `scannerd --version`,
each against `python -c "import asyncio"` and `python -c pass`, in alternating rounds."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from harness import REPO, child_env, make_scanners, scannerd_command, start_scannerd


def wall_s(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, timeout=120, env=child_env())
    return time.perf_counter() - t0


def measure(tmp: Path, reps: int) -> dict[str, Any]:
    scanners = make_scanners(tmp / "pty", "startup", 1)
    runs: dict[str, list[float]] = {"python_pass": [], "python_import_asyncio": [], "scannerd_version": [], "scannerd_ready": []}
    try:
        for i in range(-1, reps):  # round -1 warms the bytecode and page caches, untimed
            jobs: list[tuple[str, Callable[[], float]]] = [
                ("python_pass", partial(wall_s, [sys.executable, "-c", "pass"])),
                ("python_import_asyncio", partial(wall_s, [sys.executable, "-c", "import asyncio"])),
                ("scannerd_version", partial(wall_s, [*scannerd_command(), "--version"])),
                ("scannerd_ready", partial(_ready_s, tmp, scanners, i + 1)),
            ]
            for name, job in jobs if i % 2 == 0 else list(reversed(jobs)):
                seconds = job()
                if i >= 0:
                    runs[name].append(seconds)
    finally:
        for s in scanners:
            s.close()
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "median_ms": {k: round(v * 1000, 1) for k, v in med.items()},
        "ready_vs_import_asyncio": round(med["scannerd_ready"] / med["python_import_asyncio"], 2),
        "version_vs_pass": round(med["scannerd_version"] / med["python_pass"], 2),
        "reps": reps,
        "config": "one serial scanner on a pty, socket, default rules and logging",
    }


def _ready_s(tmp: Path, scanners: list[Any], i: int) -> float:
    proc = start_scannerd(tmp, f"startup-{i}", scanners)
    proc.stop()
    return proc.startup_s
