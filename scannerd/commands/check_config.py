"""`scannerd check-config`: validate a config file (and its site rules) without running."""

from __future__ import annotations

import argparse
import sys

from ..config import ConfigError, load_config
from ._common import add_config_option


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("check-config", help="validate a config file and exit (2 when invalid)")
    add_config_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        # The strict rule check (the overlap search) runs here, not at every daemon start.
        config = load_config(args.config, search_overlaps=True)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{config.source}: ok")
    print(f"  site: area={config.site.area} hospital={config.site.hospital or '-'} {config.site.hospital_name}")
    print(f"  socket: {config.socket.path} mode={oct(config.socket.mode)} group={config.socket.group or '-'}")
    print(f"  policy: payment_ttl_s={config.policy.payment_ttl_s:g} duplicate_window_ms={config.policy.duplicate_window_ms}")
    if not config.scanners:
        print("  scanners: none configured: auto-detect known scanner vendors")
    for s in config.scanners:
        where = s.path or s.by_id or s.usb or s.match_name
        control = f" control={s.control}{' (setup codes locked)' if s.lock_setup_codes else ''}" if s.control else ""
        print(f"  scanner {s.name}: {s.transport} {where} role={s.role} area={config.scanner_area(s)} terminator={s.terminator}{control}")
    if config.mqtt is not None:
        print(f"  mqtt: {config.mqtt.host}:{config.mqtt.port} tls={'on' if config.mqtt.tls else 'off'}")
    clf = config.classifier()
    print(f"  site rules: {len(config.rules)}; {len(clf.rules)} rules active, no two at one priority overlap")
    return 0
