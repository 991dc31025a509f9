"""`scannerd run` as a real process: pty scanner → classify → Unix socket → HIS client."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scannerd.model import mask

from helpers import REPO, Client, Daemon, PtyScanner, alipay_code, unionpay_code, wait_for, wechat_code


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Daemon, PtyScanner, Path]]:
    pty = PtyScanner(tmp_path, "scanner-by-id")
    sock = tmp_path / "scannerd.sock"
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[site]
area = "emergency"
[socket]
path = "{sock}"
[policy]
duplicate_window_ms = 1500
[[scanner]]
name = "window-3"
path = "{pty.link}"
baudrate = 9600
role = "window"
terminator = "CR"
idle_gap_ms = 300
"""
    )
    daemon = Daemon(config, sock)
    try:
        daemon.wait_ready()
        yield daemon, pty, sock
    finally:
        daemon.stop()
        pty.close()


def test_serial_scan_reaches_client_classified_and_timed(rig: tuple[Daemon, PtyScanner, Path]) -> None:
    daemon, pty, sock = rig
    client = Client(sock)
    assert client.hello["protocol"] == 2 and client.hello["subscribe"] == "required"
    client.wait_present()
    pty.release_slave()
    codes = {"wechat": wechat_code(), "alipay": alipay_code(), "unionpay": unionpay_code()}
    for code in codes.values():
        pty.write(f"]Q1{code}\r".encode())
    got = [client.next_of("scan") for _ in codes]
    assert [(e["channel"], e["code"]) for e in got] == list(codes.items())
    for e in got:
        assert e["kind"] == "payment" and e["device"] == "window-3" and e["area"] == "emergency" and e["role"] == "window"
        assert e["symbology"] == "qr" and e["rule"].startswith(e["channel"])
        assert e["latency"]["scan_ms"] > 5  # ~21 characters at 9600 baud
        assert 0 <= e["latency"]["pipeline_us"] < 1_000_000
        assert len(e["id"]) == 26 and e["ts"][10] == "T"
    # Codes are bearer tokens: the daemon's log never holds one in full.
    masked = codes["wechat"][:4] + "*" * 10 + codes["wechat"][-4:]
    wait_for(lambda: masked in daemon.log(), 30)  # the log writer batches lines: they come a little later
    log = daemon.log()
    for code in codes.values():
        assert code not in log


def test_double_read_is_suppressed(rig: tuple[Daemon, PtyScanner, Path]) -> None:
    daemon, pty, sock = rig
    client = Client(sock)
    pty.release_slave()
    code = wechat_code()
    pty.write(f"{code}\r{code}\r".encode())
    assert client.next_of("scan")["code"] == code
    assert client.nothing_within(0.5, "scan")


def test_inject_reaches_client_marked_injected(rig: tuple[Daemon, PtyScanner, Path]) -> None:
    _daemon, _pty, sock = rig
    client = Client(sock)
    code = alipay_code()
    out = subprocess.run(
        [sys.executable, "-m", "scannerd", "inject", "--socket", str(sock), "--device", "window-3", code],
        capture_output=True, text=True, cwd=REPO, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    assert printed["channel"] == "alipay" and code not in out.stdout  # masked on the terminal
    event = client.next_of("scan")
    assert event["injected"] is True and event["code"] == code and event["channel"] == "alipay"


def test_two_clients_and_a_stuck_one(rig: tuple[Daemon, PtyScanner, Path]) -> None:
    _daemon, pty, sock = rig
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(str(sock))  # connects and never reads
    his, monitor = Client(sock), Client(sock, role="monitor")
    pty.release_slave()
    codes = []
    for i in range(40):
        code = f"13456789012{i:04d}139"[:18]
        codes.append(code)
        pty.write(f"{code}\r".encode(), None)
        time.sleep(0.002)
    seen_his = [his.next_of("scan")["code"] for _ in range(40)]
    seen_monitor = [monitor.next_of("scan") for _ in range(40)]
    assert seen_his == codes
    # The monitor sees the same scans, in order, never a full code.
    assert [e["masked"] for e in seen_monitor] == [mask(c) for c in codes]
    assert not any("code" in e for e in seen_monitor)
    stuck.close()


def test_listen_json_prints_events(rig: tuple[Daemon, PtyScanner, Path]) -> None:
    _daemon, pty, sock = rig
    listener = subprocess.Popen(
        [sys.executable, "-m", "scannerd", "listen", "--json", "--socket", str(sock)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        wait_for(lambda: Client(sock, role=None).status()["sinks"]["socket"]["monitors"] >= 1, 10)
        pty.release_slave()
        code = unionpay_code()
        pty.write(f"{code}\r".encode())
        assert listener.stdout is not None
        while True:
            event = json.loads(listener.stdout.readline())
            if event["type"] == "scan":
                break
        # listen is a monitor: it sees the scan with its code masked.
        assert event["channel"] == "unionpay" and event["masked"] == mask(code) and "code" not in event
    finally:
        listener.terminate()
        listener.wait(5)


def test_status_command_and_sigterm_exit(rig: tuple[Daemon, PtyScanner, Path]) -> None:
    daemon, _pty, sock = rig
    out = subprocess.run([sys.executable, "-m", "scannerd", "status", "--socket", str(sock)], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "window-3" in out.stdout and "present" in out.stdout
    daemon.signal(signal.SIGTERM)
    assert daemon.proc.wait(10) == 0
    assert not sock.exists()


def test_unplug_and_replug_while_client_connected(rig: tuple[Daemon, PtyScanner, Path]) -> None:
    _daemon, pty, sock = rig
    client = Client(sock)
    pty.release_slave()
    pty.write(b"1345678")
    time.sleep(0.05)  # the daemon has read the partial scan; its idle gap (300 ms) has not passed
    pty.unplug()
    reject = client.next_of("reject")
    assert reject["reason"] == "device_removed" and "1345678" not in json.dumps(reject)
    assert client.next_of("device")["state"] == "absent"
    pty.replug()
    assert client.next_of("device")["state"] == "present"
    Client(sock, role=None).wait_present()
    pty.release_slave()
    code = wechat_code()
    pty.write(f"{code}\r".encode())
    assert client.next_of("scan")["code"] == code
