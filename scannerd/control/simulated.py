"""Simulated controlled devices on a real pseudo-terminal, speaking their real protocols.

- SimulatedNewlandBox: a Newland scan box. It parses SET frames by their length fields (not by
  brackets, so it checks the daemon's encoder independently), checks LLLL and the LRC, applies
  SWITCH / AMOUNT / VOICE / LED, answers with its reply frame, and sends a scan either as a
  `DATA=` frame or as the "compatible" box does, code + CR LF.
- SimulatedHoneywellEngine: SYN M CR menu commands answered part by part with ACK, ENQ (unknown
  tag) or NAK (data out of range); SYN T / SYN U triggers; scans as code + CR.

Both can stop answering (`answering = False`) like a hung device. They serve the pty from a
thread so a test's event loop (or `scannerd simulate`) only calls their methods.
"""

from __future__ import annotations

import abc
import os
import re
import select
import termios
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

from .encode import HONEYWELL_MENU, newland_box_frame, xor_lrc


class SimulatedDevice(abc.ABC):
    def __init__(self, link: Path, baud: int = 9600) -> None:
        self.link = link
        self.baud = baud
        self.answering = True
        self.received = bytearray()  # every byte the host wrote, in order
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self.master, self._slave = os.openpty()
        tty.setraw(self.master, when=termios.TCSANOW)
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_suffix(".new")
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(os.ttyname(self._slave))
        os.replace(tmp, link)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"sim-{link.name}", daemon=True)
        self._thread.start()

    def release_slave(self) -> None:
        """Once the daemon has the port open: closing the master then reads as an unplug."""
        if self._slave >= 0:
            os.close(self._slave)
            self._slave = -1

    def write(self, data: bytes) -> None:
        """Write like the device's UART: 10 bits a byte at `baud`, one writer at a time."""
        per_byte = 10 / self.baud
        with self._write_lock:
            start = time.perf_counter()
            for i in range(len(data)):
                if self._closed.is_set():
                    return
                os.write(self.master, data[i : i + 1])
                delay = start + (i + 1) * per_byte - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self.release_slave()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        if self.link.is_symlink():
            self.link.unlink()

    def _serve(self) -> None:
        buf = bytearray()
        while not self._closed.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(self.master, 4096)
            except OSError:
                return
            if not data:
                return
            with self._state_lock:
                self.received += data
            buf += data
            self._on_bytes(buf)

    @abc.abstractmethod
    def _on_bytes(self, buf: bytearray) -> None:
        """Consume what the daemon wrote so far (whole commands are removed from `buf`)."""


# --- Newland scan box -----------------------------------------------------------------------

# Tags whose value is <NNNN><bytes>: parsed by count, so a '>' in a prompt cannot fool it.
_COUNTED_TAGS = (b"VOICE", b"PROMPT", b"PREFIX", b"SUFFIX")
_FIELD = re.compile(rb"<(\d{4})><([A-Z]{3})><(\d{2})><(\d{2})>")

# Reply codes this simulator gives for frames it cannot accept (the SDK only names 00 = success).
BOX_OK, BOX_BAD_LRC, BOX_BAD_LENGTH, BOX_MALFORMED = "00", "01", "02", "03"


@dataclass(frozen=True, slots=True)
class BoxCommand:
    command: str
    serial: int
    tags: tuple[tuple[str, bytes], ...]  # (key, value bytes) in wire order
    status: str  # the reply code the box gave

    def values(self, key: str) -> list[bytes]:
        return [v for k, v in self.tags if k == key]


@dataclass
class BoxState:
    switched_on: bool = False
    amount: str | None = None  # what the display shows, None when off
    spoken: list[str] = field(default_factory=list)  # prompts played (decoded GBK)
    leds: list[str] = field(default_factory=list)


class SimulatedNewlandBox(SimulatedDevice):
    def __init__(self, link: Path, baud: int = 9600) -> None:
        self.commands: list[BoxCommand] = []
        self.state = BoxState()
        self._scan_serial = 0
        super().__init__(link, baud)

    def snapshot(self) -> tuple[list[BoxCommand], BoxState]:
        with self._state_lock:
            return list(self.commands), BoxState(self.state.switched_on, self.state.amount, list(self.state.spoken), list(self.state.leds))

    def scan_framed(self, code: str) -> None:
        """A scan as the framed box sends it: a `DATA=` tag in a reply-shaped frame."""
        self._scan_serial = (self._scan_serial + 1) % 100
        self.write(newland_box_frame("SET", self._scan_serial, [b"DATA=" + code.encode("gbk"), b"00"]))

    def scan_plain(self, code: str) -> None:
        """A scan as the compatible (兼容版) box sends it: the code and CR LF."""
        self.write(code.encode("gbk") + b"\r\n")

    def _on_bytes(self, buf: bytearray) -> None:
        while True:
            start = buf.find(b"<STX>")
            if start < 0:
                del buf[: max(0, len(buf) - 4)]  # keep a possible partial "<STX"
                return
            del buf[:start]
            parsed = _parse_box_frame(bytes(buf))
            if parsed is None:
                return  # incomplete: wait for more bytes
            size, command = parsed
            del buf[:size]
            with self._state_lock:
                self.commands.append(command)
                if command.status == BOX_OK:
                    self._apply(command)
            if self.answering:
                self.write(newland_box_frame(command.command, command.serial, [command.status.encode()]))

    def _apply(self, command: BoxCommand) -> None:
        for key, value in command.tags:
            if key == "SWITCH":
                self.state.switched_on = value == b"ON"
            elif key == "AMOUNT":
                self.state.amount = None if value == b"OFF" else value.decode()
            elif key == "VOICE":
                self.state.spoken.append(value.decode("gbk"))
            elif key == "LED":
                self.state.leds.append(value.decode())


def _parse_box_frame(frame: bytes) -> tuple[int, BoxCommand] | None:
    """(bytes used, command) from a buffer starting with <STX>, or None until it is complete.
    A frame that is complete but wrong comes back with a failure status, never raises."""
    head = _FIELD.match(frame, len(b"<STX>"))
    if head is None:
        if len(frame) < 30 and b"<ETX>" not in frame:
            return None
        end = frame.find(b"<ETX>")
        if end < 0:
            return None
        return end + 9, BoxCommand("SET", 0, (), BOX_MALFORMED)
    length, command, count, serial = int(head[1]), head[2].decode(), int(head[3]), int(head[4])
    pos = head.end()
    tags: list[tuple[str, bytes]] = []
    content = len(command) + 4
    for _ in range(count):
        if frame[pos : pos + 1] == b"":
            return None
        eq = frame.find(b"=", pos)
        if frame[pos : pos + 1] != b"<" or eq < 0:
            return _skip_to_end(frame, command, serial, BOX_MALFORMED)
        key = frame[pos + 1 : eq]
        if key in _COUNTED_TAGS:
            if len(frame) < eq + 5:
                return None
            digits = frame[eq + 1 : eq + 5]
            if not digits.isdigit():
                return _skip_to_end(frame, command, serial, BOX_MALFORMED)
            value_end = eq + 5 + int(digits)
            if len(frame) < value_end + 1:
                return None
            value = frame[eq + 5 : value_end]
            close = value_end
        else:
            close = frame.find(b">", eq)
            if close < 0:
                return None
            value = frame[eq + 1 : close]
        if frame[close : close + 1] != b">":
            return _skip_to_end(frame, command, serial, BOX_MALFORMED)
        tags.append((key.decode(errors="replace"), value))
        content += close - pos - 1
        pos = close + 1
    if len(frame) < pos + 9:
        return None
    if frame[pos : pos + 5] != b"<ETX>" or not re.fullmatch(rb"<[0-9A-F]{2}>", frame[pos + 5 : pos + 9]):
        return _skip_to_end(frame, command, serial, BOX_MALFORMED)
    size = pos + 9
    status = BOX_OK
    if int(frame[pos + 6 : pos + 8], 16) != xor_lrc(frame[: pos + 5]):
        status = BOX_BAD_LRC
    elif length != content:
        status = BOX_BAD_LENGTH
    return size, BoxCommand(command, serial, tuple(tags), status)


def _skip_to_end(frame: bytes, command: str, serial: int, status: str) -> tuple[int, BoxCommand] | None:
    end = frame.find(b"<ETX>")
    if end < 0 or len(frame) < end + 9:
        return None
    return end + 9, BoxCommand(command, serial, (), status)


# --- Honeywell-style engine -----------------------------------------------------------------

ACK, ENQ, NAK = b"\x06", b"\x05", b"\x15"

# Tag → accepted data, as a real engine's menu knows them (a subset).
_HONEYWELL_MENU: dict[str, re.Pattern[str]] = {
    "TRGMOD": re.compile(r"[0-9]"),
    "TRGSTO": re.compile(r"\d{1,6}"),
    "MNUENA": re.compile(r"[01]"),
}


@dataclass
class EngineState:
    trigger_mode: str = "0"
    menu_codes: bool = True
    triggered: bool = False
    permanent_writes: int = 0  # commands that ended in '.' (this package must never send one)
    commands: list[str] = field(default_factory=list)


class SimulatedHoneywellEngine(SimulatedDevice):
    def __init__(self, link: Path, baud: int = 9600) -> None:
        self.state = EngineState()
        super().__init__(link, baud)

    def scan(self, code: str) -> None:
        self.write(code.encode() + b"\r")

    def snapshot(self) -> EngineState:
        with self._state_lock:
            s = self.state
            return EngineState(s.trigger_mode, s.menu_codes, s.triggered, s.permanent_writes, list(s.commands))

    def _on_bytes(self, buf: bytearray) -> None:
        while True:
            start = buf.find(b"\x16")
            if start < 0:
                buf.clear()
                return
            del buf[:start]
            if len(buf) < 3:
                return
            if bytes(buf[:3]) in (b"\x16T\r", b"\x16U\r"):
                with self._state_lock:
                    self.state.triggered = buf[1:2] == b"T"
                del buf[:3]
                continue
            if not buf.startswith(HONEYWELL_MENU):
                del buf[:1]
                continue
            end = next((i for i in range(3, len(buf)) if buf[i] in b"!."), -1)
            if end < 0:
                return
            body, storage = bytes(buf[3:end]).decode(errors="replace"), bytes(buf[end : end + 1])
            del buf[: end + 1]
            reply = self._menu(body, storage)
            if self.answering:
                self.write(reply)

    def _menu(self, body: str, storage: bytes) -> bytes:
        out = bytearray()
        parts = re.split(r"([,;])", body)
        with self._state_lock:
            self.state.commands.append(body + storage.decode())
            if storage == b".":
                self.state.permanent_writes += 1
            for part in parts:
                if part in (",", ";"):
                    out += part.encode()
                    continue
                tag, data = part[:6], part[6:]
                rule = _HONEYWELL_MENU.get(tag)
                if rule is None:
                    status = ENQ
                elif not rule.fullmatch(data):
                    status = NAK
                else:
                    status = ACK
                    if tag == "TRGMOD":
                        self.state.trigger_mode = data
                    elif tag == "MNUENA":
                        self.state.menu_codes = data == "1"
                out += part.encode() + status
        return bytes(out + storage)


def demo_box_config(directory: Path, link: Path, voice: str = "请出示医保码或付款码") -> str:
    return f"""# Written by `scannerd simulate --box newland`: a kiosk with a simulated Newland scan box.
[site]
area = "outpatient"

[socket]
path = "{directory / 'scannerd.sock'}"

[control]
kiosk_voice = "{voice}"

[[scanner]]
name = "sim-kiosk-1"
transport = "serial"
path = "{link}"
baudrate = 9600
role = "kiosk"
terminator = "CRLF"
control = "newland-box"
lock_setup_codes = false
"""
