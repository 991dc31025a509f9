"""`scannerd simulate`: a scanner on a pseudo-terminal feeding sample codes (no hardware needed)."""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from ..model import mask
from ..simulator import SimulatedScanner, demo_config, sample_scans


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("simulate", help="simulate a serial scanner on a pty feeding sample codes (try scannerd without hardware)")
    p.add_argument("--dir", default=f"/tmp/scannerd-sim-{os.geteuid()}", help="where the pty link, config and socket go")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between scans")
    p.add_argument("--count", type=int, default=0, help="stop after this many scans (0: run until Ctrl-C)")
    p.add_argument("--with-daemon", action="store_true", help="also run `scannerd run` on the generated config")
    p.add_argument("--seed", type=int, help="repeatable sample codes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / "scanner"
    scanner = SimulatedScanner(link)
    config = directory / "config.toml"
    config.write_text(demo_config(directory, link))
    daemon = None
    if args.with_daemon:
        daemon = subprocess.Popen([sys.executable, "-m", "scannerd", "run", "-c", str(config)])
    print(f"simulated scanner: {link} -> {os.readlink(link)}", file=sys.stderr)
    print(f"config:            {config}", file=sys.stderr)
    if daemon is None:
        print(f"start the daemon:  scannerd run -c {config}", file=sys.stderr)
    print(f"watch the events:  scannerd listen --socket {directory / 'scannerd.sock'}", file=sys.stderr)
    rng = random.Random(args.seed)
    sent = 0
    try:
        time.sleep(1.0)  # give the daemon time to open the port
        for label, text in sample_scans(rng):
            if args.count and sent >= args.count:
                break
            shown = text if label == "garbage read" else mask(text)
            print(f"scan {sent + 1}: {label:<34} {shown!r}", file=sys.stderr)
            scanner.send(text)
            sent += 1
            time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    finally:
        scanner.close()
        if daemon is not None:
            daemon.terminate()
            daemon.wait(10)
    return 0
