"""`scannerd listen`: a small HIS-side client that prints events as they arrive."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..client import ClientError, events, resolve_socket_path
from ..config import ConfigError
from ..model import mask


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("listen", help="print the daemon's events as an HIS would receive them")
    p.add_argument("--socket", help="socket path (default: from the config)")
    p.add_argument("-c", "--config", help="config file, to find the socket path")
    p.add_argument("--json", action="store_true", help="one JSON line per event, exactly as sent")
    p.add_argument("--show", action="store_true",
                   help="full codes (asks for show_codes: root or the daemon's user only); masked otherwise")
    p.add_argument("--device", action="append", help="only this device (repeatable)")
    p.set_defaults(func=run)


def describe(event: dict[str, Any]) -> str:
    kind = event.get("type")
    if kind == "scan":
        lat = event.get("latency", {})
        extra = " injected" if event.get("injected") else ""
        return (
            f"{event.get('ts', '')[11:23]} scan   {event['device']:<12} {event['channel']:<10} {event['kind']:<17} "
            f"{event.get('masked') or mask(event.get('code', ''))}  rule={event['rule']} scan={lat.get('scan_ms')}ms pipeline={lat.get('pipeline_us')}µs{extra}"
        )
    if kind == "reject":
        return f"{event.get('ts', '')[11:23]} reject {event['device']:<12} {event['reason']:<28} {event.get('masked', '')}"
    if kind == "device":
        return f"             device {event['device']:<12} {event['state']} {event.get('reason', '')}".rstrip()
    return json.dumps(event, ensure_ascii=False)


def run(args: argparse.Namespace) -> int:
    try:
        path = resolve_socket_path(args.socket, args.config)
        if not args.json:
            print(f"listening on {path} (Ctrl-C to stop)", file=sys.stderr)
        for event in events(path, args.device, show_codes=args.show):
            if args.json:
                print(json.dumps(event, ensure_ascii=False), flush=True)
            elif event.get("type") != "hello":
                print(describe(event), flush=True)
    except (ClientError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
