"""sd_notify(3) spoken directly: one AF_UNIX datagram per message to $NOTIFY_SOCKET.

No libsystemd: the protocol is newline-separated ``KEY=VALUE`` assignments sent as a single
datagram to the socket systemd names in ``$NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for
the abstract namespace).  Outside systemd the variable is unset and every call is a cheap no-op.

Typical daemon use (see the module's section in README / the integration notes)::

    notifier = Notifier()
    ...start sources and sinks, socket listening...
    notifier.notify("READY=1", "STATUS=2 devices, 0 scans today, socket ok")
    wd = asyncio.create_task(watchdog_loop(notifier))
    ...on SIGHUP:  notifier.reloading(); apply config; notifier.notify("READY=1", "STATUS=…")
    ...on SIGTERM: notifier.notify("STOPPING=1"); wd.cancel()

Nothing here ever raises into the daemon: a vanished socket is logged once (per outage) and the
message dropped, because losing a status line must never take the scanners down with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import MutableMapping

__all__ = ["Notifier", "watchdog_loop"]

log = logging.getLogger(__name__)


def _clean(line: str) -> str:
    # A newline inside a value (e.g. a device name in STATUS=) would smuggle in a second
    # assignment such as READY=1; the protocol has no escaping, so flatten it.
    return line.replace("\r", " ").replace("\n", " ")


class Notifier:
    """Sends sd_notify messages to the service manager, if there is one.

    ``enabled`` is False when ``$NOTIFY_SOCKET`` is unset (not started by systemd with
    ``Type=notify``), empty, or names an address family we do not speak (e.g. ``vsock:``).
    """

    enabled: bool

    def __init__(
        self,
        env: MutableMapping[str, str] | None = None,
        *,
        unset_environment: bool = False,
    ) -> None:
        """Read ``NOTIFY_SOCKET`` (and the watchdog variables) from ``env`` (default os.environ).

        ``unset_environment=True`` removes the variables afterwards, as sd_notify(3)'s flag does,
        so that child processes (e.g. an ExecStart wrapper's children) do not inherit them.
        """
        env = os.environ if env is None else env
        self._address: str | bytes | None = None
        self._sock: socket.socket | None = None
        self._failing = False  # True while the socket is unreachable: log once per outage
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")
        raw = env.get("NOTIFY_SOCKET", "")
        if raw.startswith("@"):
            # Abstract namespace: '@' stands for the leading NUL byte.
            self._address = "\0" + raw[1:]
        elif raw.startswith("/"):
            self._address = raw
        elif raw:
            log.warning("NOTIFY_SOCKET=%r is not a path or @abstract name; sd_notify disabled", raw)
        self.enabled = self._address is not None
        if unset_environment:
            for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                env.pop(key, None)

    @property
    def address(self) -> str | bytes | None:
        """The socket address in use ('\\0…' for abstract), or None when disabled."""
        return self._address

    def notify(self, *lines: str) -> None:
        """Send ``lines`` (each ``KEY=VALUE``) as one datagram; never raises."""
        if self._address is None or not lines:
            return
        payload = "\n".join(_clean(line) for line in lines).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Called on the event loop: when systemd's receive queue is full the message is
            # dropped (EAGAIN) rather than stalling every scanner while it waits for room.
            self._sock.sendto(payload, socket.MSG_DONTWAIT, self._address)
        except OSError as exc:
            if not self._failing:
                log.warning("sd_notify to %r failed (%s); dropping messages until it works again",
                            self._address, exc)
                self._failing = True
            self._close()
            return
        if self._failing:
            log.info("sd_notify to %r works again", self._address)
            self._failing = False

    # Convenience wrappers: the names are what a reader of service.py looks for.

    def ready(self, status: str | None = None) -> None:
        self.notify("READY=1", *(() if status is None else (f"STATUS={status}",)))

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def reloading(self, status: str | None = None) -> None:
        """RELOADING=1 with MONOTONIC_USEC, which systemd ≥ 253 requires for Type=notify-reload
        (older versions ignore the extra field).  Follow with ready() when the reload is done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        extra = () if status is None else (f"STATUS={status}",)
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *extra)

    def stopping(self, status: str | None = None) -> None:
        self.notify("STOPPING=1", *(() if status is None else (f"STATUS={status}",)))

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for more start/stop time (EXTEND_TIMEOUT_USEC), e.g. while a device settles."""
        self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None if no watchdog.

        Honours WATCHDOG_PID: when set, the watchdog is meant for that process only (it is
        not ours when we were forked from the main process, for example).
        """
        if self._address is None:
            return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        return usec / 2 / 1_000_000

    def close(self) -> None:
        self._close()

    def _close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __repr__(self) -> str:
        return f"Notifier(address={self._address!r}, enabled={self.enabled})"


async def watchdog_loop(notifier: Notifier, interval: float | None = None) -> None:
    """Send WATCHDOG=1 every ``interval`` seconds (default: notifier.watchdog_interval()).

    Runs as a task on the daemon's event loop on purpose: if the loop hangs (a blocking call,
    a deadlock), the pings stop and systemd's WatchdogSec= restarts the service.  Returns at
    once when there is no watchdog; cancel the task to stop it.
    """
    if interval is None:
        interval = notifier.watchdog_interval()
    if interval is None or interval <= 0 or not notifier.enabled:
        return
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)

