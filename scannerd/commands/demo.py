"""`scannerd demo`: the whole path in one terminal, with no config and no hardware.

It starts the daemon (its log goes to a file it names) on two simulated serial scanners on
pseudo-terminals: a cashier window, and a kiosk that the demo arms and disarms as an HIS payment
page would. Then it shows what the HIS receives, live. Ctrl-C, SIGTERM or `--seconds N` stop
everything it started; the daemon also dies with the demo if the demo is killed outright
(PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import random
import select
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

from ..client import ClientError, connect, request
from ..demo_view import Tally, format_action, format_event, header
from ..i18n import _
from ..simulator import SimulatedScanner, demo_config, demo_directory, sample_scans

WINDOW = "sim-window-1"
KIOSK = "sim-kiosk-1"
ARM_TTL_S = 30
_PAYMENT_LABELS = frozenset({"WeChat Pay", "Alipay", "UnionPay 云闪付", "e-CNY"})
_PR_SET_PDEATHSIG = 1


class DemoError(RuntimeError):
    """The demo cannot start or go on; the message says why and what to do."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="see the whole path work: simulated scanners → daemon → what the HIS receives",
                       description="Start the daemon on simulated scanners (a cashier window and a kiosk) and show "
                                   "what the HIS receives, live. No config, no hardware. Ctrl-C stops everything.")
    p.add_argument("--seconds", type=_positive, help="stop after this many seconds and print a summary (default: until Ctrl-C)")
    p.add_argument("--interval", type=_positive, default=1.0, help="seconds between simulated scans (default 1)")
    p.add_argument("--dir", help=f"where the socket, config, ptys and daemon log go (default {demo_directory()})")
    p.add_argument("--seed", type=int, help="repeatable sample codes")
    p.set_defaults(func=run)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


# --- the script: what the simulated scanners and the simulated HIS payment page do ------------

def script(rng: random.Random) -> Iterator[tuple[str, str, str, str]]:
    """(action, device, label, text) forever: window scans of every kind, and a kiosk that scans
    a payment code while armed and is refused (`not_armed`) once disarmed."""
    window = sample_scans(rng)
    kiosk = (s for s in sample_scans(rng) if s[0] in _PAYMENT_LABELS)
    while True:
        yield ("scan", WINDOW, *next(window))
        yield ("arm", KIOSK, "", "")
        yield ("scan", KIOSK, *next(kiosk))
        yield ("scan", WINDOW, *next(window))
        yield ("disarm", KIOSK, "", "")
        yield ("scan", KIOSK, *next(kiosk))
        yield ("scan", WINDOW, *next(window))


# --- processes ----------------------------------------------------------------------------


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM when the demo dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: nothing to resolve in the child

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the demo died before prctl took effect
            os._exit(1)

    return preexec


def start_daemon(config: Path, log_file: IO[bytes]) -> subprocess.Popen[bytes]:
    # The demo's day counts stay in its own folder, never in the site's state directory.
    env = {**os.environ, "STATE_DIRECTORY": str(config.parent)}
    return subprocess.Popen(
        [sys.executable, "-m", "scannerd", "run", "-c", str(config), "--log-format", "text"],
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=_die_with_parent(os.getpid()),  # safe: the demo runs no threads
    )


def stop_daemon(daemon: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def prepare_directory(directory: Path) -> int:
    """Create the demo's private folder and take its lock; returns the lock's fd."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise DemoError(_("{path}: cannot create the demo folder: {error}").format(path=directory, error=e.strerror)) from None
    st = os.lstat(directory)
    # A predictable name under /tmp: refuse one that someone else made (or a symlink to elsewhere).
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise DemoError(_("{path}: not a folder owned by this user; remove it or pass --dir").format(path=directory))
    lock_path = directory / "demo.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DemoError(_("another scannerd demo is running here (pid {pid}): stop it, or pass --dir").format(pid=other)) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


# --- the HIS side: a monitor connection --------------------------------------------------


class Monitor:
    """A `monitor` subscription: live events with masked codes; it never takes a scan that
    waits for an HIS (the delivery contract), so the demo can sit beside a real one."""

    def __init__(self, path: str) -> None:
        self.sock, _stream = connect(path, timeout=10.0)
        self.sock.setblocking(False)
        self._buf = b""
        self.sock.sendall(b'{"cmd":"subscribe","role":"monitor"}\n')

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        """Events that arrive within `timeout` (replies are checked, not returned)."""
        if not select.select([self.sock], [], [], max(0.0, timeout))[0]:
            return []
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return []
        if not chunk:
            raise ClientError(_("the daemon closed the connection"))
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        out = []
        for line in lines:
            if not line.strip():
                continue
            msg = json.loads(line)
            if msg.get("type") == "reply":
                if not msg.get("ok"):
                    raise ClientError(_("the daemon refused {cmd}: {error}").format(cmd=msg.get("cmd"), error=msg.get("error")))
                continue
            out.append(msg)
        return out

    def close(self) -> None:
        self.sock.close()


def wait_for_socket(path: str, daemon: subprocess.Popen[bytes], log_path: Path, stopped: Callable[[], bool],
                    timeout: float = 60.0) -> bool:
    """True once the daemon answers on `path`; False if the demo is stopped first."""
    deadline = time.monotonic() + timeout
    while True:
        if stopped():
            return False
        if daemon.poll() is not None:
            raise DemoError(_("the daemon exited with code {code}; its log:\n{log}").format(code=daemon.returncode, log=_tail(log_path)))
        try:
            sock, _stream = connect(path, timeout=5.0)
            sock.close()
            return True
        except (ClientError, OSError):
            pass
        if time.monotonic() > deadline:
            raise DemoError(_("the daemon did not open {path} within {seconds} s; see {log}").format(path=path, seconds=int(timeout), log=log_path))
        time.sleep(0.05)


def wait_present(path: str, stopped: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopped():
        devices = request(path, {"cmd": "status"}).get("devices", [])
        if len(devices) == 2 and all(d.get("present") for d in devices):
            return True
        time.sleep(0.05)
    return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _cli_name() -> str:
    """How the user invoked us (`.venv/bin/scannerd`), for commands we suggest."""
    argv0 = sys.argv[0] if sys.argv else ""
    return argv0 if os.path.basename(argv0) == "scannerd" else "scannerd"


# --- the demo ------------------------------------------------------------------------------


class _Stop:
    """Set by SIGINT, SIGTERM or SIGHUP: the main loop checks it at least every 0.2 s."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.signal = signum

    def requested(self) -> bool:
        return self.signal is not None


def run(args: argparse.Namespace) -> int:
    stop = _Stop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    directory = Path(args.dir) if args.dir else demo_directory()
    try:
        lock = prepare_directory(directory)
    except DemoError as e:
        print(_("error: {message}").format(message=e), file=sys.stderr)
        return 1
    try:
        return _run(args, directory, stop)
    except DemoError as e:
        print(_("error: {message}").format(message=e), file=sys.stderr)
        return 1
    finally:
        os.close(lock)


def _run(args: argparse.Namespace, directory: Path, stop: _Stop) -> int:
    window = SimulatedScanner(directory / "window-1.pty")
    kiosk = SimulatedScanner(directory / "kiosk-1.pty")
    scanners = {WINDOW: window, KIOSK: kiosk}
    socket_path = str(directory / "scannerd.sock")
    config = directory / "config.toml"
    config.write_text(demo_config(directory, window.link, kiosk.link))
    log_path = directory / "daemon.log"
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    daemon: subprocess.Popen[bytes] | None = None
    monitor: Monitor | None = None
    tally = Tally()
    try:
        with os.fdopen(log_fd, "wb") as log_file:
            daemon = start_daemon(config, log_file)
        print(_("scannerd demo: simulated scanners → the daemon → what the HIS receives. Ctrl-C stops everything."))
        print(_("  daemon:  pid {pid}, log {log}").format(pid=daemon.pid, log=log_path))
        print(_("  socket:  {path}").format(path=socket_path))
        # Ctrl-C may come while the daemon starts: then there is nothing to show but the summary.
        if wait_for_socket(socket_path, daemon, log_path, stop.requested):
            monitor = Monitor(socket_path)
            if not wait_present(socket_path, stop.requested) and not stop.requested():
                print(_("warning: the simulated scanners are not open yet; see {log}").format(log=log_path), file=sys.stderr)
            print(_("  from a second terminal: {cli} inject --device {device} 134567890123456789").format(cli=_cli_name(), device=WINDOW))
            print()
            print(header(), flush=True)
            _loop(args, stop, socket_path, monitor, scanners, tally)
    except ClientError as e:
        raise DemoError(_("{error}; the daemon's log:\n{log}").format(error=e, log=_tail(log_path))) from None
    finally:
        if monitor is not None:
            monitor.close()
        if daemon is not None:
            stop_daemon(daemon)
        for scanner in scanners.values():
            scanner.close()
    print(tally.summary(str(log_path)), flush=True)
    return 0


def _loop(args: argparse.Namespace, stop: _Stop, socket_path: str, monitor: Monitor,
          scanners: dict[str, SimulatedScanner], tally: Tally) -> None:
    rng = random.Random(args.seed)
    steps = script(rng)
    started = time.monotonic()
    deadline = None if args.seconds is None else started + args.seconds
    next_step = started
    while not stop.requested():
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        if now >= next_step:
            _perform(next(steps), socket_path, scanners)
            next_step += args.interval
        wait = min(0.2, max(0.0, next_step - time.monotonic()))
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - time.monotonic()))
        try:
            _show(monitor.poll(wait), tally)
        except ClientError:
            if not stop.requested():
                raise
            return  # Ctrl-C reached the daemon too (same process group): it closed first
    # What was already on its way when we stopped still belongs in the table and the summary.
    quiet_until = time.monotonic() + 0.5
    while time.monotonic() < quiet_until:
        try:
            events = monitor.poll(quiet_until - time.monotonic())
        except ClientError:
            if not stop.requested():
                raise
            return
        _show(events, tally)


def _show(events: list[dict[str, Any]], tally: Tally) -> None:
    for event in events:
        tally.add(event)
        line = format_event(event)
        if line is not None:
            print(line, flush=True)


def _perform(step: tuple[str, str, str, str], socket_path: str, scanners: dict[str, SimulatedScanner]) -> None:
    action, device, _label, text = step
    if action == "scan":
        scanners[device].send(text)
        return
    cmd: dict[str, Any] = {"cmd": action, "device": device}
    if action == "arm":
        cmd["ttl_s"] = ARM_TTL_S
    try:
        answer = request(socket_path, cmd)
    except (TimeoutError, ClientError) as e:
        print(format_action(device, _("{cmd} failed: {error}").format(cmd=action, error=e)), flush=True)
        return
    if not answer.get("ok"):
        print(format_action(device, _("{cmd} refused: {error}").format(cmd=action, error=answer.get("error"))), flush=True)
    elif action == "arm":
        print(format_action(device, _("armed for {seconds} s (the HIS shows its payment page)").format(seconds=ARM_TTL_S)), flush=True)
    else:
        print(format_action(device, _("disarmed (payment page closed): its next scan is refused")), flush=True)
