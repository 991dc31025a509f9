"""`scannerd stats --shapes`: the shapes of codes no rule knows, from the running daemon.

Shapes only (length, character classes, symbology, first two characters of non-numeric
codes), never codes: evidence for writing a site [[rule]]. `--suggest` prints a starting
point for such a rule per shape.
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


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("stats", help="ask the running daemon for statistics (--shapes: unknown code shapes)")
    p.add_argument("--shapes", action="store_true", help="shapes of unknown and candidate codes (the default)")
    p.add_argument("--socket", help="socket path (default: from the config)")
    p.add_argument("-c", "--config", help="config file, to find the socket path")
    p.add_argument("--json", action="store_true", help="one JSON object per shape")
    p.add_argument("--suggest", action="store_true", help="print a [[rule]] sketch for each shape")
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
    if args.suggest:
        for i, s in enumerate(shapes, 1):
            print()
            print(suggest_rule(s, i))
    return 0


def format_table(shapes: list[dict[str, Any]]) -> str:
    if not shapes:
        return "no unknown or candidate codes seen since the daemon started"
    lines = [f"{'count':>7}  {'length':>6}  {'classes':<22} {'symbology':<12} {'head':<6} outcome"]
    for s in shapes:
        head = "-" if s.get("head") is None else json.dumps(s["head"], ensure_ascii=False)
        lines.append(
            f"{s['count']:>7}  {s['length']:>6}  {s['classes'] or '-':<22} {s.get('symbology') or '-':<12} "
            f"{head:<6} {s['channel']}/{s['kind']}"
        )
    return "\n".join(lines)


def suggest_rule(shape: dict[str, Any], n: int) -> str:
    """A [[rule]] to start from: same length, same classes, same head. Narrow it before use."""
    classes = [c for c in str(shape.get("classes", "")).split("+") if c]
    char_set = "".join(_CLASS_RE.get(c, "") for c in classes) or "0-9"
    head: str | None = shape.get("head")
    length = int(shape["length"])
    lines = [f"# {shape['count']} × length {length}, {shape.get('classes')}, symbology {shape.get('symbology') or 'none'}"]
    lines.append("[[rule]]")
    lines.append(f'id = "site.shape{n}"')
    lines.append('channel = "nhsa"          # the issuer, once known (e.g. "alipay" for its 医保码)')
    lines.append('kind = "medical_insurance"  # payment | medical_insurance | health_card | other')
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
