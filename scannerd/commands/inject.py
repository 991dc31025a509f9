"""`scannerd inject`: push a synthetic scan through the running daemon (marked injected)."""

from __future__ import annotations

import argparse
import json
import sys

from ..client import ClientError, request, resolve_socket_path
from ..config import ConfigError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("inject", help='send a synthetic scan through the daemon\'s pipeline ("injected": true)')
    p.add_argument("--device", required=True, help="device name the scan appears to come from")
    p.add_argument("--symbology", help="e.g. qr, code128, ean13")
    p.add_argument("--socket", help="socket path (default: from the config)")
    p.add_argument("-c", "--config", help="config file, to find the socket path")
    p.add_argument("code", nargs="+", help="the code text(s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    status = 0
    try:
        path = resolve_socket_path(args.socket, args.config)
        for code in args.code:
            cmd = {"cmd": "inject", "device": args.device, "code": code}
            if args.symbology:
                cmd["symbology"] = args.symbology
            answer = request(path, cmd)
            print(json.dumps(answer.get("event") or answer, ensure_ascii=False))
            if not answer.get("ok"):
                status = 1
    except (ClientError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return status
