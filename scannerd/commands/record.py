"""`scannerd record DEVICE -o FILE.jsonl`: the raw key events of a scanner, for the lab.

The device is grabbed (scans do not reach other programs while recording) and every input event
is written with its kernel timestamp in the scannerd-keys/1 format (see sources/recording.py);
`scannerd replay FILE` then reproduces on any machine what the site's scanner did. The file
holds the scanned codes as key strokes: it is created with mode 0600; handle it like the codes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from typing import IO, Any

from ..config import LAYOUTS
from ..sources.evdev_wedge import EvdevLike, open_input_device
from ..sources.keymap import EV_KEY, KEY_PRESS
from ..sources.recording import event_line, header_line
from ._common import add_config_option, resolve_or_exit_code


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("record", help="record a scanner's raw key events to a scannerd-keys/1 file (for replay)",
                       description="Record the raw key events of a keyboard-wedge scanner (grabbed) with kernel "
                                   "timestamps. The file contains the scanned codes: it is written with mode 0600.")
    p.add_argument("device", help="device path (/dev/input/event5, a by-id link) or [[scanner]] name")
    p.add_argument("-o", "--output", required=True, help="output file (.jsonl)")
    add_config_option(p)
    p.add_argument("--no-grab", action="store_true", help="do not grab the device while recording")
    p.add_argument("--layout", choices=LAYOUTS, help="layout to note in the header (default: the scanner entry's, else us)")
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds (default: Ctrl-C)")
    p.set_defaults(func=run)


@dataclass
class RecordStats:
    events: int = 0
    presses: int = 0
    ended: str = "stopped"


def run(args: argparse.Namespace) -> int:
    resolved = resolve_or_exit_code(args)
    if isinstance(resolved, int):
        return resolved
    _config, descs, path, scanner = resolved
    layout = args.layout or scanner.layout
    desc = next((d for d in descs if d.devnode == path), None)
    try:
        dev = open_input_device(path)
    except OSError as e:
        print(f"error: cannot open {path}: {e.strerror or e}", file=sys.stderr)
        return 1
    device_info: dict[str, Any] = {"name": getattr(dev, "name", "") or (desc.name if desc else ""), "path": path}
    if desc is not None:
        device_info.update({"vid": desc.vid, "pid": desc.pid, "by_id": desc.by_id})
    try:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        # O_CREAT's mode applies only to a new file: an existing 0644 one must be closed too,
        # since a recording holds codes as keystrokes.
        os.fchmod(fd, 0o600)
    except OSError as e:
        dev.close()
        print(f"error: cannot write {args.output}: {e.strerror}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(header_line(device_info, layout) + "\n")
        print(f"recording {path} ({'not grabbed' if args.no_grab else 'grabbed'}) → {args.output}; "
              "scan codes, Ctrl-C to stop", file=sys.stderr)
        stats = asyncio.run(record(dev, out, grab=not args.no_grab, duration=args.duration))
    print(f"{stats.events} events, {stats.presses} key presses ({stats.ended})", file=sys.stderr)
    return 0 if stats.ended in ("stopped", "duration") else 1


async def record(dev: EvdevLike, out: IO[str], *, grab: bool = True, duration: float = 0,
                 stop: asyncio.Event | None = None) -> RecordStats:
    """Write every event of `dev` to `out` until stop is set, duration passes or the device goes."""
    loop = asyncio.get_running_loop()
    stats = RecordStats()
    stop = stop or asyncio.Event()
    gone = loop.create_future()
    grabbed = False
    fd = dev.fileno()

    def readable() -> None:
        try:
            events = list(dev.read())
        except BlockingIOError:
            return
        except OSError as e:
            if not gone.done():
                gone.set_result(f"device gone: {e.strerror or e}")
            return
        if not events and not gone.done():
            gone.set_result("end of stream")
        for ev in events:
            out.write(event_line(ev.sec, ev.usec, ev.type, ev.code, ev.value) + "\n")
            stats.events += 1
            stats.presses += ev.type == EV_KEY and ev.value == KEY_PRESS
        out.flush()

    try:
        if grab:
            dev.grab()
            grabbed = True
        loop.add_reader(fd, readable)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stopper = loop.create_task(stop.wait())
        done, _ = await asyncio.wait({stopper, gone}, timeout=duration or None, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if gone in done:
            stats.ended = gone.result()
        elif not done:
            stats.ended = "duration"
    finally:
        loop.remove_reader(fd)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if grabbed:
            with contextlib.suppress(OSError):
                dev.ungrab()
        with contextlib.suppress(OSError):
            dev.close()
    return stats
