"""`scannerd record DEVICE -o FILE.jsonl`: the raw key events (or HID-POS reports) of a scanner, for the lab.

The device is grabbed (scans do not reach other programs while recording) and every input event
is written with its kernel timestamp in the scannerd-keys/1 format (see sources/recording.py);
`scannerd replay FILE` then reproduces on any machine what the site's scanner did. The file
holds the scanned codes as key strokes: it is created with mode 0600; handle it like the codes.

A HID-POS scanner (a /dev/hidrawN node, or a [[scanner]] entry with transport "hidpos") is
recorded as scannerd-hid/1 instead: its report descriptor, then every report as read.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import IO, Any

from ..config import LAYOUTS
from ..sources.discovery import resolve_device
from ..sources.evdev_wedge import EvdevLike, open_input_device
from ..sources.keymap import EV_KEY, KEY_PRESS
from ..sources.recording import (
    event_line,
    header_line,
    hid_header_line,
    hid_report_line,
)
from ._common import (
    add_config_option,
    config_or_exit_code,
    resolve_or_exit_code,
    udev_descriptions,
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("record", help="record a scanner's raw key events (scannerd-keys/1) or HID-POS reports "
                                      "(scannerd-hid/1) to a file, for replay",
                       description="Record the raw key events of a keyboard-wedge scanner (grabbed) with kernel "
                                   "timestamps, or the report descriptor and reports of a HID-POS scanner (hidraw). "
                                   "The file contains the scanned codes: it is written with mode 0600.")
    p.add_argument("device", help="device path (/dev/input/event5, /dev/hidraw2, a by-id link) or [[scanner]] name")
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


def _is_hid(arg: str) -> bool:
    return os.path.basename(os.path.realpath(arg)).startswith("hidraw")


def run(args: argparse.Namespace) -> int:
    config = config_or_exit_code(args)
    if isinstance(config, int):
        return config
    entry = next((s for s in config.scanners if s.name == args.device), None)
    if _is_hid(args.device) or (entry is not None and entry.transport == "hidpos"):
        descs = udev_descriptions()
        resolved_hid = resolve_device(config, args.device, descs, transport="hidpos")
        if isinstance(resolved_hid, str):
            print(f"error: {resolved_hid}", file=sys.stderr)
            return 2
        hid_desc = next((d for d in descs if d.devnode == resolved_hid[0]), None)
        return run_hid(resolved_hid[0], args, hid_desc)
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


def _create_private(path: str) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing 0644 file is closed too: it will hold codes
    return fd


def run_hid(path: str, args: argparse.Namespace, desc: Any) -> int:
    """Record a hidraw node as scannerd-hid/1 (not grabbed: hidraw readers each get every report)."""
    from ..sources.hidpos import hidraw_descriptor, hidraw_ids

    try:
        dev = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        print(f"error: cannot open {path}: {e.strerror or e}", file=sys.stderr)
        return 1
    try:
        descriptor = hidraw_descriptor(dev)
        _bus, vid, pid = hidraw_ids(dev)
    except OSError as e:
        os.close(dev)
        print(f"error: {path} is not a hidraw node ({e.strerror or e})", file=sys.stderr)
        return 1
    device_info: dict[str, Any] = {"name": desc.name if desc else "", "path": path, "vid": vid, "pid": pid}
    if desc is not None and desc.serial:
        device_info["serial"] = desc.serial
    try:
        fd = _create_private(args.output)
    except OSError as e:
        os.close(dev)
        print(f"error: cannot write {args.output}: {e.strerror}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(hid_header_line(device_info, descriptor) + "\n")
        print(f"recording {path} (HID-POS reports) → {args.output}; scan codes, Ctrl-C to stop", file=sys.stderr)
        stats = asyncio.run(record_hid(dev, out, duration=args.duration))
    print(f"{stats.events} reports ({stats.ended})", file=sys.stderr)
    return 0 if stats.ended in ("stopped", "duration") else 1



async def _until_stopped(loop: asyncio.AbstractEventLoop, stop: asyncio.Event, gone: asyncio.Future[str],
                         duration: float | None) -> str | None:
    """Until Ctrl-C / SIGTERM (None), the device going (its reason) or `duration` seconds
    ("duration"); the signal handlers last only this long."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        stopper = loop.create_task(stop.wait())
        waiters: set[asyncio.Future[Any]] = {stopper, gone}
        done, _ = await asyncio.wait(waiters, timeout=duration or None, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if gone in done:
            return gone.result()
        return None if done else "duration"
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

async def record_hid(fd: int, out: IO[str], *, duration: float = 0, stop: asyncio.Event | None = None) -> RecordStats:
    """Write every report read from `fd` (closed at the end) until stop, duration or the device goes."""
    loop = asyncio.get_running_loop()
    stats = RecordStats()
    stop = stop or asyncio.Event()
    gone: asyncio.Future[str] = loop.create_future()

    def readable() -> None:
        for _ in range(64):
            try:
                report = os.read(fd, 4096)
            except BlockingIOError:
                break
            except OSError as e:
                if not gone.done():
                    gone.set_result(f"device gone: {e.strerror or e}")
                break
            if not report:
                if not gone.done():
                    gone.set_result("device gone: end of file")
                break
            out.write(hid_report_line(time.time_ns(), report) + "\n")
            stats.events += 1
        out.flush()

    try:
        loop.add_reader(fd, readable)
        ended = await _until_stopped(loop, stop, gone, duration)
        if ended:
            stats.ended = ended
    finally:
        loop.remove_reader(fd)
        with contextlib.suppress(OSError):
            os.close(fd)
    return stats


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
        ended = await _until_stopped(loop, stop, gone, duration)
        if ended:
            stats.ended = ended
    finally:
        loop.remove_reader(fd)
        if grabbed:
            with contextlib.suppress(OSError):
                dev.ungrab()
        with contextlib.suppress(OSError):
            dev.close()
    return stats
