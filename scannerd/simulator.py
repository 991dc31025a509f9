"""A simulated serial scanner on a pseudo-terminal, for trying scannerd without hardware.

It writes the same bytes a real 9600-baud scan box would: AIM id, code, CR, paced like the
wire. The codes are random strings shaped like each channel's codes, never anyone's data.
"""

from __future__ import annotations

import os
import random
import termios
import time
import tty
from collections.abc import Iterator
from pathlib import Path


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _ean13(rng: random.Random) -> str:
    body = "69" + _digits(rng, 10)
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def sample_scans(rng: random.Random | None = None) -> Iterator[tuple[str, str]]:
    """Yield (label, bytes-to-send-without-terminator) forever, cycling through every kind."""
    rng = rng or random.Random()
    while True:
        # WeChat: month 13 in the ID-number date position keeps it from being a valid 身份证.
        wechat = f"1{rng.randint(0, 4)}" + _digits(rng, 8) + "13" + _digits(rng, 6)
        yield "WeChat Pay", "]Q1" + wechat
        yield "Alipay", "]Q1" + str(rng.randint(25, 30)) + _digits(rng, 16)
        yield "UnionPay 云闪付", "]Q1" + "62" + _digits(rng, 17)
        yield "e-CNY", "]Q1" + "01" + _digits(rng, 17)
        yield "electronic health card", "]Q1" + "".join(rng.choice("0123456789ABCDEF") for _ in range(64)) + ":1"
        yield "prescription EAN-13", "]E0" + _ean13(rng)
        yield "medical-insurance QR (candidate)", "]Q1" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(40))
        yield "merchant receive code (refused)", "]Q1wxp://f2f0" + "".join(rng.choice("abcdefghijklmnop0123456789") for _ in range(20))
        yield "garbage read", "\x02\x07"


class SimulatedScanner:
    """A pty whose slave end the daemon opens through `link` (like /dev/serial/by-id/…)."""

    def __init__(self, link: Path, baud: int = 9600) -> None:
        self.link = link
        self.baud = baud
        self.master, self._slave = os.openpty()
        tty.setraw(self.master, when=termios.TCSANOW)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.ttyname(self._slave))

    def send(self, text: str, terminator: str = "\r") -> None:
        per_char = 10 / self.baud  # 8N1: ten bits on the wire per byte
        for b in (text + terminator).encode("utf-8"):
            os.write(self.master, bytes([b]))
            time.sleep(per_char)

    def close(self) -> None:
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.link.is_symlink():
            self.link.unlink()


def demo_directory() -> Path:
    """Where `scannerd demo` keeps its socket, config, ptys and log: a well-known place, so the
    CLI (`inject`, `status`, `listen`) finds a running demo without flags."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "scannerd-demo"
    return Path(f"/tmp/scannerd-demo-{os.geteuid()}")


def demo_socket_path() -> str:
    return str(demo_directory() / "scannerd.sock")


def demo_running() -> bool:
    """A `scannerd demo` holds its folder's lock and serves its socket there right now."""
    directory = demo_directory()
    try:
        pid = int((directory / "demo.lock").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return os.path.exists(f"/proc/{pid}") and os.path.exists(directory / "scannerd.sock")


def demo_config(directory: Path, link: Path, kiosk: Path | None = None, socket_path: Path | None = None) -> str:
    """A config for simulated scanners: a cashier window on `link` and, optionally, a kiosk on
    `kiosk`. Auto-detection is off: a demo must never grab the site's real scanners."""
    text = f"""# Written by scannerd (simulate / demo): simulated serial scanners, the socket in this folder.
[site]
area = "outpatient"

[socket]
path = "{socket_path or directory / 'scannerd.sock'}"

[discovery]
auto = false

[[scanner]]
name = "sim-window-1"
transport = "serial"
path = "{link}"
baudrate = 9600
role = "window"
terminator = "CR"
"""
    if kiosk is not None:
        text += f"""
[[scanner]]
name = "sim-kiosk-1"
transport = "serial"
path = "{kiosk}"
baudrate = 9600
role = "kiosk"
terminator = "CR"
"""
    return text
