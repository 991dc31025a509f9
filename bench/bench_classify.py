"""Classifier hot-path benchmark: µs per code, per kind of code, against baselines from the same run.

    .venv/bin/python bench/bench_classify.py [--rounds N] [--strict]

Budget (issue 3): ≤ 20 µs per code on this machine. Absolute numbers vary with the machine and
its load, so each figure is also given as a ratio to two baselines measured in the same run on
the same inputs: a plain dict lookup and one `re.fullmatch` of the WeChat pattern. `--strict`
exits 1 when the worst category exceeds the budget (for a person at a quiet machine, not CI).
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scannerd.census import Census
from scannerd.classify import Classifier, _gs1_digit, _id_check_char
from scannerd.rules import overlap

BUDGET_US = 20.0


def corpus(rng: random.Random) -> dict[str, list[tuple[str, str | None]]]:
    """Synthetic codes per category (random digits with the right shape; never real data)."""

    def d(n: int) -> str:
        return "".join(rng.choice("0123456789") for _ in range(n))

    def idn() -> str:
        body = "110105" + f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}" + d(3)
        return body + _id_check_char(body)

    def ean() -> str:
        body = "690" + d(9)
        return body + _gs1_digit(body)

    alnum = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    n = 200
    return {
        "wechat": [(rng.choice(["10", "11", "12", "13", "14", "15"]) + d(16), None) for _ in range(n)],
        "alipay": [(rng.choice(["25", "28", "30"]) + d(rng.randint(14, 22)), "qr") for _ in range(n)],
        "unionpay": [("62" + d(17), None) for _ in range(n)],
        "id_number": [(idn(), None) for _ in range(n)],
        "ean13": [(ean(), "ean13") for _ in range(n)],
        "health_card": [("".join(rng.choice("0123456789ABCDEF") for _ in range(64)) + ":1", "qr") for _ in range(n)],
        "receive": [("HTTPS://QR.ALIPAY.COM/FKX" + "".join(rng.choice(alnum) for _ in range(15)), "qr") for _ in range(n)],
        "candidate_qr": [("".join(rng.choice(alnum) for _ in range(rng.randint(20, 120))), "qr") for _ in range(n)],
        "unknown_1d": [(d(rng.randint(6, 12)), "code128") for _ in range(n)],
        "long_garbage": [("".join(rng.choice(alnum + "/:.,") for _ in range(500)), None) for _ in range(n)],
    }


def per_call_us(fn: Callable[[str, str | None], object], items: list[tuple[str, str | None]], rounds: int) -> float:
    """Median over rounds of the mean time per call (µs)."""
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for text, sym in items:
            fn(text, sym)
        samples.append((time.perf_counter_ns() - t0) / len(items) / 1000)
    return statistics.median(samples)


def site_rules(n: int) -> list[dict[str, object]]:
    """n regex-only HIS rules at one priority: the worst case for the overlap search."""
    return [{"id": f"his.r{i}", "channel": "his", "kind": "other", "regex": rf"H{i:03d}[0-9A-Z]{{8,12}}", "priority": 150} for i in range(n)]


def build_ms(rules: list[dict[str, object]], search_overlaps: bool, rounds: int = 5) -> float:
    samples = []
    for _ in range(rounds):
        overlap.clear_cache()  # a cold search, as one check-config run does
        t0 = time.perf_counter()
        Classifier.build(rules, search_overlaps=search_overlaps)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def print_build_times() -> None:
    """What start and SIGHUP cost the loop (daemon build) against check-config's strict build."""
    print(f"{'build (ms, median)':<22} {'daemon':>8} {'check-config':>13} {'ratio':>7}")
    for n in (0, 20, 60):
        rules = site_rules(n)
        daemon, strict = build_ms(rules, False), build_ms(rules, True)
        print(f"{f'defaults + {n} site rules':<22} {daemon:>8.1f} {strict:>13.1f} {strict / daemon:>6.0f}×")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--strict", action="store_true", help="exit 1 when over budget")
    args = ap.parse_args()

    clf = Classifier.build()

    cats = corpus(random.Random(1))
    everything = [x for items in cats.values() for x in items]
    table: dict[str, int] = {text: i for i, (text, _) in enumerate(everything)}
    wechat_re = re.compile(r"1[0-5]\d{16}")

    def dict_lookup(text: str, sym: str | None) -> object:
        return table.get(text)

    def one_regex(text: str, sym: str | None) -> object:
        return wechat_re.fullmatch(text)

    census = Census()

    def classify_and_census(text: str, sym: str | None) -> object:
        c = clf.classify(text, sym)
        if c.channel == "unknown" or c.confidence == "candidate":
            census.observe(text, sym, c)
        return c

    base_dict = per_call_us(dict_lookup, everything, args.rounds)
    base_re = per_call_us(one_regex, everything, args.rounds)
    print_build_times()
    print(f"baselines on the same {len(everything)} codes: dict lookup {base_dict:.3f} µs, re.fullmatch(one pattern) {base_re:.3f} µs")
    print(f"{'category':<14} {'µs/code':>8} {'× dict':>8} {'× regex':>8}")
    worst = 0.0
    for name, items in cats.items():
        us = per_call_us(clf.classify, items, args.rounds)
        worst = max(worst, us)
        print(f"{name:<14} {us:>8.3f} {us / base_dict:>8.1f} {us / base_re:>8.1f}")
    mixed = per_call_us(clf.classify, everything, args.rounds)
    with_census = per_call_us(classify_and_census, everything, max(5, args.rounds // 5))
    print(f"{'mixed':<14} {mixed:>8.3f} {mixed / base_dict:>8.1f} {mixed / base_re:>8.1f}")
    print(f"{'mixed+census':<14} {with_census:>8.3f} {with_census / base_dict:>8.1f} {with_census / base_re:>8.1f}")
    verdict = "within" if worst <= BUDGET_US else "OVER"
    print(f"worst category {worst:.3f} µs: {verdict} the {BUDGET_US:.0f} µs budget ({BUDGET_US / worst:.0f}× headroom)")
    return 1 if args.strict and worst > BUDGET_US else 0


if __name__ == "__main__":
    raise SystemExit(main())
