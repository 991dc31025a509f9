"""`scannerd stats --shapes`: the shapes of codes no rule knows, from the running daemon.

Shapes only (length, character classes, symbology, first two characters of non-numeric
codes), never codes: evidence for writing a site [[rule]]. The table ends with how many 医保码
matched the generation rule (nhsa.ec28.v1) and how many only the generic fallback
(nhsa.candidate): the evidence a site needs to confirm the rule. `--suggest` prints a starting
point for a 医保码 rule, but only from a shape that looks like one (see `why_not_suggested`):
an unknown 1D string such as `zz-1234-5678` gets a reason, not a rule.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from ..client import ClientError, request, resolve_socket_path
from ..config import ConfigError

# Regex pieces per census character class (census.shape_classes); a sketch to narrow by hand.
_CLASS_RE = {
    "digit": "0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "punct": r"!-/:-@\[-`{-~",
    "space": " ",
    "cjk": "\u4e00-\u9fff",
}


FALLBACK_RULE = "nhsa.candidate"
MIN_EVIDENCE = 3
# What a 医保码 text has been seen to be made of: digits (424…0000) or letters and digits.
_MI_CLASSES = frozenset({"digit", "upper", "lower"})
_MI_LENGTHS = range(16, 129)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("stats", help="ask the running daemon for statistics (--shapes: unknown code shapes)")
    p.add_argument("--shapes", action="store_true", help="shapes of unknown and candidate codes (the default)")
    p.add_argument("--socket", help="socket path (default: from the config)")
    p.add_argument("-c", "--config", help="config file, to find the socket path")
    p.add_argument("--json", action="store_true", help="one JSON object per shape")
    p.add_argument("--suggest", action="store_true", help="print a [[rule]] sketch for each shape that looks like a 医保码")
    p.add_argument("--min-count", type=int, default=MIN_EVIDENCE, metavar="N",
                   help=f"suggest only from shapes seen at least N times (default {MIN_EVIDENCE})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        path = resolve_socket_path(args.socket, args.config)
        answer = request(path, {"cmd": "shapes"})
    except (ClientError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not answer.get("ok"):
        print(f"error: the daemon refused: {answer.get('error', answer)}", file=sys.stderr)
        return 1
    shapes: list[dict[str, Any]] = answer.get("shapes", [])
    if args.json:
        for s in shapes:
            print(json.dumps(s, ensure_ascii=False))
        return 0
    print(format_table(shapes))
    summary = medical_insurance_summary(shapes)
    if summary:
        print()
        print(summary)
    if args.suggest:
        n = 0
        for s in shapes:
            print()
            reason = why_not_suggested(s, args.min_count)
            if reason:
                print(f"# {describe(s)}: no rule suggested: {reason}")
                continue
            n += 1
            print(suggest_rule(s, n))
    return 0


def describe(shape: dict[str, Any]) -> str:
    return f"{shape['count']} × length {shape['length']}, {shape.get('classes') or '-'}, symbology {shape.get('symbology') or 'none'}"


def format_table(shapes: list[dict[str, Any]]) -> str:
    if not shapes:
        return "no unknown or candidate codes seen since the daemon started"
    lines = [f"{'count':>7}  {'length':>6}  {'classes':<22} {'symbology':<12} {'head':<6} {'outcome':<28} rule"]
    for s in shapes:
        head = "-" if s.get("head") is None else json.dumps(s["head"], ensure_ascii=False)
        outcome = f"{s['channel']}/{s['kind']}"
        lines.append(
            f"{s['count']:>7}  {s['length']:>6}  {s['classes'] or '-':<22} {s.get('symbology') or '-':<12} "
            f"{head:<6} {outcome:<28} {s.get('rule') or '-'}"
        )
    return "\n".join(lines)


def medical_insurance_summary(shapes: list[dict[str, Any]]) -> str:
    """How many 医保码 each rule took: the generation rule against the generic fallback."""
    by_rule: dict[str, int] = {}
    for s in shapes:
        if s.get("kind") == "medical_insurance":
            rule = str(s.get("rule") or FALLBACK_RULE)
            by_rule[rule] = by_rule.get(rule, 0) + int(s["count"])
    if not by_rule:
        return ""
    total = sum(by_rule.values())
    fallback = by_rule.pop(FALLBACK_RULE, 0)
    parts = [f"{count} matched {rule}" for rule, count in sorted(by_rule.items(), key=lambda kv: -kv[1])]
    parts.append(f"{fallback} only the generic fallback {FALLBACK_RULE}")
    return f"医保码 (medical_insurance) candidates: {total}: " + ", ".join(parts)


def why_not_suggested(shape: dict[str, Any], min_count: int = MIN_EVIDENCE) -> str:
    """Why this shape is no evidence for a 医保码 rule, or "" when it is."""
    rule = shape.get("rule") or (FALLBACK_RULE if shape.get("kind") == "medical_insurance" else "unknown")
    if rule != FALLBACK_RULE:
        if shape.get("kind") == "medical_insurance":
            return f"already matched by {rule}; confirm it with the platform's answers rather than adding another"
        return "matched no rule and is not a 2D code or long enough to be a 医保码 (a HIS number? write its rule from the HIS's format)"
    classes = {c for c in str(shape.get("classes", "")).split("+") if c}
    if not classes or not classes <= _MI_CLASSES:
        return f"characters {shape.get('classes') or '-'}: a 医保码 is letters and digits"
    if int(shape["length"]) not in _MI_LENGTHS:
        return f"length {shape['length']} is outside {_MI_LENGTHS.start}–{_MI_LENGTHS.stop - 1}"
    if int(shape["count"]) < min_count:
        return f"seen {shape['count']} time(s), fewer than {min_count}: not yet evidence"
    return ""


def suggest_rule(shape: dict[str, Any], n: int) -> str:
    """A [[rule]] to start from: same length, same classes, same head. Narrow it before use."""
    classes = [c for c in str(shape.get("classes", "")).split("+") if c]
    char_set = "".join(_CLASS_RE.get(c, "") for c in classes) or "0-9"
    head: str | None = shape.get("head")
    length = int(shape["length"])
    lines = [f"# {describe(shape)}, all medical-insurance candidates"]
    lines.append("[[rule]]")
    lines.append(f'id = "site.shape{n}"')
    lines.append('channel = "nhsa"          # the issuer, once known (e.g. "alipay" for its 医保码)')
    lines.append('kind = "medical_insurance"')
    lines.append('confidence = "candidate"  # until the platform accepts such codes; the census keeps counting it')
    lines.append("priority = 50             # below the default rules: payment codes keep winning")
    if head:
        lines.append(f"prefix = {json.dumps(head, ensure_ascii=False)}")
    lines.append(f"length = {length}")
    if classes == ["digit"]:
        lines.append('charset = "digits"')
    else:
        rest = length - (len(head) if head else 0)
        body = f"[{char_set}]{{{rest}}}" if rest > 0 else ""
        pattern = (re.escape(head) if head else "") + body
        lines.append(f"regex = '{pattern}'")
    lines.append('source = "site census: observed shape; confirm with the issuer"')
    return "\n".join(lines)
