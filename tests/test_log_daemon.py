"""A real daemon whose stderr nobody reads (a wedged journald, a pipe to a stuck process):
logging must not stall the event loop, so scans keep reaching the HIS (issue 11 item 4)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers import REPO, Client, Daemon, PtyScanner, wait_for, wechat_code

SCANS = 400  # at debug level, several times what a 64 KiB pipe holds in log lines


def test_scans_flow_while_stderr_is_a_pipe_nobody_reads(tmp_path: Path) -> None:
    pty = PtyScanner(tmp_path, "scanner")
    sock = tmp_path / "scannerd.sock"
    config = tmp_path / "config.toml"
    config.write_text(f'[socket]\npath = "{sock}"\n[[scanner]]\nname = "w1"\npath = "{pty.link}"\nterminator = "CR"\n')
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "scannerd", "run", "-c", str(config), "--log-format", "json", "--log-level", "debug"],
        stdin=subprocess.DEVNULL, stdout=write_end, stderr=write_end, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
    )
    os.close(write_end)
    try:
        wait_for(lambda: proc.poll() is not None or sock.exists(), 30)
        assert proc.poll() is None, "daemon exited"
        client = Client(sock)
        client.wait_present(timeout=30)
        pty.release_slave()
        rng = random.Random(11)
        codes = [wechat_code(rng) for _ in range(SCANS)]
        for i, code in enumerate(codes):
            pty.write(f"{code}\r".encode(), baud=None)
            event = client.next_of("scan", timeout=30)  # a loop blocked on stderr never answers
            assert event["code"] == code, i
        # The pipe really is full: the daemon is dropping lines, not writing them.
        # (The writer thread may still be filling it on a loaded machine: read what is there,
        # waiting for it, up to a deadline.)
        os.set_blocking(read_end, False)
        backlog = b""
        deadline = time.monotonic() + 20
        while len(backlog) < 60_000 and time.monotonic() < deadline:
            try:
                chunk = os.read(read_end, 1 << 16)
            except BlockingIOError:
                time.sleep(0.05)
                continue
            if not chunk:
                break
            backlog += chunk
        assert len(backlog) >= 60_000, len(backlog)
        client.close()
        # Now read everything: what was queued comes out (as JSON), and no code leaked.
        proc.send_signal(signal.SIGTERM)
        os.set_blocking(read_end, True)
        rest = backlog
        while chunk := os.read(read_end, 1 << 16):
            rest += chunk
        proc.wait(30)
        events = [json.loads(line)["event"] for line in rest.decode().splitlines()]
        assert "stopping" in events
        assert all(code not in rest.decode(errors="replace") for code in codes)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(read_end)
        pty.close()


def test_sigterm_during_traffic_leaves_only_json_lines(tmp_path: Path) -> None:
    """SIGTERM while HIS clients are connected and scans flow: asyncio used to print a raw
    CancelledError traceback per client (issue 11 item 14). Every line must be one JSON object."""
    pty = PtyScanner(tmp_path, "scanner")
    sock = tmp_path / "scannerd.sock"
    config = tmp_path / "config.toml"
    config.write_text(f'[socket]\npath = "{sock}"\n[[scanner]]\nname = "w1"\npath = "{pty.link}"\n')
    daemon = Daemon(config, sock)
    clients: list[Client] = []
    try:
        daemon.wait_ready(30)
        # One HIS takes the scans; monitors see them live (each connection is a client task).
        clients = [Client(sock), *(Client(sock, role="monitor") for _ in range(3))]
        clients[0].wait_present(timeout=30)
        pty.release_slave()
        rng = random.Random(14)
        stop_scanning = threading.Event()

        def scan() -> None:
            while not stop_scanning.is_set():
                try:
                    pty.write(f"{wechat_code(rng)}\r".encode(), baud=None)
                except OSError:
                    return
                stop_scanning.wait(0.002)

        scanner = threading.Thread(target=scan, daemon=True)
        scanner.start()
        for c in clients:
            c.next_of("scan", timeout=30)  # traffic is flowing to every client
        # Let the clients fall behind (they stop reading) while scans keep coming.
        wait_for(lambda: sum(e.get("event") == "scan" for e in daemon.log_events()) > 200, 60)
        assert daemon.stop(30) == 0
        stop_scanning.set()
        scanner.join(10)
        raw = [line for line in daemon.log().splitlines() if line.strip()]
        not_json = []
        for line in raw:
            try:
                json.loads(line)
            except json.JSONDecodeError:
                not_json.append(line)
        assert not not_json, "\n".join(not_json[:20])
        assert any(json.loads(line)["event"] == "stopping" for line in raw)
    finally:
        for c in clients:
            c.close()
        daemon.stop()
        pty.close()
