"""Command-line front: `scannerd <command>`. Each command lives in scannerd/commands/<name>.py.

Commands are imported lazily: `scannerd --version` imports no command at all and
`scannerd run` imports only run.py (and what it needs), so start-up pays for one command, not
for every command's dependencies. Adding a command is one line in COMMANDS.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:  # argparse is imported only when a parser is built (not for --version)
    import argparse

# CLI name → "module:function" that adds the command's subparser (register(subparsers)).
# The order is the order in `scannerd --help`: what a technician reaches for first.
COMMANDS: dict[str, str] = {
    "run": "scannerd.commands.run:register",
    "demo": "scannerd.commands.demo:register",
    "listen": "scannerd.commands.listen:register",
    "status": "scannerd.commands.status:register",
    "devices": "scannerd.commands.devices:register",
    "test": "scannerd.commands.test:register",
    "inject": "scannerd.commands.inject:register",
    "classify": "scannerd.commands.classify:register",
    "check-config": "scannerd.commands.check_config:register",
    "stats": "scannerd.commands.stats:register",
    "report": "scannerd.commands.report:register",
    "record": "scannerd.commands.record:register",
    "replay": "scannerd.commands.replay:register",
    "install": "scannerd.commands.install:register",
    "simulate": "scannerd.commands.simulate:register",
}

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], Any]


def load_register(target: str) -> Register:
    """The register function `target` ("module:function") names, imported now."""
    import importlib

    module_name, _, func_name = target.partition(":")
    func: Register = getattr(importlib.import_module(module_name), func_name)
    return func


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command, or with just `only` (its module alone is imported)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="scannerd",
        description="Payment and medical-insurance code scanners → classified events for the HIS.",
    )
    parser.add_argument("--version", action="version", version=f"scannerd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, target in COMMANDS.items():
        if only is None or name == only:
            load_register(target)(sub)
    return parser


def command_named(argv: Sequence[str]) -> str | None:
    """The command argv asks for, when it names a known one before anything that needs the full
    parser (the top level has no options that take a value, so the first word is the command)."""
    for arg in argv:
        if arg.startswith("-"):
            if arg in ("-h", "--help", "--version"):
                return None  # full help lists every command; --version needs none (see main)
            continue
        return arg if arg in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in and args_in[0] == "--version":  # the cheapest answer: no parser, no command
        print(f"scannerd {__version__}")
        return 0
    parser = build_parser(only=command_named(args_in))
    args = parser.parse_args(args_in)
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
