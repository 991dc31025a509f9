"""`scannerd replay FILE.jsonl`: run a key-event recording through keymap → framer → classifier.

Reproduces a site's problem in the lab: try another --layout, another terminator or idle gap,
or the shared-keyboard filter, and see what the daemon would have emitted. Codes are masked
unless --show.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any

from ..config import (
    LAYOUTS,
    TERMINATOR_NAMES,
    ScannerConfig,
)
from ..model import Frame, mask
from ..sources.human import max_gap_ms, median_gap_ms
from ..sources.recording import (
    HidRecording,
    RecordingError,
    ReplayItem,
    read_any_recording,
    replay,
    replay_hid,
)
from ._common import config_or_exit_code


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("replay", help="run a key-event or HID-POS recording through keymap/reassembly, framer and classifier",
                       description="Replay a scannerd-keys/1 or scannerd-hid/1 recording (told apart by its header) and "
                                   "print the events the daemon would emit. Codes are masked unless --show.")
    p.add_argument("file", help="recording (.jsonl) written by `scannerd record`")
    p.add_argument("-c", "--config", help="config file: site rules, and the --scanner entry's settings")
    p.add_argument("--scanner", help="take terminator, idle gap, layout, alt_numpad, shared_keyboard from this [[scanner]]")
    p.add_argument("--layout", choices=LAYOUTS, help="keyboard layout (default: the recording's)")
    p.add_argument("--terminator", choices=TERMINATOR_NAMES,
                   help="frame terminator (default auto: CR, LF, CRLF or TAB, whichever the scanner sent)")
    p.add_argument("--idle-gap-ms", type=int, help="idle gap that ends a read (default 200, as for a keyboard-wedge scanner)")
    p.add_argument("--alt-numpad", action="store_true", help="decode Alt+keypad character codes")
    p.add_argument("--shared-keyboard", action="store_true", help="apply the scanner-vs-human burst filter")
    p.add_argument("--json", action="store_true", help="one JSON object per event")
    p.add_argument("--show", action="store_true", help="print codes in full (payment codes are bearer tokens: careful)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = config_or_exit_code(args)
    if isinstance(config, int):
        return config
    try:
        rec = read_any_recording(args.file)
    except (OSError, RecordingError, UnicodeDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if isinstance(rec, HidRecording):
        return _replay_hid(rec, args, config)
    scanner = _scanner(args, config, ScannerConfig(name="replay", transport="evdev",
                                                   layout=rec.layout if rec.layout in LAYOUTS else "us"))
    if scanner is None:
        return 2
    overrides: dict[str, Any] = {}
    if args.layout:
        overrides["layout"] = args.layout
    if args.terminator:
        overrides["terminator"] = args.terminator
    if args.idle_gap_ms is not None:
        overrides["idle_gap_ms"] = args.idle_gap_ms
    if args.alt_numpad:
        overrides["alt_numpad"] = True
    if args.shared_keyboard:
        overrides["shared_keyboard"] = True
    scanner = replace(scanner, **overrides)
    if scanner.layout not in LAYOUTS:
        print(f"error: recording layout {scanner.layout!r} is unknown; give --layout", file=sys.stderr)
        return 2
    from ..service import framing_spec

    results = replay(rec, framing_spec(scanner), layout=scanner.layout, device=scanner.name,
                     alt_numpad=scanner.alt_numpad, shared_keyboard=scanner.shared_keyboard,
                     human_max_median_gap_ms=scanner.human_max_median_gap_ms, human_min_chars=scanner.human_min_chars)
    classifier = config.classifier()  # validated when the config was read
    for r in results:
        row = to_row(r, classifier, show=args.show)
        print(json.dumps(row, ensure_ascii=False) if args.json else render(row))
    if not args.json:
        print(f"{len(results)} event(s) from {len(rec.events)} input events, layout {scanner.layout}", file=sys.stderr)
    return 0


def _scanner(args: argparse.Namespace, config: Any, default: ScannerConfig) -> ScannerConfig | None:
    """The [[scanner]] entry `--scanner` names (None, with the error printed, if there is none),
    else `default`."""
    if not args.scanner:
        return default
    entry: ScannerConfig | None = next((s for s in config.scanners if s.name == args.scanner), None)
    if entry is None:
        print(f"error: no [[scanner]] named {args.scanner!r} in {config.source}", file=sys.stderr)
    return entry


def _replay_hid(rec: HidRecording, args: argparse.Namespace, config: Any) -> int:
    """A scannerd-hid/1 recording: the reports through the recorded descriptor's layout."""
    scanner = _scanner(args, config, ScannerConfig(name="replay", transport="hidpos"))
    if scanner is None:
        return 2
    overrides: dict[str, Any] = {}
    if args.terminator:
        overrides["terminator"] = args.terminator
    if args.idle_gap_ms is not None:
        overrides["idle_gap_ms"] = args.idle_gap_ms
    scanner = replace(scanner, **overrides)
    from ..service import framing_spec

    results, layout = replay_hid(rec, framing_spec(scanner), device=scanner.name, encoding=scanner.encoding)
    classifier = config.classifier()
    for r in results:
        row = to_row(r, classifier, show=args.show)
        print(json.dumps(row, ensure_ascii=False) if args.json else render(row))
    if not args.json:
        print(f"{len(results)} event(s) from {len(rec.reports)} HID-POS reports; layout: {layout}", file=sys.stderr)
    return 0


def to_row(r: ReplayItem, classifier: Any, *, show: bool) -> dict[str, Any]:
    """The printed form of one replay result: type, text (masked unless show), channel, kind, reason…"""
    item = r.item
    text = item.text if show else mask(item.text)
    if not isinstance(item, Frame):
        return {"type": "reject", "text": text, "channel": None, "kind": None, "reason": item.reason,
                "notes": sorted(r.notes)}
    row: dict[str, Any] = {"type": "scan", "text": text, "channel": None, "kind": None, "reason": None}
    if classifier is not None:
        c = classifier.classify(item.text, item.symbology)
        row.update(channel=c.channel, kind=c.kind, rule=c.rule)
        if c.reject_reason:
            row.update(type="reject", reason=c.reject_reason)
    median, worst = median_gap_ms(item.gaps_ns), max_gap_ms(item.gaps_ns)
    row.update(symbology=item.symbology, length=len(item.text), scan_ms=round(item.scan_ms, 3),
               median_gap_ms=None if median is None else round(median, 3),
               max_gap_ms=None if worst is None else round(worst, 3), ended_by=item.ended_by, notes=sorted(r.notes))
    return row


def render(row: dict[str, Any]) -> str:
    notes = f"  notes: {', '.join(row['notes'])}" if row.get("notes") else ""
    if row["type"] == "reject" and row["channel"] is None:
        return f"reject  {row['reason']:<16} {row['text']!r}{notes}"
    what = f"{row['channel']}/{row['kind']}" if row["channel"] else "scan"
    extra = f"  REJECTED: {row['reason']}" if row["type"] == "reject" else ""
    timing = f"{row['length']} chars, {row['scan_ms']:.1f} ms, max gap {row['max_gap_ms'] or 0:.1f} ms, {row['ended_by']}"
    return f"{what:<28} {row['text']!r}  ({timing}){extra}{notes}"
