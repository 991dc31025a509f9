"""Serial scanners (RS-232, USB-CDC ttyACM, FTDI ttyUSB) through pyserial, on the event loop.

The port is opened non-blocking and its fd handed to loop.add_reader: no thread, no polling
while open. When the device vanishes (unplug, EIO on a hung-up tty) every complete frame read
so far has already gone out; a partial one becomes a `device_removed` reject. The source then
waits for the path (often a /dev/serial/by-id link) to come back and reopens it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import termios
import time
from typing import TYPE_CHECKING

import serial
import structlog

from ..config import ScannerConfig
from ..framing import FramingSpec
from ..model import DeviceInfo, Frame, Rejected
from .base import FrameSink, Source, SourceRequest, StateSink

if TYPE_CHECKING:
    from ..control.channel import ControlChannel

log = structlog.get_logger("scannerd.serial")

_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD, "M": serial.PARITY_MARK, "S": serial.PARITY_SPACE}
_STOPBITS = {1: serial.STOPBITS_ONE, 1.5: serial.STOPBITS_ONE_POINT_FIVE, 2: serial.STOPBITS_TWO}

# How often to look for a vanished port to come back. Discovery (udev) makes this faster when
# it runs; the timer is what keeps a plain /dev/ttyS0 or a config without discovery working.
REOPEN_INTERVAL_S = 0.25


def with_wire_time(emit: FrameSink, scanner: ScannerConfig) -> FrameSink:
    """A scan that arrived in a single read has no first-to-last time of its own: it took at
    least its characters' time on the wire (start + data + parity + stop bits at the baud
    rate), so that is its scan_ms rather than a misleading 0."""
    bits = 1 + scanner.bytesize + (0 if scanner.parity == "N" else 1) + scanner.stopbits
    char_ns = int(bits * 1e9 / scanner.baudrate)

    def emit_timed(item: Frame | Rejected) -> None:
        if isinstance(item, Frame) and item.last_ns == item.first_ns and len(item.text) > 1:
            # Built directly: dataclasses.replace costs ~10 µs a scan (tests/test_serial.py
            # checks that every other field survives).
            item = Frame(item.device, item.text, item.symbology, item.last_ns - (len(item.text) - 1) * char_ns,
                         item.last_ns, item.completed_ns, item.gaps_ns, item.ended_by, item.injected)
        emit(item)

    return emit_timed


class SerialSource(Source):
    def __init__(
        self,
        device: DeviceInfo,
        spec: FramingSpec,
        emit: FrameSink,
        state: StateSink,
        scanner: ScannerConfig,
        *,
        reopen: bool = True,
        control: ControlChannel | None = None,
    ) -> None:
        super().__init__(device, spec, with_wire_time(emit, scanner), state, encoding=scanner.encoding)
        self.scanner = scanner
        self.reopen = reopen
        # A controlled scanner: commands go out on this fd, replies come out of what it reads.
        self.control = control
        self._port: serial.Serial | None = None
        # The fd registered with loop.add_reader, removed in _close only, before the port closes:
        # once closed, the number may already belong to another scanner's port.
        self._reader_fd: int | None = None
        self.input.pending_input = self._take_waiting
        self._lost: asyncio.Event | None = None
        self._reopen_now = asyncio.Event()
        self._announced_missing = False

    @classmethod
    def from_request(cls, req: SourceRequest) -> SerialSource:
        return cls(req.device, req.spec, req.emit, req.state, req.scanner, reopen=req.reopen, control=req.control)

    @property
    def reopens(self) -> bool:
        return self.reopen

    def poke(self) -> None:
        """Discovery saw the device come back: try to reopen at once."""
        self._reopen_now.set()

    async def run(self) -> None:
        try:
            while True:
                if self._open():
                    await self._read_until_lost()
                elif not self.reopen:
                    return
                if not self.reopen:
                    return  # discovery restarts it when the device comes back
                await self._wait_for_device()
        finally:
            self._close()
            self.input.close()

    def _open(self) -> bool:
        path = self.device.path
        try:
            port = serial.Serial(
                port=None,
                baudrate=self.scanner.baudrate,
                bytesize=self.scanner.bytesize,
                parity=_PARITY[self.scanner.parity],
                stopbits=_STOPBITS[self.scanner.stopbits],
                timeout=0,  # non-blocking reads: the event loop tells us when data is there
                exclusive=True,  # a second reader would steal half of every code
            )
            port.port = path
            port.open()
        except (serial.SerialException, OSError, ValueError) as e:
            if not self._announced_missing:
                log.warning("serial_unavailable", device=self.device.name, path=path, error=str(e))
                self.set_state("absent", str(e))
                self._announced_missing = True
            return False
        self._port = port
        self._announced_missing = False
        log.info("serial_opened", device=self.device.name, path=path, real_path=os.path.realpath(path), baudrate=self.scanner.baudrate)
        self.set_state("present")
        if self.control is not None:
            self.control.attach(port.fileno(), self.input.push_bytes)
        return True

    async def _read_until_lost(self) -> None:
        assert self._port is not None
        lost = asyncio.Event()
        self._lost = lost
        self._reader_fd = self._port.fileno()
        asyncio.get_running_loop().add_reader(self._reader_fd, self._on_readable)
        # Ends when _on_lost closes the port, or by cancellation (run() closes it then).
        await lost.wait()

    def _on_readable(self) -> None:
        port = self._port
        if port is None:
            return
        t_ns = time.monotonic_ns()
        try:
            # pyserial raises SerialException when the fd is readable but read() returns nothing:
            # that is how a hung-up tty (unplugged USB, closed pty master) shows itself.
            data = os.read(port.fileno(), 4096)
            if not data:
                raise serial.SerialException("device disconnected (read returned no data)")
        except (serial.SerialException, OSError) as e:
            self._on_lost(str(e))
            return
        if self.control is not None:
            data = self.control.filter(data, t_ns)  # replies out; what is left is scans
        self.input.push_bytes(data, t_ns)

    def _take_waiting(self) -> bool:
        """Input already in the kernel when the idle gap ran out (the process was not scheduled
        in time): part of the read in progress, not the start of a new one."""
        port = self._port
        if port is None:
            return False
        try:
            waiting = struct.unpack("i", fcntl.ioctl(port.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
            data = os.read(port.fileno(), waiting) if waiting > 0 else b""
        except OSError:
            return False  # the reader callback sees what went wrong
        if not data:
            return False
        t_ns = time.monotonic_ns()
        if self.control is not None:
            data = self.control.filter(data, t_ns)
        # Timed now (the idle gap starts again from here), but part of the read in progress.
        self.input.push_bytes(data, t_ns, continues=True)
        return True

    def _on_lost(self, why: str) -> None:
        log.warning("serial_lost", device=self.device.name, path=self.device.path, why=why)
        self.input.abort("device_removed")
        self._close()
        self.set_state("absent", why)
        self._announced_missing = True
        if self._lost is not None:
            self._lost.set()

    async def _wait_for_device(self) -> None:
        self._reopen_now.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._reopen_now.wait(), REOPEN_INTERVAL_S)

    def _close(self) -> None:
        """The one place the reader is removed: before the fd is closed, never after."""
        fd, self._reader_fd = self._reader_fd, None
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
        port, self._port = self._port, None
        if port is not None and self.control is not None:
            self.control.detach()
        if port is not None:
            with contextlib.suppress(Exception):
                port.close()
