"""`scannerd classify CODE…`: how the daemon would classify a code, and why (--explain).

For technicians asking "why did this route there". Codes are masked in every line unless
--show; give `-` to read codes from stdin, which keeps payment codes out of the shell history
and out of `ps`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator

from ..classify import Classifier, RuleError
from ..config import ConfigError, load_config
from ..framing import parse_aim
from ..model import mask


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "classify",
        help="classify codes with the default and site rules (one JSON line each)",
        description="Classify codes as the daemon would. Codes are masked unless --show.",
    )
    p.add_argument("codes", nargs="*", metavar="CODE", help="code text; '-' reads one code per line from stdin")
    p.add_argument("-c", "--config", help="config file with site [[rule]]s (default: /etc/scannerd/config.toml if present)")
    p.add_argument("-s", "--symbology", help="symbology the scanner reported (qr, code128, ean13 …); default none")
    p.add_argument("--aim", action="store_true", help="codes start with an AIM id (]Q1 …): take the symbology from it")
    p.add_argument("--explain", action="store_true", help="print the winning rule, its source and the near misses")
    p.add_argument("--show", action="store_true", help="print codes in full (payment codes are bearer tokens: careful)")
    p.add_argument("--rules", action="store_true", help="list the effective rules (defaults + site) and exit")
    p.set_defaults(func=run)


def _codes(args: argparse.Namespace) -> Iterator[str]:
    for code in args.codes:
        if code == "-":
            for line in sys.stdin:
                line = line.rstrip("\r\n")
                if line:
                    yield line
        else:
            yield code


def run(args: argparse.Namespace) -> int:
    try:
        clf = load_config(args.config).classifier()
    except (ConfigError, RuleError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.rules:
        _print_rules(clf)
        return 0
    if not args.codes:
        print("error: give at least one CODE (or - to read from stdin)", file=sys.stderr)
        return 2
    for raw in _codes(args):
        symbology, text = args.symbology, raw
        if args.aim:
            aim_sym, text = parse_aim(raw)
            symbology = aim_sym or symbology
        c = clf.classify(text, symbology)
        shown = text if args.show else mask(text)
        if args.explain:
            print(f"{shown}  ({len(text)} characters)")
            for line in clf.explain(text, symbology):
                print(line)
            print()
            continue
        out: dict[str, object] = {
            "masked": mask(text),
            "channel": c.channel,
            "kind": c.kind,
            "rule": c.rule,
            "confidence": c.confidence,
            "symbology": symbology,
        }
        if c.reject_reason:
            out["reject"] = c.reject_reason
        if args.show:
            out["code"] = text
        print(json.dumps(out, ensure_ascii=False))
    return 0


def _print_rules(clf: Classifier) -> None:
    for r in clf.rules:
        flag = f" REJECT {r.reject}" if r.reject else ""
        print(f"{r.priority:>5}  {r.id:<20} {r.channel}/{r.kind} [{r.confidence}, {r.origin}]{flag}")
        print(f"       {r.describe()}")
        print(f"       source: {r.source}")
    for r in clf.disabled:
        print(f"  off  {r.id:<20} {r.channel}/{r.kind} [{r.confidence}, {r.origin}] disabled ({r.describe()})")
    o = clf.options
    state = "on" if o["candidates"] else "off"
    print(
        f"medical-insurance candidates {state}: printable, length {o['candidate_min_length']}–{o['candidate_max_length']}, "
        f"symbology in {', '.join(o['candidate_symbologies'])}, or none given and length ≥ {o['candidate_min_length_without_symbology']}"
    )
