"""The peer: barcode-server's KeyEventReader on scannerd-keys/1 recordings. Runs in the bench's
own venv with barcode-server installed (see decode.py), never in scannerd's.

    python peer_barcode_server.py decode REPS REPEAT FILE…   in-process: each round decodes every
                                                             file REPEAT times; texts, seconds per round
    python peer_barcode_server.py replay FILE         one JSON line per scan, as `scannerd replay --json`

barcode-server reads `input_device.read_loop()`; a recording's events are handed to it through
an object with that one method, as python-evdev InputEvents, so its decoder runs unchanged.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from barcode_server.keyevent_reader import KeyEventReader  # type: ignore[import-not-found,unused-ignore]
from evdev import InputEvent


class RecordedDevice:
    def __init__(self, events: list[InputEvent]) -> None:
        self._it: Iterator[InputEvent] = iter(events)

    def read_loop(self) -> Iterator[InputEvent]:
        return self._it


def load(path: str) -> list[InputEvent]:
    events = []
    with open(path, encoding="utf-8") as fp:
        next(fp)  # the header
        for line in fp:
            if line.strip():
                e = json.loads(line, parse_float=Decimal)
                us = int(e["t"] * 1_000_000)
                events.append(InputEvent(us // 1_000_000, us % 1_000_000, e["type"], e["code"], e["value"]))
    return events


def decode(events: list[InputEvent]) -> list[str]:
    reader, device, out = KeyEventReader(), RecordedDevice(events), []
    while (line := reader.read_line(device)) is not None:
        out.append(line)
    return out


def mask(text: str) -> str:  # the same masking scannerd applies to what it prints
    n = len(text)
    if n <= 4:
        return "*" * n
    if n <= 10:
        return text[:2] + "*" * (n - 4) + text[-2:]
    return text[:4] + "*" * (n - 8) + text[-4:]


def main(argv: list[str]) -> int:
    if argv[0] == "decode":
        reps, repeat, files = int(argv[1]), int(argv[2]), argv[3:]
        streams = {f: load(f) for f in files}
        texts: dict[str, list[str]] = {}
        seconds: list[float] = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(repeat):
                texts = {f: decode(events) for f, events in streams.items()}
            seconds.append(time.perf_counter() - t0)
        result: dict[str, Any] = {"texts": texts, "seconds": seconds}
        print(json.dumps(result, ensure_ascii=False))
        return 0
    if argv[0] == "replay":
        out = sys.stdout
        for text in decode(load(argv[1])):
            out.write(json.dumps({"type": "scan", "text": mask(text), "length": len(text)}, ensure_ascii=False) + "\n")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
