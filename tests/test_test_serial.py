"""`scannerd test` on serial scanners (12.5): a real pty, the real CLI in a subprocess.

The pty stands for a serial port reached by a /dev/serial/by-id-like link; before the fix this
died with "Inappropriate ioctl for device" (it tried EVIOCGRAB on the tty).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scannerd.commands.test import is_serial_port

from helpers import REPO, PtyScanner, alipay_code, readable, wechat_code


class CliProcess:
    """`python -m scannerd test …` with its output read as it comes, with deadlines."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([sys.executable, "-m", "scannerd", "test", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env, cwd=REPO)
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        self.out = b""

    def wait_for_output(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.out:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None and not readable(self.fd, 0):
                raise AssertionError(f"{text!r} not seen; output so far:\n{self.out.decode(errors='replace')}")
            if readable(self.fd, min(left, 0.5)):
                chunk = os.read(self.fd, 65536)
                if not chunk and self.proc.poll() is not None:
                    continue
                self.out += chunk

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        try:
            rest, _ = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode, (self.out + rest).decode()


@pytest.fixture
def empty_config(tmp_path: Path) -> Path:
    conf = tmp_path / "config.toml"
    conf.write_text("")
    return conf


def test_scannerd_test_on_a_pty_reports_what_the_scanner_sends_and_the_lines_to_paste(
    tmp_path: Path, empty_config: Path
) -> None:
    scanner = PtyScanner(tmp_path, "usb-Honeywell_1900-if00")
    codes = [wechat_code(), alipay_code(), "RX0000000001"]
    p = CliProcess(str(scanner.link), "-c", str(empty_config), "--count", str(len(codes)), "--timeout", "60")
    try:
        p.wait_for_output("scan a code")
        scanner.release_slave()
        for aim, code in zip(["]Q1", "]Q1", "]C0"], codes, strict=True):
            scanner.write(f"{aim}{code}\r\n".encode(), 9600)
        rc, out = p.finish()
    finally:
        scanner.close()
    assert rc == 0, out
    assert "Inappropriate ioctl" not in out
    assert f"{scanner.link}: open, 9600 8N1, utf-8, locked" in out
    assert "wechat/payment (rule wechat.v1)" in out and "alipay/payment" in out
    assert all(code not in out for code in codes)  # masked: bearer tokens
    assert "3 read(s)" in out
    assert "terminator: CRLF (CRLF 3; of 3 read(s))" in out
    assert "AIM prefix: yes (]Q1 2, ]C0 1)" in out
    paste = out.split("paste into the config", 1)[1]
    assert "[[scanner]]" in paste
    assert f'path = "{scanner.link}"' in paste
    assert 'terminator = "CRLF"' in paste and "baudrate = 9600" in paste
    assert "aim = false" not in paste and "encoding" not in paste


def test_scannerd_test_finds_a_gbk_tab_scanner_that_the_entry_reads_wrong(tmp_path: Path) -> None:
    """The config says utf-8 and CR; the scanner sends GBK text with a TAB and no AIM id: the
    scans are rejects, and the report says what to change."""
    scanner = PtyScanner(tmp_path)
    conf = tmp_path / "config.toml"
    conf.write_text(f'[[scanner]]\nname = "window-3"\npath = "{scanner.link}"\nterminator = "CR"\nbaudrate = 115200\n')
    p = CliProcess("window-3", "-c", str(conf), "--count", "2", "--timeout", "60")
    try:
        p.wait_for_output("scan a code")
        scanner.release_slave()
        for n, text in enumerate(("P张三0001", "P李四0002"), 1):
            scanner.write(text.encode("gbk") + b"\t", 115200)
            p.wait_for_output(f"#{n} reject")  # with no CR, only the idle gap parts the two
        rc, out = p.finish()
    finally:
        scanner.close()
    assert rc == 0, out
    assert out.count("reject: ") == 2
    assert "terminator: TAB (TAB 2; of 2 read(s))" in out
    assert "encoding: gbk" in out
    paste = out.split("paste into the config", 1)[1]
    assert 'name = "window-3"' in paste and "baudrate = 115200" in paste
    assert 'terminator = "TAB"' in paste and 'encoding = "gbk"' in paste and "aim = false" in paste


def test_scannerd_test_on_a_missing_serial_port_says_so_and_exits_1(tmp_path: Path, empty_config: Path) -> None:
    p = CliProcess("--serial", str(tmp_path / "ttyACM9"), "-c", str(empty_config), "--timeout", "30")
    rc, out = p.finish()
    assert rc == 1, out
    assert "absent" in out and "No such file" in out


def test_is_serial_port(tmp_path: Path) -> None:
    scanner = PtyScanner(tmp_path)
    try:
        assert is_serial_port(str(scanner.link))  # a link to /dev/pts/N
        assert is_serial_port(scanner.slave_path)
        assert not is_serial_port(os.devnull)  # a character device, not a tty
        assert not is_serial_port("/dev/input/event5")  # by name: never opened
        assert not is_serial_port(str(tmp_path / "missing"))
    finally:
        scanner.close()
