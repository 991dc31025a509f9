"""`python -m tests.chaos [--minutes M] [--seed S] [--profile ci|ci-short-ttl|long]` from the repo root."""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: helpers, mqtt_broker

from .rig import ScenarioError, Summary, run_scenario
from .scenario import PROFILES


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    p.add_argument("--minutes", type=float, default=0, help="keep running new seeds for this long (default: one round)")
    p.add_argument("--seed", type=int, help="run exactly this seed (replay)")
    p.add_argument("--profile", choices=sorted(PROFILES), help="default: ci and ci-short-ttl in turn; long with --minutes")
    p.add_argument("--keep", action="store_true", help="keep a failed scenario's directory (daemon log, config)")
    args = p.parse_args(argv)
    if args.profile:
        profiles = [PROFILES[args.profile]]
    else:
        profiles = [PROFILES["long"], PROFILES["ci-short-ttl"]] if args.minutes else [PROFILES["ci"], PROFILES["ci-short-ttl"]]
    seeds = random.Random()
    end = time.monotonic() + args.minutes * 60
    summary = Summary()
    failed: list[str] = []
    round_ = 0
    while True:
        for profile in profiles:
            seed = args.seed if args.seed is not None else seeds.randrange(1 << 31)
            work = Path(tempfile.mkdtemp(prefix="scannerd-chaos-"))
            keep = False
            try:
                verdict, scans, faults, expired, published = run_scenario(work, profile, seed)
                keep = not verdict.ok and args.keep
            except ScenarioError as e:
                keep = args.keep
                failed.append(f"--profile {profile.name} --seed {seed}: {e}")
                summary.scenarios += 1
                summary.lost += 1  # the daemon never reached a state: treat as a loss
                print(f"FAILED --profile {profile.name} --seed {seed}: {e}", flush=True)
                continue
            finally:
                if keep:
                    print(f"kept {work} (the daemon's log is config.log)", flush=True)
                else:
                    shutil.rmtree(work, ignore_errors=True)
            summary.add(verdict, scans, faults, expired, published)
            status = "ok" if verdict.ok else "FAILED"
            print(f"{status} --profile {profile.name} --seed {seed}: {scans} scans, {faults} faults", flush=True)
            if not verdict.ok:
                failed.append(f"--profile {profile.name} --seed {seed}: " + "; ".join(verdict.notes[:10]))
        round_ += 1
        if args.seed is not None or time.monotonic() >= end:
            break
    print(summary.line())
    for f in failed:
        print(f"replay: python -m tests.chaos {f}")
    return 0 if summary.ok and not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
