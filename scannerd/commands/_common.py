"""What several commands share: the -c option, config loading with exit code 2, udev listing."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..config import Config, ConfigError, ScannerConfig, load_config


def add_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="config file (default: /etc/scannerd/config.toml if present)")


def config_or_exit_code(args: argparse.Namespace) -> Config | int:
    """The config, or 2 after printing the error (file, key, expected) to stderr."""
    try:
        return load_config(args.config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def resolve_or_exit_code(args: argparse.Namespace) -> tuple[Config, list[Any], str, ScannerConfig] | int:
    """Config, udev devices, and the device `args.device` names (a path, a by-id link or a
    [[scanner]] name) with its scanner entry; or the exit code after printing why not."""
    from ..sources.discovery import resolve_device

    config = config_or_exit_code(args)
    if isinstance(config, int):
        return config
    descs = udev_descriptions()
    resolved = resolve_device(config, args.device, descs)
    if isinstance(resolved, str):
        print(f"error: {resolved}", file=sys.stderr)
        return 2
    path, scanner = resolved
    return config, descs, path, scanner


def udev_descriptions() -> list[Any]:
    """Input and tty devices as discovery sees them; empty where there is no udev."""
    try:
        import pyudev

        from ..sources.discovery import list_descriptions

        return list_descriptions(pyudev.Context())
    except Exception:  # no udev/sysfs (containers): an explicit device path still works
        return []
