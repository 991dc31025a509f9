"""The bench's real parts: pty scanners, the processes under test, an HIS client, /proc figures.

Everything here is shared by scannerd and the bare baseline, so whatever the harness itself
costs (writing the pty, reading the socket, parsing a line) costs both the same.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import termios
import time
import tty
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def scannerd_command() -> list[str]:
    """How a user starts scannerd from this interpreter's environment: its console script when
    installed beside it, else `python -m scannerd`."""
    script = Path(sys.executable).with_name("scannerd")
    return [str(script)] if script.exists() else [sys.executable, "-m", "scannerd"]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of every process the bench times, as a deployed scannerd has it.

    - bytecode cached, as after `pip install` of a wheel: PYTHONDONTWRITEBYTECODE (set by some
      shells and CI) would recompile every scannerd module at every start; the cache goes under
      the bench's cache dir (PYTHONPYCACHEPREFIX), not into the source tree;
    - stderr line-buffered as under systemd: PYTHONUNBUFFERED makes every print two write(2)
      calls (the text, then the newline), one more syscall per log line than in production.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED")}
    env["PYTHONPYCACHEPREFIX"] = str(cache_dir() / "pycache")
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "scannerd-bench"


def bench_code(n: int) -> str:
    """An 18-digit WeChat-shaped code, unique per n. Synthetic: digits 11–12 are "13", a month no
    ID number has, and the rest is a counter, so it is nobody's payment code."""
    return f"13{n // 1_000_000 % 100_000_000:08d}13{n % 1_000_000:06d}"


# -- pty scanners ----------------------------------------------------------------------------


class PtyScanner:
    """A serial scanner on a real pty: the process under test opens `link`; we write the master.

    The master is non-blocking: if the reader stops reading, a write fails instead of freezing
    the bench, and the scan is counted as not sent (it would be lost on a real port too)."""

    def __init__(self, directory: Path, name: str) -> None:
        self.name = name
        self.link = directory / name
        self.master, slave = os.openpty()
        tty.setraw(self.master, when=termios.TCSANOW)
        os.set_blocking(self.master, False)
        self.link.symlink_to(os.ttyname(slave))
        self._slave = slave  # held until the reader has it open, so nothing hangs up early

    def release_slave(self) -> None:
        if self._slave >= 0:
            os.close(self._slave)
            self._slave = -1

    def write_now(self, data: bytes) -> int | None:
        """Write at once; the perf_counter_ns just before the write, or None if it did not fit."""
        t0 = time.perf_counter_ns()
        try:
            if os.write(self.master, data) != len(data):
                return None
        except BlockingIOError:
            return None
        return t0

    async def write_paced(self, data: bytes, baud: int) -> tuple[int, int] | None:
        """Write like a UART at `baud` 8N1 (10 bits a character) in ~1 ms slices (the loop's timer
        granularity); perf_counter_ns just before the first and the last slice (the one with the
        terminator), or None if a slice did not fit."""
        per_char_s = 10 / baud
        chunk = max(1, int(0.001 / per_char_s))
        start = time.perf_counter()
        t_first: int | None = None
        t_last: int | None = None
        for i in range(0, len(data), chunk):
            t_last = self.write_now(data[i : i + chunk])
            if t_last is None:
                return None
            t_first = t_last if t_first is None else t_first
            if i + chunk < len(data):
                delay = start + (i + chunk) * per_char_s - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
        assert t_first is not None and t_last is not None
        return t_first, t_last

    def close(self) -> None:
        self.release_slave()
        os.close(self.master)
        self.link.unlink(missing_ok=True)


def make_scanners(directory: Path, prefix: str, n: int) -> list[PtyScanner]:
    directory.mkdir(parents=True, exist_ok=True)
    return [PtyScanner(directory, f"{prefix}-{i:02d}") for i in range(n)]


# -- processes under test ----------------------------------------------------------------------


class NotifySocket:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET: who said READY=1, and when."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> int:
        """Block until READY=1 arrives; the perf_counter_ns of its arrival."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before READY=1")
            if left <= 0:
                raise TimeoutError(f"{proc.args!r}: no READY=1 within {timeout} s")
            self.sock.settimeout(min(left, 0.2))
            try:
                msg = self.sock.recv(4096)
            except TimeoutError:
                continue
            if b"READY=1" in msg.split(b"\n"):
                return time.perf_counter_ns()

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


@dataclass
class Process:
    """A process under test, started with its own $NOTIFY_SOCKET and waited on until READY=1."""

    label: str
    argv: list[str]
    directory: Path
    socket_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_keeper: subprocess.Popen[bytes] | None = None
    startup_s: float = 0.0

    def start(self, timeout: float = 60.0) -> None:
        notify = NotifySocket(self.directory / f"{self.label}.notify")
        log = open(self.directory / f"{self.label}.log", "wb")  # the log keeper writes it; closed here once started
        # stderr goes to a pipe that another process copies to the log file, as journald takes a
        # service's stderr: the process under test pays for its log lines but not for the disk
        # (a write(2) straight into a file on a shared disk can block for 100+ ms now and then).
        self.log_keeper = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=log)
        env = child_env(**self.env, NOTIFY_SOCKET=str(notify.path))
        try:
            t0 = time.perf_counter_ns()
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=self.log_keeper.stdin, env=env, cwd=REPO)
            t_ready = notify.wait_ready(self.proc, timeout)
            self.startup_s = (t_ready - t0) / 1e9
        except (OSError, RuntimeError, TimeoutError) as e:
            self.stop()
            raise RuntimeError(f"{self.label} did not start ({e}); its log:\n{self.log_tail()}") from None
        finally:
            notify.close()
            log.close()
            assert self.log_keeper.stdin is not None
            self.log_keeper.stdin.close()  # the child holds the pipe now; cat ends when it exits

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_s(self) -> float:
        """User + system CPU seconds so far, from /proc/<pid>/stat."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = (self.directory / f"{self.label}.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log_keeper is not None:
            try:
                self.log_keeper.wait(15)  # the log is complete once cat has copied the last line
            except subprocess.TimeoutExpired:
                self.log_keeper.kill()
                self.log_keeper.wait()


def scannerd_config(path: Path, socket_path: Path, scanners: Sequence[PtyScanner], *,
                    mqtt: tuple[str, int, str] | None = None) -> Path:
    """A config as a site would write it for serial scanners at 115200 baud: everything else
    (logging, policy, duplicate check, classification rules) left at its default."""
    lines = ["[discovery]", "auto = false", "", "[socket]", f'path = "{socket_path}"', ""]
    if mqtt is not None:
        host, port, prefix = mqtt
        lines += ["[mqtt]", f'host = "{host}"', f"port = {port}", f'topic_prefix = "{prefix}"', ""]
    for s in scanners:
        lines += ["[[scanner]]", f'name = "{s.name}"', 'transport = "serial"', f'path = "{s.link}"',
                  "baudrate = 115200", 'terminator = "CR"', ""]
    path.write_text("\n".join(lines))
    return path


def start_scannerd(directory: Path, label: str, scanners: Sequence[PtyScanner], *,
                   mqtt: tuple[str, int, str] | None = None, profile: Path | None = None) -> Process:
    sock = directory / f"{label}.sock"
    config = scannerd_config(directory / f"{label}.toml", sock, scanners, mqtt=mqtt)
    argv = [*scannerd_command(), "run", "-c", str(config)]
    if profile is not None:
        argv = [sys.executable, str(REPO / "bench" / "cprofile_daemon.py"), str(profile), "run", "-c", str(config)]
    # Its own state (acceptance ledger, day counts), fresh each run: as root the daemon would
    # otherwise use the machine's /var/lib/scannerd, whose size (grown by every earlier run)
    # shows up in RSS and start-up, and the bench would write its scans into a real ledger.
    state = directory / f"{label}.state"
    state.mkdir(exist_ok=True)
    p = Process(label, argv, directory, sock, env={"STATE_DIRECTORY": str(state)})
    p.start()
    for s in scanners:
        s.release_slave()
    return p


def start_baseline(directory: Path, label: str, scanners: Sequence[PtyScanner], *,
                   mqtt: tuple[str, int, str] | None = None) -> Process:
    sock = directory / f"{label}.sock"
    argv = [sys.executable, str(REPO / "bench" / "baseline.py"), "--socket", str(sock)]
    for s in scanners:
        argv += ["--pty", str(s.link)]
    if mqtt is not None:
        host, port, prefix = mqtt
        argv += ["--mqtt", f"{host}:{port}", "--topic", prefix]
    p = Process(label, argv, directory, sock)
    p.start()
    for s in scanners:
        s.release_slave()
    return p


# -- the HIS client ----------------------------------------------------------------------------


class HisClient(asyncio.Protocol):
    """An HIS on a Unix socket: subscribes as role his, timestamps each line as it arrives.

    A scannerd line is a JSON event (scan → its code); a baseline line is the raw code."""

    def __init__(self, raw: bool) -> None:
        self.raw = raw
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.arrivals: dict[str, int] = {}
        self.waiters: dict[str, asyncio.Future[int]] = {}
        self.rejects = 0
        self.closed = asyncio.get_running_loop().create_future()
        self.greeted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def connect(cls, path: Path, raw: bool) -> HisClient:
        """Connected, subscribed, and greeted (the server has taken us on: no scan can miss us)."""
        loop = asyncio.get_running_loop()
        _, client = await loop.create_unix_connection(lambda: cls(raw), str(path))
        client.send({"cmd": "subscribe", "role": "his"})
        await asyncio.wait_for(client.greeted, 30)
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write((json.dumps(cmd) + "\n").encode())

    def data_received(self, data: bytes) -> None:
        t = time.perf_counter_ns()
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            self._line(line, t)

    def _line(self, line: bytes, t: int) -> None:
        if not self.greeted.done():  # scannerd's hello event, the baseline's "hello" line
            self.greeted.set_result(None)
            return
        if self.raw:
            code = line.rstrip(b"\r").decode()
        else:
            event = json.loads(line)
            kind = event.get("type")
            if kind == "reject":
                self.rejects += 1
                return
            if kind != "scan":
                return
            code = event["code"]
        self.arrived(code, t)

    def arrived(self, code: str, t: int) -> None:
        self.arrivals.setdefault(code, t)
        waiter = self.waiters.pop(code, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(t)

    def expect(self, code: str) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if code in self.arrivals:
            fut.set_result(self.arrivals[code])
        else:
            self.waiters[code] = fut
        return fut

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        for w in self.waiters.values():
            if not w.done():
                w.set_exception(ConnectionError("connection closed"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def request(path: Path, cmd: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """One command on a fresh connection to scannerd; its reply."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write((json.dumps(cmd) + "\n").encode())
        while True:
            line = await asyncio.wait_for(reader.readline(), timeout)
            if not line:
                raise ConnectionError(f"no reply to {cmd['cmd']}")
            msg = json.loads(line)
            if msg.get("type") == "reply":
                return dict(msg)
    finally:
        writer.close()


# -- figures -----------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0…100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def latency_summary(samples_us: Sequence[float]) -> dict[str, float]:
    s = sorted(samples_us)
    return {"n": len(s), "p50_us": percentile(s, 50), "p90_us": percentile(s, 90), "p99_us": percentile(s, 99),
            "max_us": s[-1] if s else float("nan")}
