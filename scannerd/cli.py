"""Command-line front: `scannerd <command>`. Each command lives in scannerd/commands/<name>.py."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import __version__, commands

# Order in `scannerd --help`: what a technician reaches for first.
_ORDER = ["run", "demo", "listen", "status", "devices", "test", "inject", "classify", "check_config", "stats", "report", "record", "replay", "install"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scannerd",
        description="Payment and medical-insurance code scanners → classified events for the HIS.",
    )
    parser.add_argument("--version", action="version", version=f"scannerd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = [m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")]
    names.sort(key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))
    for name in names:
        module = importlib.import_module(f"{commands.__name__}.{name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `scannerd listen | head`
        return 0
