"""The chaos suite in CI: a few seeded scenarios against the real daemon, one summary line.

Fixed seeds by default (a CI failure replays exactly: `python -m tests.chaos --profile P --seed S`);
CHAOS_SEEDS=random draws new ones, CHAOS_SEEDS=7,8,9 names them. Longer runs: README, Guarantees.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest

from .rig import ScenarioError, Summary, run_scenario
from .scenario import CI, CI_SHORT_TTL, Profile

FIXED = [(CI, 1), (CI, 2), (CI, 3), (CI_SHORT_TTL, 4), (CI_SHORT_TTL, 5)]


def _runs() -> list[tuple[Profile, int]]:
    wanted = os.environ.get("CHAOS_SEEDS", "")
    if wanted == "random":
        rng = random.Random()
        return [(p, rng.randrange(1 << 31)) for p, _ in FIXED]
    if wanted:
        seeds = [int(s) for s in wanted.split(",")]
        return [(CI if i % 2 == 0 else CI_SHORT_TTL, s) for i, s in enumerate(seeds)]
    return FIXED


def test_chaos_scenarios_lose_duplicate_delay_and_leak_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    summary = Summary()
    failures: list[str] = []
    for profile, seed in _runs():
        replay = f"python -m tests.chaos --profile {profile.name} --seed {seed}"
        # A short directory: pytest's tmp_path would push the socket path past AF_UNIX's 108 bytes.
        work = Path(tempfile.mkdtemp(prefix="scannerd-chaos-"))
        try:
            verdict, scans, faults, expired, published = run_scenario(work, profile, seed)
        except ScenarioError as e:
            summary.scenarios += 1
            summary.lost += 1
            failures.append(f"{replay}  # {e}")
            continue
        finally:
            shutil.rmtree(work, ignore_errors=True)
        summary.add(verdict, scans, faults, expired, published)
        if not verdict.ok:
            failures.append(f"{replay}  # " + "; ".join(verdict.notes[:5]))
    with capsys.disabled():
        print("\n" + summary.line())
        for f in failures:
            print("replay: " + f)
    assert summary.scans > 0 and summary.faults > 0
    assert not failures, "\n".join(failures)
    assert summary.ok
