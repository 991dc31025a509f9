"""The control side of one serial device: writes commands on the source's fd without blocking
the event loop, and takes replies out of what the source reads before its framer sees them.

The serial source owns the fd; it calls `attach(fd, passthrough)` when the port opens,
`filter(data, t_ns)` on every read (the bytes it returns go to the framer) and `detach()` when
the port goes away. Scans the device sends as frames (`DATA=`) go to the source's frame sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from ..framing import FramingSpec, clean, rejection_reason
from ..model import Frame, Rejected
from .profile import Profile
from .replies import DataScan, Demuxed, Garbage, Reply

log = structlog.get_logger("scannerd.control")

FrameSink = Callable[[Frame | Rejected], None]
Passthrough = Callable[[bytes, int], None]

# Commands are a few dozen bytes; a device that stops reading must not grow this without end.
MAX_PENDING_WRITE = 4096


class ChannelListener(Protocol):
    def attached(self) -> None: ...
    def detached(self) -> None: ...
    def reply(self, reply: Reply) -> None: ...


class ControlChannel:
    def __init__(self, device: str, profile: Profile, spec: FramingSpec, emit: FrameSink) -> None:
        self.device = device
        self.profile = profile
        self.spec = spec
        self._emit = emit
        self.demux = profile.codec.demux()
        self.listener: ChannelListener | None = None
        self._fd: int | None = None
        self._passthrough: Passthrough | None = None
        self._out = bytearray()
        self._writing = False
        self._release_timer: asyncio.TimerHandle | None = None
        # Bytes that may start a reply go back before the framer's idle gap could cut the read
        # they belong to; a reply under way is waited for as long as the device may take.
        self._hold_s = max(self.spec.idle_gap_ms / 2, 5) / 1000
        self._reply_hold_s = max(profile.timeout_ms, 500) / 1000

    @property
    def attached(self) -> bool:
        return self._fd is not None

    def rebind(self, spec: FramingSpec, emit: FrameSink) -> None:
        """A new source for the same scanner (replug under a new node, new framing settings)."""
        self.spec = spec
        self._emit = emit
        self._hold_s = max(spec.idle_gap_ms / 2, 5) / 1000

    # --- called by the serial source ---------------------------------------------------------

    def attach(self, fd: int, passthrough: Passthrough) -> None:
        self._fd = fd
        self._passthrough = passthrough
        self.demux = self.profile.codec.demux()
        os.set_blocking(fd, False)
        if self.listener is not None:
            self.listener.attached()

    def detach(self) -> None:
        fd, self._fd = self._fd, None
        self._cancel_release()
        if fd is not None and self._writing:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_writer(fd)
        self._writing = False
        self._out.clear()
        if fd is not None and self.listener is not None:
            self.listener.detached()

    def filter(self, data: bytes, t_ns: int) -> bytes:
        """Bytes read from the device → the bytes that belong to scans (for the framer)."""
        self._cancel_release()
        result = self.demux.feed(data)
        self._handle(result, t_ns)
        if self.demux.holding:
            hold = self._reply_hold_s if self.demux.mid_reply else self._hold_s
            self._release_timer = asyncio.get_running_loop().call_later(hold, self._release)
        return result.passthrough

    # --- called by the controller -------------------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Queue one command for the device; False when there is no device or no room."""
        if self._fd is None or len(self._out) + len(data) > MAX_PENDING_WRITE:
            return False
        self.demux.expect()
        self._out += data
        self._flush()
        return True

    # --- inside ---------------------------------------------------------------------------------

    def _flush(self) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            while self._out:
                written = os.write(fd, self._out)
                del self._out[:written]
        except BlockingIOError:
            pass
        except OSError as e:
            # The read side sees the same device go away and detaches; the reply times out.
            log.warning("control_write_failed", device=self.device, error=str(e))
            self._out.clear()
        loop = asyncio.get_running_loop()
        if self._out and not self._writing:
            loop.add_writer(fd, self._flush)
            self._writing = True
        elif not self._out and self._writing:
            loop.remove_writer(fd)
            self._writing = False

    def _handle(self, result: Demuxed, t_ns: int) -> None:
        for item in result.items:
            if isinstance(item, Reply):
                if self.listener is not None:
                    self.listener.reply(item)
            elif isinstance(item, DataScan):
                self._emit(self._frame(item.data, t_ns))
            elif isinstance(item, Garbage):
                log.info("control_garbage", device=self.device, reason=item.reason, length=len(item.data))
                self._emit(Rejected(self.device, item.reason, _printable(item.data, self.profile.charset), t_ns))

    def _frame(self, data: bytes, t_ns: int) -> Frame | Rejected:
        """A code the device sent inside a frame goes through the same checks as a framed read."""
        raw = data.decode(self.profile.charset, errors="replace")
        symbology, text = clean(raw, self.spec)
        reason = rejection_reason(text, self.spec.max_length)
        if reason is not None:
            return Rejected(self.device, reason, raw, t_ns)
        return Frame(self.device, text, symbology, t_ns, t_ns, t_ns, ended_by="frame")

    def _release(self) -> None:
        self._release_timer = None
        result = self.demux.release()
        now = time.monotonic_ns()
        self._handle(result, now)
        if result.passthrough and self._passthrough is not None:
            self._passthrough(result.passthrough, now)

    def _cancel_release(self) -> None:
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None


def _printable(data: bytes, charset: str) -> str:
    """What a garbage frame held, for a masked reject: control bytes (ACK, ETX…) dropped."""
    return "".join(ch for ch in data.decode(charset, errors="replace") if ch.isprintable())
