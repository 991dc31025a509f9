"""At the open-files limit the daemon keeps serving its connections, logs the condition once
(not a traceback per accept retry), and accepts again once descriptors are free."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpers import REPO, Client, wait_for


def test_accept_at_the_open_files_limit_logs_once_and_keeps_serving(tmp_path: Path) -> None:
    sock = tmp_path / "s.sock"
    config = tmp_path / "config.toml"
    config.write_text(f'[socket]\npath = "{sock}"\nmax_clients = 4096\n[discovery]\nauto = false\n')
    log_path = tmp_path / "daemon.log"
    limit = 64

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "scannerd", "run", "-c", str(config), "--log-format", "json"],
                                stdout=subprocess.DEVNULL, stderr=log, cwd=REPO, preexec_fn=low_limit)
    held: list[socket.socket] = []
    try:
        wait_for(sock.exists, 20)
        first = Client(sock, role=None)
        # Connect far past the limit: the kernel queues what the daemon cannot accept.
        for _ in range(limit * 2):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(str(sock))
            except BlockingIOError:
                s.close()
                break
            held.append(s)
        time.sleep(3)  # the condition lasting a few seconds is the point: several accept retries
        assert first.status()["version"]  # an open connection is still served
        size = log_path.stat().st_size
        assert size < 20_000, f"log grew {size} bytes in 3 s at the limit"
        text = log_path.read_text()
        assert text.count('"loop_error"') == 1 and "Traceback" not in text
        for s in held:
            s.close()
        held.clear()
        wait_for(lambda: Client(sock, role=None).status()["version"], 20)  # accepting again
    finally:
        for s in held:
            s.close()
        proc.terminate()
        proc.wait(10)
