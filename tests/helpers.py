"""Real parts for tests: pty scanners, a daemon subprocess, a socket client."""

from __future__ import annotations

import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import termios
import time
import tty
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def wechat_code(rng: random.Random | None = None) -> str:
    """18 digits, prefix 10–14, shaped like a WeChat payment code (not a person's data)."""
    rng = rng or random.Random()
    code = f"1{rng.randint(0, 4)}" + "".join(str(rng.randint(0, 9)) for _ in range(16))
    # Positions 7–14 of an ID number are its birth date: month 13 keeps this from being one.
    return code[:10] + "13" + code[12:]


def alipay_code(rng: random.Random | None = None, length: int = 18) -> str:
    rng = rng or random.Random()
    return str(rng.randint(25, 30)) + "".join(str(rng.randint(0, 9)) for _ in range(length - 2))


def unionpay_code(rng: random.Random | None = None) -> str:
    rng = rng or random.Random()
    return "62" + "".join(str(rng.randint(0, 9)) for _ in range(17))


class PtyScanner:
    """A serial scanner on a real pseudo-terminal. The daemon opens `link` (a symlink, like a
    /dev/serial/by-id/… name); `unplug()` closes the master, `replug()` makes a new pty and
    re-points the link, as udev does when a USB scanner comes back on a new ttyACM."""

    def __init__(self, directory: Path, name: str = "scanner") -> None:
        self.link = directory / name
        self.master = -1
        self.slave_path = ""
        self._slave = -1
        self.replug()

    def replug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(master, when=termios.TCSANOW)
        self.master = master
        self._slave = slave  # held open so writes before the daemon opens are kept, then closed
        self.slave_path = os.ttyname(slave)
        tmp = self.link.with_suffix(".new")
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(self.slave_path)
        os.replace(tmp, self.link)

    def release_slave(self) -> None:
        if self._slave >= 0:
            os.close(self._slave)
            self._slave = -1

    def write(self, data: bytes, baud: int | None = 9600) -> None:
        """Write like a scanner at `baud` 8N1 (10 bits a character), or all at once with None."""
        if baud is None:
            os.write(self.master, data)
            return
        per_char = 10 / baud
        chunk = max(1, int(0.001 / per_char))  # sleep granularity is ~1 ms: pace in 1 ms slices
        start = time.perf_counter()
        for i in range(0, len(data), chunk):
            os.write(self.master, data[i : i + chunk])
            target = start + (i + chunk) * per_char
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)

    def unplug(self) -> None:
        self.release_slave()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        if self.link.is_symlink():
            self.link.unlink()

    def close(self) -> None:
        self.unplug()


class Client:
    """A client of the daemon's Unix socket: an HIS (role "his", the default), a monitor, or a
    tool that never subscribes (role None: replies only)."""

    def __init__(self, path: str | Path, timeout: float = 10.0, role: str | None = "his", **subscribe: Any) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self._buf = b""
        self._backlog: list[dict[str, Any]] = []
        self.hello = self.next()
        assert self.hello["type"] == "hello", self.hello
        self.subscribed: dict[str, Any] | None = None
        if role is not None:
            self.subscribed = self.command({"cmd": "subscribe", "role": role, **subscribe})
            assert self.subscribed["ok"], self.subscribed

    def next(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next message: what command() set aside first, then the socket."""
        if self._backlog:
            return self._backlog.pop(0)
        return self._recv(timeout)

    def _recv(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no event within timeout")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("daemon closed the connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def next_of(self, *types: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next event of one of `types` (device state events are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next(max(0.01, deadline - time.monotonic()))
            if msg["type"] in types:
                return msg

    def nothing_within(self, seconds: float, *types: str) -> bool:
        try:
            self.next_of(*(types or ("scan", "reject")), timeout=seconds)
        except TimeoutError:
            return True
        return False

    def send(self, cmd: dict[str, Any]) -> None:
        self.sock.sendall((json.dumps(cmd) + "\n").encode())

    def command(self, cmd: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send a command and return its reply; events arriving meanwhile are kept for next()."""
        self.send(cmd)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._recv(max(0.01, deadline - time.monotonic()))
            if msg["type"] == "reply" and msg.get("cmd") in (cmd.get("cmd"), "?"):
                return msg
            self._backlog.append(msg)

    def wait_present(self, timeout: float = 5.0) -> None:
        """Until every scanner the daemon runs has its device open."""
        # The socket is up before the sources start: an empty list is "not yet", not "all present".
        def present() -> bool:
            devices = self.command({"cmd": "status"})["devices"]
            return bool(devices) and all(d["present"] for d in devices)

        wait_for(present, timeout)

    def status(self) -> dict[str, Any]:
        return self.command({"cmd": "status"})

    def close(self) -> None:
        self.sock.close()


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout} s")


class Daemon:
    """`scannerd run -c CONFIG` as a real subprocess."""

    def __init__(self, config: Path, socket_path: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.socket_path = socket_path
        # STATE_DIRECTORY as systemd sets it: the acceptance ledger goes there, not to /var/lib.
        state = config.with_suffix(".state")
        full_env = {**os.environ, "PYTHONPATH": str(REPO), "STATE_DIRECTORY": str(state), **(env or {})}
        self.stderr_path = config.with_suffix(".log")
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scannerd", "run", "-c", str(config), "--log-format", "json", "--log-level", "debug"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=full_env,
            cwd=REPO,
        )

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Until the daemon answers on its socket (the file alone can exist a moment before the
        daemon listens, or after it failed to start)."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            if not self.socket_path.exists():
                return False
            try:
                Client(self.socket_path, timeout=2, role=None).close()
            except (OSError, TimeoutError, ConnectionError):
                return False
            return True

        wait_for(ready, timeout)

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return out

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        return self.proc.returncode


def readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])
