"""Run `scannerd ARGS…` under cProfile timed by CPU time (time.process_time), not wall time.

A wall-clock profile of a daemon on a shared machine charges the time it sat preempted to
whatever line it was on (typically the socket send that woke the client up); CPU time shows
what the daemon itself spends.

    python bench/cprofile_daemon.py OUT.prof run -c CONFIG
"""

from __future__ import annotations

import cProfile
import sys
import time

from scannerd.cli import main

if __name__ == "__main__":
    out, args = sys.argv[1], sys.argv[2:]
    profiler = cProfile.Profile(time.process_time)
    try:
        profiler.runcall(main, args)
    finally:
        profiler.dump_stats(out)
