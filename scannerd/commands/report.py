"""`scannerd report`: which windows and kiosks in which areas still lack which kind of transaction.

From this station's ledger (the default), from ledger files or directories of them copied from
stations, or from every station's retained counts on the MQTT broker (`--mqtt`). The same
counts give the same report whichever way they came.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import re
import sys
from pathlib import Path

from ..acceptance.counts import StationCounts
from ..acceptance.evidence import EvidenceError, build_evidence
from ..acceptance.fleet import (
    DEFAULT_TOPIC_FILTER,
    FleetCollectError,
    collect_from_broker,
)
from ..acceptance.render import FORMATS, LANGS, render
from ..acceptance.store import LedgerFileError, read_ledger_file
from ..config import MqttConfig
from ._common import add_config_option, config_or_exit_code

LEDGER_SUFFIXES = (".sqlite", ".sqlite3", ".db")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("report", help="acceptance report: scans and HIS results per window and kiosk, per area (验收报告)")
    p.add_argument("ledgers", nargs="*", metavar="LEDGER|DIR", help="ledger files, or directories of them (default: this station's ledger)")
    add_config_option(p)
    p.add_argument("--since", type=_date, help="first day counted, YYYY-MM-DD")
    p.add_argument("--until", type=_date, help="last day counted, YYYY-MM-DD")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--lang", choices=LANGS, default="zh", help="zh (default) or en")
    p.add_argument("-o", "--output", help="write to this file instead of standard output")
    m = p.add_argument_group("fleet over MQTT")
    m.add_argument("--mqtt", metavar="HOST[:PORT]", help="collect every station's counts from this broker")
    m.add_argument("--topic-filter", default=DEFAULT_TOPIC_FILTER, help=f"default {DEFAULT_TOPIC_FILTER}")
    m.add_argument("--username", default="")
    m.add_argument("--password-file", default="", help="file holding the broker password")
    m.add_argument("--tls", action="store_true", help="TLS (port 8883 unless given)")
    m.add_argument("--ca-file", default="")
    m.add_argument("--cert-file", default="")
    m.add_argument("--key-file", default="")
    m.add_argument("--wait", type=float, default=2.0, help="seconds without a new station message before the report is made (default 2)")
    p.set_defaults(func=run)


def _date(text: str) -> str:
    try:
        return datetime.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def ledger_files(paths: list[str]) -> list[str]:
    """The files named, and the ledger files directly inside the directories named."""
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(str(f) for f in Path(p).iterdir() if f.is_file() and f.suffix in LEDGER_SUFFIXES)
            if not found:
                raise LedgerFileError(p, f"no ledger files ({', '.join('*' + s for s in LEDGER_SUFFIXES)}) in this directory")
            out += found
        else:
            out.append(p)
    return out


def mqtt_settings(args: argparse.Namespace) -> MqttConfig:
    match = re.fullmatch(r"\[?([^\[\]]+?)\]?(?::(\d{1,5}))?", args.mqtt)
    if match is None:
        raise ValueError(f"--mqtt: expected HOST or HOST:PORT, got {args.mqtt!r}")
    port = int(match.group(2)) if match.group(2) else (8883 if args.tls else 1883)
    for name in ("password_file", "ca_file", "cert_file", "key_file"):
        value = getattr(args, name)
        if value and not os.path.isfile(value):
            raise ValueError(f"--{name.replace('_', '-')}: expected an existing file, got {value!r}")
    return MqttConfig(
        host=match.group(1),
        port=port,
        username=args.username,
        password_file=args.password_file,
        tls=args.tls,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
    )


def run(args: argparse.Namespace) -> int:
    config = config_or_exit_code(args)
    if isinstance(config, int):
        return config
    since, until = args.since or "", args.until or ""
    if since and until and since > until:
        print(f"error: --since {args.since} is after --until {args.until}", file=sys.stderr)
        return 2
    stations: list[StationCounts] = []
    try:
        if args.mqtt:
            if args.ledgers:
                print("error: give ledger files or --mqtt, not both (the same station would count twice)", file=sys.stderr)
                return 2
            collected = asyncio.run(collect_from_broker(mqtt_settings(args), args.topic_filter, quiet_s=args.wait))
            for skipped in collected.skipped:
                print(f"warning: skipped {skipped}", file=sys.stderr)
            stations = collected.stations
            if not stations:
                print(f"warning: no station counts under {args.topic_filter} on {args.mqtt}", file=sys.stderr)
        else:
            for path in ledger_files(args.ledgers or [config.acceptance.ledger]):
                stations.append(read_ledger_file(path))
        evidence = build_evidence(
            stations,
            config.acceptance,
            config.site,
            since=since,
            until=until,
            generated=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        )
    except (LedgerFileError, FleetCollectError, EvidenceError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    text = render(evidence, args.format, args.lang)
    if args.output:
        # utf-8, not utf-8-sig: the CSV text carries its own BOM.
        Path(args.output).write_text(text, encoding="utf-8", newline="")
    else:
        sys.stdout.buffer.write(text.encode("utf-8"))
        sys.stdout.flush()
    return 0
