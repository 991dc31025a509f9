"""A real daemon whose stderr nobody reads (a wedged journald, a pipe to a stuck process):
logging must not stall the event loop, so scans keep reaching the HIS (issue 11 item 4)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from helpers import REPO, Client, PtyScanner, wait_for, wechat_code

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
        os.set_blocking(read_end, False)
        backlog = b""
        while True:
            try:
                chunk = os.read(read_end, 1 << 16)
            except BlockingIOError:
                break
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
