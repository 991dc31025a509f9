"""`scannerd status`: what the running daemon sees (devices, sinks, scans today)."""

from __future__ import annotations

import argparse
import json
import sys

from ..client import ClientError, request, resolve_socket_path
from ..config import ConfigError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("status", help="ask the running daemon for its state")
    p.add_argument("--socket", help="socket path (default: from the config)")
    p.add_argument("-c", "--config", help="config file, to find the socket path")
    p.add_argument("--json", action="store_true")
    p.add_argument("--metrics", action="store_true", help="print the Prometheus metrics text instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        path = resolve_socket_path(args.socket, args.config)
        if args.metrics:
            print(request(path, {"cmd": "metrics", "format": "prometheus"})["text"], end="")
            return 0
        answer = request(path, {"cmd": "status"})
    except (ClientError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, ensure_ascii=False, indent=2))
        return 0
    print(f"scannerd {answer['version']} on {answer['host']}, up {answer['uptime_s']} s, config {answer['config']}")
    print(f"scans today: {answer['scans_today']}")
    for d in answer["devices"]:
        state = "present" if d["present"] else "ABSENT"
        last = "never" if d["last_scan_s_ago"] is None else f"{d['last_scan_s_ago']} s ago"
        print(f"  {d['name']:<16} {d['transport']:<7} {state:<8} {d['path']:<28} {d['area']}/{d['role']} last scan {last}")
    if not answer["devices"]:
        print("  no scanners running (none configured and none detected)")
    for name, s in answer["sinks"].items():
        print(f"  sink {name}: " + " ".join(f"{k}={v}" for k, v in s.items()))
    for name, s in answer.get("listeners", {}).items():  # the WebSocket and metrics ports
        print(f"  {name} {s['listen']}: {s['state']}" + (f" ({s['error']}, retrying)" if s.get("error") else ""))
    ledger = answer.get("acceptance")
    if ledger:
        why = f" ({ledger['error']})" if ledger.get("error") else ""
        print(f"acceptance ledger: {ledger['state']}{why} {ledger['path']}: {ledger['scans']} scans, "
              f"{ledger['results']} results, {ledger['pending']} not yet written")
    return 0
