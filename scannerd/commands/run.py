"""`scannerd run`: the daemon in the foreground (systemd runs exactly this)."""

from __future__ import annotations

import argparse

from .. import log
from ..service import run_daemon


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="run the daemon in the foreground")
    p.add_argument("-c", "--config", help="config file (default: /etc/scannerd/config.toml if present, else the embedded default)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["json", "text"], help="default: text on a TTY, JSON otherwise")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    log.configure(args.log_level, None if args.log_format is None else args.log_format == "json")
    return run_daemon(args.config)
