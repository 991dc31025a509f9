"""The diagnostic page in headless Chromium against the real daemon: the token typed once, a pty
scan on the page within 1 s with its masked code, scanner state, the inject button only when
the site allows inject; a screenshot is kept as a test artefact."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scannerd.model import mask

from cdp import Browser, Page, chromium_or_skip
from helpers import Client, Daemon, PtyScanner, wait_for, wechat_code
from ws_client import TOKEN, WsClient, free_port, wait_listening, websocket_section


def write_config(tmp_path: Path, pty: PtyScanner, port: int, extra: str = "") -> Path:
    config = tmp_path / "config.toml"
    config.write_text(f"""
[socket]
path = "{tmp_path / 's.sock'}"
[policy]
duplicate_window_ms = 0
{websocket_section(port, extra=extra)}
[[scanner]]
name = "window-1"
path = "{pty.link}"
terminator = "CR"
[[scanner]]
name = "kiosk-2"
path = "{tmp_path / 'absent-scanner'}"
role = "kiosk"
""")
    return config


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Daemon, PtyScanner, Path, int]]:
    chromium_or_skip()
    pty = PtyScanner(tmp_path, "scanner")
    port = free_port()
    sock = tmp_path / "s.sock"
    daemon = Daemon(write_config(tmp_path, pty, port), sock)
    try:
        daemon.wait_ready()
        wait_for(lambda: any(d["present"] for d in Client(sock, role=None).status()["devices"]), 10)
        pty.release_slave()
        wait_listening(sock)
        yield daemon, pty, sock, port
    finally:
        daemon.stop()
        pty.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path / "chromium-profile")
    try:
        yield b
    finally:
        b.close()


def artefact(tmp_path: Path, name: str) -> Path:
    directory = Path(os.environ.get("TEST_ARTIFACTS", tmp_path))
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name


def shown(page: Page, element_id: str) -> bool:
    """Really on screen (the hidden attribute alone can be overridden by CSS)."""
    return bool(page.evaluate(f"document.getElementById({element_id!r}).getClientRects().length > 0"))


def log_in(page: Page, port: int) -> None:
    page.navigate(f"http://127.0.0.1:{port}/")
    page.wait_for("!document.getElementById('login').hidden")
    page.type_into("#token", TOKEN)
    page.click("#login button")
    page.wait_for("document.getElementById('state').textContent === 'connected'")
    page.wait_for("document.querySelector('#devices tbody tr[data-device=\"window-1\"]') !== null")


def test_a_pty_scan_appears_on_the_page_within_a_second_masked(tmp_path: Path, browser: Browser,
                                                                rig: tuple[Daemon, PtyScanner, Path, int]) -> None:
    daemon, pty, sock, port = rig
    page = browser.new_page()
    log_in(page, port)
    assert page.evaluate("sessionStorage.getItem('scannerd.token')") == TOKEN
    assert not shown(page, "login") and shown(page, "main")
    assert not shown(page, "inject-panel")  # inject not allowed
    rows = page.evaluate("[...document.querySelectorAll('#devices tbody tr')].map(r => r.innerText)")
    assert any("window-1" in r and "present" in r for r in rows)
    assert any("kiosk-2" in r and "absent" in r and "disarmed" in r for r in rows)
    Client(sock, role=None).command({"cmd": "arm", "device": "kiosk-2", "ttl_s": 120})
    page.wait_for("/armed, \\d+(\\.\\d)? s left/.test(document.querySelector('#devices tbody tr[data-device=\"kiosk-2\"]').innerText)")

    code = wechat_code()
    written = time.monotonic()
    pty.write(f"{code}\r".encode(), None)
    row = page.wait_for("(() => { const r = document.querySelector('#scans tbody tr.scan');"
                        " return r && [...r.cells].map(c => c.textContent); })()", timeout=5, interval=0.01)
    elapsed = time.monotonic() - written
    assert row[1] == "window-1" and row[2] == "wechat" and row[3] == "payment" and row[4] == mask(code)
    assert row[5].endswith(" ms") and row[6].endswith(" µs")
    assert elapsed < 1.0, f"the scan took {elapsed:.3f} s to appear"
    assert code not in page.evaluate("document.documentElement.outerHTML")
    assert page.evaluate("getComputedStyle(document.querySelector('#scans .channel')).backgroundColor") == "rgb(7, 193, 96)"
    page.wait_for("document.getElementById('scans-today').textContent === '1'")
    assert page.evaluate("document.getElementById('rejects-today').textContent") == "0"
    page.wait_for("document.querySelector('#devices tbody tr[data-device=\"window-1\"]').cells[6].textContent === '1 scan'")
    assert page.evaluate("document.getElementById('channel-counts').innerText").strip() == "wechat: 1"
    shot = page.screenshot(artefact(tmp_path, "diagnostic-page.png"))
    print(f"\nscreenshot: {shot}")
    assert shot.stat().st_size > 10_000
    # The monitor took nothing: the scan still waits for the HIS.
    assert Client(sock).next_of("scan")["code"] == code
    # The token was typed once: a reload of the tab connects without asking again.
    page.navigate(f"http://127.0.0.1:{port}/")
    page.wait_for("document.getElementById('state').textContent === 'connected'")
    assert not shown(page, "login")
    assert code not in daemon.log()


def test_the_inject_button_only_when_allowed_and_a_bad_token_asks_again(tmp_path: Path, browser: Browser,
                                                                        rig: tuple[Daemon, PtyScanner, Path, int]) -> None:
    daemon, pty, sock, port = rig
    page = browser.new_page()
    page.navigate(f"http://127.0.0.1:{port}/")
    page.wait_for("!document.getElementById('login').hidden")
    page.type_into("#token", "not-the-token-0000000000")
    page.click("#login button")
    page.wait_for("document.getElementById('login-error').textContent === 'bad token'")
    assert page.evaluate("sessionStorage.getItem('scannerd.token')") is None
    write_config(tmp_path, pty, port, extra="allow_inject = true")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "inject" in WsClient(port, role=None).hello["commands"], 15)
    page.type_into("#token", TOKEN)
    page.click("#login button")
    page.wait_for("document.getElementById('state').textContent === 'connected'")
    page.wait_for("!document.getElementById('inject-panel').hidden", timeout=15)
    assert shown(page, "inject-panel") and not shown(page, "login")
    his = Client(sock)
    page.wait_for("document.getElementById('inject-device').value === 'window-1' || "
                  "(document.getElementById('inject-device').value = 'window-1')")
    page.click("#inject-button")
    got = his.next_of("scan")
    assert got["injected"] is True and got["device"] == "window-1"
    page.wait_for(f"document.querySelector('#scans tbody tr.scan td.code')?.textContent === {mask(got['code'])!r}")
    page.wait_for("document.getElementById('inject-result').textContent.startsWith('sent ')")
    page.screenshot(artefact(tmp_path, "diagnostic-page-inject.png"))
