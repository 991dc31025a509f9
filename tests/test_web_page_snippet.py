"""The README's JavaScript snippet, as written in docs/readme/websocket.md, run in headless
Chromium on an HIS page of another origin: refused from an origin not listed, and from a listed
one it receives a pty scan (the one that waited) and acknowledges it."""

from __future__ import annotations

import functools
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdp import Browser, chromium_or_skip
from helpers import REPO, Client, Daemon, PtyScanner, wait_for, wechat_code
from ws_client import TOKEN, free_port, wait_listening, websocket_section

README = REPO / "docs" / "readme" / "websocket.md"


def snippet() -> str:
    blocks = re.findall(r"```js\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1, "one JavaScript snippet in the README section"
    assert len(blocks[0].splitlines()) <= 20
    return blocks[0]


@pytest.fixture
def his_site(tmp_path: Path) -> Iterator[int]:
    """A stand-in for the hospital's HIS web server: an empty page on another loopback port."""
    root = tmp_path / "his"
    root.mkdir()
    (root / "index.html").write_text("<!doctype html><title>HIS</title><p>HIS cashier page</p>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_the_readme_snippet_receives_and_acks_a_scan_from_a_listed_origin_only(tmp_path: Path, his_site: int) -> None:
    chromium_or_skip()
    pty = PtyScanner(tmp_path, "scanner")
    port = free_port()
    sock = tmp_path / "s.sock"
    config = tmp_path / "config.toml"
    section = websocket_section(port).replace('allowed_origins = ["', f'allowed_origins = ["http://127.0.0.1:{his_site}", "')
    config.write_text(f'[socket]\npath = "{sock}"\n{section}\n[[scanner]]\nname = "window-1"\npath = "{pty.link}"\nterminator = "CR"\n')
    daemon = Daemon(config, sock)
    browser = Browser(tmp_path / "chromium-profile")
    try:
        daemon.wait_ready()
        Client(sock, role=None).wait_present()
        pty.release_slave()
        wait_listening(sock)
        code = snippet().replace("ws://127.0.0.1:8765/ws", f"ws://127.0.0.1:{port}/ws").replace('"…"', f'"{TOKEN}"')
        run = "window.got = []; window.handleScan = (scan) => window.got.push(scan);\n(() => {\n" + code + "\n})(); true"

        # localhost is another origin than 127.0.0.1, and not listed: refused before the upgrade.
        stranger = browser.new_page()
        stranger.navigate(f"http://localhost:{his_site}/")
        assert stranger.evaluate(run) is True
        wait_for(lambda: any(e.get("event") == "websocket_refused" and e.get("status") == 403
                             and e.get("origin") == f"http://localhost:{his_site}" for e in daemon.log_events()), 15)
        scan = wechat_code()
        pty.write(f"{scan}\r".encode(), None)
        wait_for(lambda: Client(sock, role=None).status()["sinks"]["socket"]["queued"] == 1, 10)
        assert stranger.evaluate("window.got.length") == 0

        his = browser.new_page()
        his.navigate(f"http://127.0.0.1:{his_site}/")
        assert his.evaluate(run) is True
        got = his.wait_for("window.got.length === 1 && window.got[0]", timeout=15)
        assert got["code"] == scan and got["channel"] == "wechat" and got["queued"] is True

        def acked() -> bool:
            metrics = Client(sock, role=None).command({"cmd": "metrics"})["metrics"]
            return sum(s["value"] for s in metrics.get("scannerd_acks_total", [])) == 1

        wait_for(acked, 10)
        counts = Client(sock, role=None).status()["sinks"]["socket"]
        assert counts["unacked"] == 0 and counts["queued"] == 0 and counts["his"] == 1
        assert stranger.evaluate("window.got.length") == 0
        assert scan not in daemon.log()
    finally:
        browser.close()
        daemon.stop()
        pty.close()
