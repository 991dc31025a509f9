"""A ledger writer SIGKILLed mid-stream: the file reopens whole, with every committed batch."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from scannerd.acceptance import Ledger
from scannerd.config import AcceptanceConfig, SiteConfig

from helpers import REPO, wait_for

# Feeds scans on many devices at 2500 a second (far above any station, so batches are big; a
# loop that never pauses only measures how unfair the GIL is to the writer thread), printing
# how many it has fed and how many the writer has committed, until killed.
CHILD = textwrap.dedent(
    """
    import random, sys, time
    from scannerd.acceptance import Ledger
    from scannerd.config import AcceptanceConfig, SiteConfig
    from acceptance_data import unionpay_scan

    path = sys.argv[1]
    ledger = Ledger(path, station="crash", site=SiteConfig(), acceptance=AcceptanceConfig(ledger=path, result_ids_max=1_000_000),
                    flush_interval_s=0.05)
    ledger.start()
    rng = random.Random()
    fed = 0
    while True:
        for _ in range(50):
            ledger.on_scan(unionpay_scan(rng, device=f"window-{rng.randrange(200)}"))
            fed += 1
        print(fed, ledger.status()["flushed_scans"], flush=True)
        time.sleep(0.02)
    """
)


def _stored(path: Path) -> tuple[int, int, str]:
    with sqlite3.connect(path) as conn:
        scans = int(conn.execute("SELECT coalesce(sum(count), 0) FROM scans").fetchone()[0])
        ids = int(conn.execute("SELECT count(*) FROM recent_scans").fetchone()[0])
        check = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    return scans, ids, check


def test_sigkill_mid_batch_then_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    before = 0
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, env=env, cwd=REPO, text=True)
        assert proc.stdout is not None
        committed = 0
        try:
            # Kill once the writer has committed a good many batches and is busy with more.
            while committed < 3000:
                line = proc.stdout.readline()
                assert line, f"child ended early with {proc.wait()}"
                committed = int(line.split()[1])
        finally:
            proc.send_signal(signal.SIGKILL)
            rest = proc.stdout.read().split("\n")
            proc.wait()
        last_fed = int([r for r in rest if r.strip()][-1].split()[0]) if any(r.strip() for r in rest) else int(line.split()[0])
        assert proc.returncode == -signal.SIGKILL

        scans, ids, check = _stored(path)
        assert check == "ok", f"round {round_}: {check}"
        # Each scan adds one count and one id in the same transaction: equal unless a batch was torn.
        assert scans == ids, f"round {round_}: {scans} counts but {ids} ids"
        gained = scans - before
        # Everything the writer reported committed survived; nothing appeared that was never fed.
        assert committed <= gained <= last_fed + 50, (round_, committed, gained, last_fed)
        before = scans

    # And a new daemon's ledger opens it and counts on from there.
    ledger = Ledger(str(path), station="crash", site=SiteConfig(), acceptance=AcceptanceConfig(ledger=str(path)), flush_interval_s=0.05)
    ledger.start()
    wait_for(lambda: ledger.status()["state"] == "ok", timeout=20)
    assert sum(t.count for t in ledger.snapshot().scans.values()) == before
    ledger.stop()
