"""Helpers for the guest side of the VM rig (scenarios.py is the entry point).

Runs inside the QEMU guest, as root, chrooted into a read-only view of the host's root (tmpfs overlay on top), with the guest's own /dev, /proc, /sys, /run, /tmp.

    python scenarios.py /run/vmrig     (started by /run/vmrig/guest.sh, written by the host)

scenarios.py runs scenarios one after the other. Each starts `python -m scannerd run -c CONFIG` as a
subprocess, connects an HIS client to its Unix socket and records what arrives. The guest only
*observes*: it writes facts (events received, timings, device states) into
/run/vmrig/results.json (a 9p share the host reads), and the host-side pytest file asserts on
them. Where only the host can act (typing on QEMU's usb-kbd, writing into the usb-serial
chardev, USB unplug/replug) the driver asks it over the control line /dev/ttyS1.

A scenario whose daemon feature is not in the repository yet is recorded as
{"status": "missing", "missing": [...]} and never imitated.
"""

from __future__ import annotations

import base64
import ctypes
import glob
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(sys.argv[1] if len(sys.argv) > 1 else "/run/vmrig")
PLAN: dict[str, Any] = json.loads((RESULTS / "plan.json").read_text())
REPO = Path(PLAN["repo"])
PYTHON = PLAN["python"]
LATE_MODULES = Path("/run/vmrig-modules")
SOCK = "/run/scannerd-vm/scannerd.sock"

T0 = time.monotonic()


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.2f}] {msg}", flush=True)


# --- codes --------------------------------------------------------------------------------
# WeChat Pay: 18 digits, 10-15. "13456789012" keeps digits 7-14 (an ID number's birth date)
# at year 8901, so these can never be valid Chinese ID numbers.

def wechat(n: int) -> str:
    return f"13456789012{n:07d}"


def alipay(n: int) -> str:
    return f"28{n:016d}"


def unionpay(n: int) -> str:
    return f"62{n:017d}"


# --- the host -----------------------------------------------------------------------------

class Host:
    """Requests to the host over the control serial line (guest /dev/ttyS1)."""

    def __init__(self, path: str = "/dev/ttyS1") -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        attrs = termios.tcgetattr(self.fd)
        # raw, 115200, set with TCSANOW (TCSAFLUSH would drop pending input)
        attrs[0] = 0
        attrs[1] = 0
        attrs[2] = termios.CS8 | termios.CREAD | termios.CLOCAL
        attrs[3] = 0
        attrs[4] = attrs[5] = termios.B115200
        attrs[6][termios.VMIN] = 1
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        self.buf = b""
        self.next_id = 1
        self.lock = threading.Lock()

    def call(self, op: str, timeout: float = 30.0, **kw: Any) -> dict[str, Any]:
        with self.lock:
            rid = self.next_id
            self.next_id += 1
            os.write(self.fd, json.dumps({"id": rid, "op": op, **kw}).encode() + b"\n")
            deadline = time.monotonic() + timeout
            while True:
                while b"\n" in self.buf:
                    line, self.buf = self.buf.split(b"\n", 1)
                    try:
                        reply = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if reply.get("id") == rid:
                        if not reply.get("ok"):
                            raise RuntimeError(f"host {op} failed: {reply.get('error')}")
                        return reply
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"host did not answer {op} within {timeout}s")
                r, _, _ = select.select([self.fd], [], [], left)
                if r:
                    self.buf += os.read(self.fd, 4096)

    def serial_write(self, data: str | bytes, baud: int = 9600, chardev: str = "ser0") -> None:
        raw = data.encode() if isinstance(data, str) else data
        self.call("serial_write", chardev=chardev, data=base64.b64encode(raw).decode(), baud=baud)

    def type(self, text: str, interval_ms: float = 15) -> dict[str, Any]:
        return self.call("type", text=text, interval_ms=interval_ms, timeout=120)


# --- waiting helpers ----------------------------------------------------------------------

def wait_until(pred: Callable[[], Any], timeout: float, step: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            return v
        time.sleep(step)


def holds_open(pid: int, path: str) -> bool:
    """True when process `pid` has `path` (its real path) open: the daemon's handle on a device."""
    real = os.path.realpath(path)
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == real:
                return True
        except OSError:
            pass
    return False


def evdev_nodes() -> list[dict[str, Any]]:
    """Input devices as sysfs describes them (no python-evdev import: it costs ~1.5 s here)."""
    out = []
    for ev in sorted(glob.glob("/sys/class/input/event*")):
        def read(name: str, base: Path = Path(ev) / "device") -> str:
            try:
                return (base / name).read_text().strip()
            except OSError:
                return ""
        out.append({"node": f"/dev/input/{Path(ev).name}", "name": read("name"),
                    "vid": read("id/vendor"), "pid": read("id/product"), "bus": read("id/bustype")})
    return out


def find_evdev(name: str, timeout: float = 10.0) -> str | None:
    def look() -> str | None:
        for d in evdev_nodes():
            if d["name"] == name and os.path.exists(d["node"]):
                return d["node"]
        return None
    return wait_until(look, timeout)


def load_module(name: str) -> None:
    """finit_module(2) on a .ko the init left in /run/vmrig-modules (no modprobe in the guest)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(LATE_MODULES / f"{name}.ko", os.O_RDONLY)
    try:
        if libc.syscall(313, fd, b"", 0) != 0:  # SYS_finit_module on x86_64
            err = ctypes.get_errno()
            if err != 17:  # EEXIST: already loaded
                raise OSError(err, f"finit_module {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def set_raw(fd: int) -> None:
    attrs = termios.tcgetattr(fd)
    attrs[0] = 0
    attrs[1] = 0
    attrs[2] = (attrs[2] & ~termios.CSIZE) | termios.CS8 | termios.CREAD | termios.CLOCAL
    attrs[3] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


# --- the daemon and an HIS client ---------------------------------------------------------

class Daemon:
    """`python -m scannerd run -c CONFIG` as a subprocess, logs into the results share."""

    def __init__(self, name: str, config: str) -> None:
        self.name = name
        cfg = Path(f"/run/scannerd-vm/{name}.toml")
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(config)
        (RESULTS / f"daemon-{name}.toml").write_text(config)
        # The log goes to the guest's tmpfs (a 9p write per log line could stall the daemon's
        # event loop) and is copied to the results share when the daemon stops.
        self.logpath = cfg.parent / f"daemon-{name}.log"
        self.logf = open(self.logpath, "wb")
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "PYTHONPATH": str(REPO),
               "HOME": "/root", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen([PYTHON, "-m", "scannerd", "run", "-c", str(cfg)], cwd=str(REPO),
                                     stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT, env=env)
        self.started_s: float | None = None

    def wait_socket(self, timeout: float = 30.0) -> Client:
        def try_connect() -> Client | None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"scannerd exited with {self.proc.returncode} before its socket came up: {self.log_tail()}")
            if not os.path.exists(SOCK):
                return None
            try:
                return Client(SOCK)
            except OSError:
                return None
        c = wait_until(try_connect, timeout, 0.05)
        if not c:
            raise RuntimeError(f"scannerd socket {SOCK} not up within {timeout}s: {self.log_tail()}")
        self.started_s = time.monotonic() - self.t_start
        log(f"daemon {self.name} socket up after {self.started_s:.2f}s")
        return c

    def holds(self, path: str, timeout: float) -> bool:
        return bool(wait_until(lambda: holds_open(self.proc.pid, path), timeout))

    def log_tail(self, n: int = 1500) -> str:
        self.logf.flush()
        try:
            return self.logpath.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.logf.close()
        shutil.copyfile(self.logpath, RESULTS / self.logpath.name)
        return self.proc.returncode


class Client:
    """An HIS client on the daemon's socket: every line is kept with its arrival time."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")
        self.hello = json.loads(self.file.readline() or b"{}")
        if self.hello.get("type") != "hello":
            raise OSError(f"no hello: {self.hello}")
        # Protocol 2: no scan without a subscription; the rig's client is the HIS.
        self.sock.sendall(b'{"cmd":"subscribe","role":"his"}\n')
        self.events: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.file:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                ev = {"type": "unparseable", "line": line.decode(errors="replace")}
            ev["_t"] = round(time.monotonic() - T0, 3)
            with self.cond:
                self.events.append(ev)
                self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.events)

    def since(self, mark: int, types: tuple[str, ...] = ("scan", "reject")) -> list[dict[str, Any]]:
        with self.cond:
            return [e for e in self.events[mark:] if e.get("type") in types]

    def wait(self, mark: int, pred: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.events[mark:]:
                    if pred(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def wait_code(self, mark: int, code: str, timeout: float = 5.0) -> dict[str, Any] | None:
        return self.wait(mark, lambda e: e.get("type") == "scan" and e.get("code") == code, timeout)

    def wait_reject(self, mark: int, timeout: float = 5.0) -> dict[str, Any] | None:
        return self.wait(mark, lambda e: e.get("type") == "reject", timeout)

    def command(self, cmd: dict[str, Any], timeout: float = 5.0) -> dict[str, Any] | None:
        m = self.mark()
        self.sock.sendall(json.dumps(cmd).encode() + b"\n")
        return self.wait(m, lambda e: e.get("type") == "reply", timeout)

    def close(self) -> None:
        self.sock.close()


def slim(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("type", "device", "channel", "kind", "code", "rule", "reason", "masked", "latency", "symbology", "state", "_t")
    return [{k: e[k] for k in keep if k in e} for e in events]
