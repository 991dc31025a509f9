"""sd_notify against real AF_UNIX datagram sockets (filesystem and abstract namespace)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from scannerd.sdnotify import Notifier, watchdog_loop

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def notify_sock(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket playing systemd's part; yields (socket, NOTIFY_SOCKET value)."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()


@pytest.fixture
def abstract_sock() -> Iterator[tuple[socket.socket, str]]:
    name = f"scannerd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    yield sock, "@" + name
    sock.close()


def recv_lines(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_disabled_without_notify_socket() -> None:
    n = Notifier(env={})
    assert n.enabled is False
    assert n.watchdog_interval() is None
    n.notify("READY=1")  # no socket, no error
    assert asyncio.run(asyncio.wait_for(watchdog_loop(n), 1)) is None


def test_unsupported_address_disables(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="scannerd.sdnotify"):
        n = Notifier(env={"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not n.enabled
    assert "vsock:2:1234" in caplog.text


def test_ready_and_status_reach_path_socket(notify_sock: tuple[socket.socket, str]) -> None:
    sock, addr = notify_sock
    n = Notifier(env={"NOTIFY_SOCKET": addr})
    assert n.enabled and n.address == addr
    n.ready("2 devices, 0 scans today, socket ok")
    assert recv_lines(sock) == ["READY=1", "STATUS=2 devices, 0 scans today, socket ok"]
    n.notify("STATUS=plain")
    assert recv_lines(sock) == ["STATUS=plain"]


def test_abstract_namespace(abstract_sock: tuple[socket.socket, str]) -> None:
    sock, addr = abstract_sock
    n = Notifier(env={"NOTIFY_SOCKET": addr})
    assert n.address == "\0" + addr[1:]
    n.stopping("bye")
    assert recv_lines(sock) == ["STOPPING=1", "STATUS=bye"]


def test_newline_in_value_cannot_inject_assignment(notify_sock: tuple[socket.socket, str]) -> None:
    sock, addr = notify_sock
    Notifier(env={"NOTIFY_SOCKET": addr}).status("window-1\nREADY=1")
    assert recv_lines(sock) == ["STATUS=window-1 READY=1"]


def test_reloading_carries_monotonic_usec(notify_sock: tuple[socket.socket, str]) -> None:
    sock, addr = notify_sock
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier(env={"NOTIFY_SOCKET": addr}).reloading("reloading config")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = recv_lines(sock)
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert before <= int(lines[1].split("=", 1)[1]) <= after
    assert lines[2] == "STATUS=reloading config"


def test_extend_timeout(notify_sock: tuple[socket.socket, str]) -> None:
    sock, addr = notify_sock
    Notifier(env={"NOTIFY_SOCKET": addr}).extend_timeout(2.5)
    assert recv_lines(sock) == ["EXTEND_TIMEOUT_USEC=2500000"]


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("2000000", None, 1.0),
        ("2000000", "self", 1.0),
        ("2000000", "1", None),  # the watchdog belongs to another process
        ("0", None, None),
        ("abc", None, None),
        ("", None, None),
        ("2000000", "notapid", None),
    ],
)
def test_watchdog_interval(usec: str, pid: str | None, expected: float | None) -> None:
    env = {"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": usec}
    if pid is not None:
        env["WATCHDOG_PID"] = str(os.getpid()) if pid == "self" else pid
    assert Notifier(env=env).watchdog_interval() == expected


def test_unset_environment_removes_variables() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1", "HOME": "/"}
    n = Notifier(env=env, unset_environment=True)
    assert n.enabled
    assert env == {"HOME": "/"}


def test_vanished_socket_never_raises_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "notify"
    n = Notifier(env={"NOTIFY_SOCKET": str(path)})
    with caplog.at_level(logging.INFO, logger="scannerd.sdnotify"):
        for _ in range(5):
            n.notify("WATCHDOG=1")  # nobody listening: ENOENT each time
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        # systemd comes back (e.g. after daemon-reexec): messages flow again, recovery logged
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.settimeout(5)
        try:
            n.notify("READY=1")
            assert recv_lines(sock) == ["READY=1"]
        finally:
            sock.close()
        assert any("works again" in r.getMessage() for r in caplog.records)
        # and a second outage is reported again
        path.unlink()
        n.notify("WATCHDOG=1")
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def _collect(sock: socket.socket, seconds: float) -> list[tuple[float, str]]:
    out: list[tuple[float, str]] = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        out.append((time.monotonic(), data.decode()))
    return out


def test_watchdog_loop_rate_and_hung_loop_stops_petting(
    abstract_sock: tuple[socket.socket, str],
) -> None:
    sock, addr = abstract_sock
    # WATCHDOG_USEC=100 ms → a ping every 50 ms
    n = Notifier(env={"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "100000"})
    assert n.watchdog_interval() == pytest.approx(0.05)

    # A receiver thread stamps each datagram on arrival, independent of the (hanging) loop.
    got: list[tuple[float, str]] = []
    stop = threading.Event()

    def receiver() -> None:
        sock.settimeout(0.02)
        while not stop.is_set():
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            got.append((time.monotonic(), data.decode()))

    marks: dict[str, float] = {}

    async def scenario() -> None:
        task = asyncio.create_task(watchdog_loop(n))
        await asyncio.sleep(0.5)
        marks["hang"] = time.monotonic()
        time.sleep(0.4)  # the event loop hangs: no pings may be sent meanwhile
        marks["resume"] = time.monotonic()
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    t = threading.Thread(target=receiver)
    t.start()
    try:
        asyncio.run(scenario())
        time.sleep(0.1)
    finally:
        stop.set()
        t.join()
    assert {msg for _, msg in got} == {"WATCHDOG=1"}
    before = [ts for ts, _ in got if ts < marks["hang"]]
    during = [ts for ts, _ in got if marks["hang"] + 0.01 < ts < marks["resume"]]
    after = [ts for ts, _ in got if ts > marks["resume"]]
    assert 8 <= len(before) <= 12, len(before)  # 0.5 s at 50 ms, first ping at once
    assert during == [], [round(ts - marks["hang"], 3) for ts, _ in got]
    assert 4 <= len(after) <= 8, len(after)


def test_notifier_reads_real_process_environment(notify_sock: tuple[socket.socket, str]) -> None:
    """The default Notifier() takes NOTIFY_SOCKET from the process environment, as under systemd."""
    sock, addr = notify_sock
    code = (
        "from scannerd.sdnotify import Notifier\n"
        "n = Notifier(unset_environment=True)\n"
        "import os; assert 'NOTIFY_SOCKET' not in os.environ\n"
        "n.ready('child ok')\n"
    )
    env = {**os.environ, "NOTIFY_SOCKET": addr, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=30)
    assert recv_lines(sock) == ["READY=1", "STATUS=child ok"]


# --- end to end with the daemon: runs once service.py wires the Notifier in -----------------

_HAVE_DAEMON = all(
    importlib.util.find_spec(m) is not None for m in ("scannerd.cli", "scannerd.service")
)


@pytest.mark.skipif(not _HAVE_DAEMON, reason="scannerd.cli/scannerd.service not present yet")
def test_scannerd_run_ready_watchdog_stopping(
    tmp_path: Path, notify_sock: tuple[socket.socket, str]
) -> None:
    sock, addr = notify_sock
    his = tmp_path / "scannerd.sock"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[socket]\npath = "{his}"\n')
    env = {**os.environ, "NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "200000", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "scannerd", "run", "-c", str(cfg)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        ready = False
        deadline = time.monotonic() + 20
        while not ready and time.monotonic() < deadline:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            lines = recv_lines(sock)
            if "READY=1" in lines:
                ready = True
                # READY must come only once the HIS socket accepts connections
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                    c.connect(str(his))
                assert any(line.startswith("STATUS=") for line in lines), lines
        assert ready, "no READY=1 from scannerd run"
        got = _collect(sock, 1.0)
        pings = [m for _, m in got if "WATCHDOG=1" in m.split("\n")]
        assert 6 <= len(pings) <= 14, got  # every 100 ms
        # SIGHUP (systemctl reload): RELOADING=1 with MONOTONIC_USEC, then READY=1 again
        proc.send_signal(signal.SIGHUP)
        seen: list[list[str]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("READY=1" in m for m in seen):
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            lines = recv_lines(sock)
            if lines != ["WATCHDOG=1"]:
                seen.append(lines)
        assert seen and seen[0][0] == "RELOADING=1", seen
        assert any(x.startswith("MONOTONIC_USEC=") for x in seen[0]), seen
        assert "READY=1" in seen[-1], seen
        proc.send_signal(signal.SIGTERM)
        stopping = False
        deadline = time.monotonic() + 10
        while not stopping and time.monotonic() < deadline:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            stopping = "STOPPING=1" in recv_lines(sock)
        assert stopping
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_full_receive_queue_never_blocks_the_caller(notify_sock: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture) -> None:
    """systemd not reading: its queue fills. A status line must be dropped at once, not after a
    send timeout per call (the old 0.5 s timeout made 8 calls stall the loop for 4 s)."""
    receiver, address = notify_sock
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    filler.setblocking(False)
    sent = 0
    with pytest.raises(BlockingIOError):
        while True:  # the kernel caps the queue (net.unix.max_dgram_qlen and the buffer)
            filler.sendto(b"X" * 1024, address)
            sent += 1
    filler.close()
    assert sent > 0
    n = Notifier(env={"NOTIFY_SOCKET": address})
    with caplog.at_level(logging.WARNING, logger="scannerd.sdnotify"):
        start = time.monotonic()
        for _ in range(8):
            n.status("busy")
        elapsed = time.monotonic() - start
    # A blocking send would take >= 8 × 0.5 s; non-blocking takes microseconds. The bound is
    # loose on purpose (a loaded machine), and still far below what a blocking send costs.
    assert elapsed < 2.0, elapsed
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1
    # Once systemd reads again, messages flow again.
    receiver.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            receiver.recv(4096)
    receiver.settimeout(5)
    n.ready()
    assert recv_lines(receiver) == ["READY=1"]
    n.close()
