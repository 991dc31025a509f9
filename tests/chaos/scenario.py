"""Seeded scenarios: what happens, in which order. The same seed gives the same scenario.

A scenario is a list of steps; `rig.Rig` carries them out against the real daemon. Targets that
depend on the state at the time (which client stalls, which scanner is plugged in) are chosen by
the rig from an RNG seeded from the same seed, so a replay takes the same decisions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .codes import KINDS


@dataclass(frozen=True)
class Profile:
    name: str
    scanners: int = 3
    steps: int = 160
    fault_rate: float = 0.18
    # Generous TTLs (the daemon's maximum for payment codes) make "late" a correctness check,
    # not a race with a loaded machine; short_ttl runs one outage long enough for scans to
    # expire, and checks that none of them is ever handed over.
    payment_ttl_s: float = 600.0
    other_ttl_s: float = 600.0
    short_ttl: bool = False
    mqtt: bool = True
    # Far above a loaded machine's scheduling hiccups: no scan is cut by the idle gap unless
    # the scenario means it.
    idle_gap_ms: int = 2000


CI = Profile("ci")
CI_SHORT_TTL = Profile("ci-short-ttl", steps=100, payment_ttl_s=3.0, other_ttl_s=3.0, short_ttl=True, mqtt=False)
LONG = Profile("long", scanners=4, steps=400, fault_rate=0.2)
PROFILES = {p.name: p for p in (CI, CI_SHORT_TTL, LONG)}

# Faults and client churn, with their relative weights.
FAULTS: dict[str, int] = {
    "his_connect": 3,
    "his_ack_connect": 3,
    "his_stall": 3,
    "his_resume": 3,
    "his_drop_unacked": 3,  # an acking HIS stops acking, takes a few scans, and vanishes
    "his_leave": 2,
    "monitor_connect": 2,
    "monitor_leave": 2,
    "unplug_mid_scan": 3,
    "replug": 4,
    "broker_stop": 1,
    "broker_start": 2,
    "sighup_valid": 2,
    "sighup_invalid": 2,
    "garbage": 4,
    "outage": 1,
}


@dataclass(frozen=True)
class Step:
    action: str
    kind: str = ""  # scan: which code generator
    split: bool = False  # scan: written in two pieces, cut inside a multibyte character
    pause_ms: int = 0  # before the step


def generate(seed: int, profile: Profile) -> list[Step]:
    rng = random.Random(seed)
    faults = [f for f in FAULTS if profile.mqtt or not f.startswith("broker")]
    weights = [FAULTS[f] for f in faults]
    steps: list[Step] = []
    for _ in range(profile.steps):
        pause = rng.choice([0, 0, 0, 1, 2, 5, 10, 20])
        if rng.random() < profile.fault_rate:
            steps.append(Step(rng.choices(faults, weights)[0], pause_ms=pause))
        else:
            kind = rng.choice(list(KINDS))
            steps.append(Step("scan", kind=kind, split=kind == "prescription" and rng.random() < 0.7, pause_ms=pause))
    if profile.short_ttl:
        # One outage in the middle, long enough for what was scanned during it to expire.
        steps.insert(len(steps) // 2, Step("outage"))
    return steps
