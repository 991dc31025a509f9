"""The WebSocket transport against the real daemon: Origin, token, rate limit, inject rights,
the loopback rule, the busy-port policy and /metrics on the same listener."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from scannerd.model import mask

from helpers import REPO, Client, Daemon, PtyScanner, wait_for, wechat_code
from ws_client import HIS_ORIGIN, TOKEN, WsClient, free_port, wait_listening, websocket_section


def write_config(tmp_path: Path, pty: PtyScanner, port: int, extra: str = "", sections: str = "") -> Path:
    config = tmp_path / "config.toml"
    config.write_text(f"""
[socket]
path = "{tmp_path / 's.sock'}"
[policy]
duplicate_window_ms = 0
{websocket_section(port, extra=extra)}
{sections}
[[scanner]]
name = "window-1"
path = "{pty.link}"
terminator = "CR"
""")
    return config


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Daemon, PtyScanner, Path, int]]:
    pty = PtyScanner(tmp_path, "scanner")
    port = free_port()
    sock = tmp_path / "s.sock"
    daemon = Daemon(write_config(tmp_path, pty, port), sock)
    try:
        daemon.wait_ready()
        Client(sock, role=None).wait_present()
        pty.release_slave()
        wait_listening(sock)
        yield daemon, pty, sock, port
    finally:
        daemon.stop()
        pty.close()


def refused_status(port: int, **kwargs: Any) -> int:
    with pytest.raises(InvalidStatus) as e:
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10, **kwargs):
            pass
    return int(e.value.response.status_code)


def test_an_origin_not_listed_or_missing_is_refused_before_the_upgrade(rig: tuple[Daemon, PtyScanner, Path, int]) -> None:
    daemon, _pty, _sock, port = rig
    assert refused_status(port, origin="https://evil.example") == 403
    assert refused_status(port, origin="https://his.example-hospital.cn.evil.example") == 403
    assert refused_status(port, origin="http://his.example-hospital.cn") == 403  # http is another origin
    assert refused_status(port) == 403  # no Origin: only with allow_no_origin
    assert refused_status(port, origin=HIS_ORIGIN, additional_headers={"Host": f"rebound.example:{port}"}) == 421
    wait_for(lambda: "websocket_refused" in daemon.log(), 30)  # the log writer batches: lines come a little later
    # The listed HIS origin and the listener's own page connect.
    WsClient(port).close()
    WsClient(port, origin=f"http://127.0.0.1:{port}", role="monitor").close()


def test_nothing_but_hello_before_the_token(rig: tuple[Daemon, PtyScanner, Path, int]) -> None:
    _daemon, pty, sock, port = rig
    client = WsClient(port, token=None, role=None)
    assert client.hello["auth"] == "required" and client.hello["protocol"] == 2
    pty.write(f"{wechat_code()}\r".encode(), None)
    answer = client.command({"cmd": "subscribe", "role": "his"})
    assert answer["ok"] is False and "authenticate first" in answer["error"]
    assert client.close_code() == 1008
    # The scan was not taken by the refused connection: it waits for an HIS.
    assert Client(sock).next_of("scan")["queued"] is True


def test_a_bad_token_is_refused_and_guessing_is_rate_limited_for_everyone(rig: tuple[Daemon, PtyScanner, Path, int]) -> None:
    daemon, _pty, _sock, port = rig
    for i in range(5):
        client = WsClient(port, token=None, role=None)
        answer = client.command({"cmd": "auth", "token": f"wrong-token-{i:020d}"})
        assert answer == {"type": "reply", "cmd": "auth", "ok": False, "error": "bad token"}
        assert client.close_code() == 1008
    # The bucket is empty: even the right token is not compared now, on a new connection.
    client = WsClient(port, token=None, role=None)
    answer = client.command({"cmd": "auth", "token": TOKEN})
    assert answer["ok"] is False and "too many bad tokens" in answer["error"]
    assert client.close_code() == 1008

    def right_token_accepted() -> bool:
        c = WsClient(port, token=None, role=None)
        ok = bool(c.command({"cmd": "auth", "token": TOKEN})["ok"])
        c.close()
        return ok

    wait_for(right_token_accepted, 20, interval=0.5)
    assert TOKEN not in daemon.log()


def test_a_scan_reaches_a_browser_his_and_a_monitor_gets_it_masked(rig: tuple[Daemon, PtyScanner, Path, int]) -> None:
    daemon, pty, _sock, port = rig
    monitor = WsClient(port, role="monitor")
    his = WsClient(port, ack=True)
    code = wechat_code()
    pty.write(f"{code}\r".encode(), None)
    seen = monitor.next_of("scan")
    assert seen["masked"] == mask(code) and "code" not in seen
    got = his.next_of("scan")
    assert got["code"] == code and got["channel"] == "wechat" and got["id"] == seen["id"]
    assert his.command({"cmd": "ack", "id": got["id"]})["ok"] is True
    assert code not in daemon.log()


def test_inject_only_when_the_site_allows_it_and_the_reload_applies_it(tmp_path: Path,
                                                                        rig: tuple[Daemon, PtyScanner, Path, int]) -> None:
    daemon, pty, sock, port = rig
    client = WsClient(port, role="monitor")
    assert "inject" not in client.hello["commands"]
    answer = client.command({"cmd": "inject", "device": "window-1", "code": wechat_code()})
    assert answer["ok"] is False and "not allowed over websocket" in answer["error"]
    write_config(tmp_path, pty, port, extra="allow_inject = true")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "inject" in WsClient(port, role=None).hello["commands"], 15)
    # The monitor opened before the reload stays connected (same address, same token).
    code = wechat_code()
    answer = client.command({"cmd": "inject", "device": "window-1", "code": code})
    assert answer["ok"] is True and answer["event"]["masked"] == mask(code)
    assert client.next_of("scan")["masked"] == mask(code)
    unknown = client.command({"cmd": "inject", "device": "no-such-scanner", "code": code})
    assert unknown["ok"] is False and "unknown device" in unknown["error"]
    assert Client(sock).next_of("scan")["code"] == code


def test_a_new_token_on_reload_closes_the_sessions_of_the_old_one(tmp_path: Path,
                                                                   rig: tuple[Daemon, PtyScanner, Path, int]) -> None:
    daemon, pty, _sock, port = rig
    client = WsClient(port, role="monitor")
    his = WsClient(port, ack=True)
    code = wechat_code()
    pty.write(f"{code}\r".encode(), None)
    taken = his.next_of("scan")
    config = write_config(tmp_path, pty, port)
    config.write_text(config.read_text().replace(TOKEN, "another-token-abcdefghijklmnop"))
    daemon.signal(signal.SIGHUP)
    assert client.close_code(15) == 1008 and his.close_code(15) == 1008
    # The scan the old session had not acked goes to the next HIS, within its TTL.
    again = WsClient(port, token="another-token-abcdefghijklmnop", ack=True).next_of("scan")
    assert again["id"] == taken["id"] and again["code"] == code and again["redelivered"] is True


def test_a_remote_bind_is_refused_without_allow_remote(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[socket]\npath = "{tmp_path / "s.sock"}"\n' + websocket_section(8765).replace("127.0.0.1", "0.0.0.0"))
    out = subprocess.run([sys.executable, "-m", "scannerd", "run", "-c", str(config)], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert out.returncode == 2
    assert "websocket.listen: expected a loopback address" in out.stderr and "allow_remote" in out.stderr


def http_get(port: int, path: str, host: str | None = None) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Host": host} if host else {})
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def test_the_page_and_metrics_are_served_by_the_same_listener(rig: tuple[Daemon, PtyScanner, Path, int]) -> None:
    _daemon, pty, sock, port = rig
    code = wechat_code()
    pty.write(f"{code}\r".encode(), None)
    Client(sock).next_of("scan")
    status, headers, body = http_get(port, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'scannerd_scans_total{channel="wechat",device="window-1",kind="payment"} 1' in body
    assert "process_open_fds " in body and "process_resident_memory_bytes " in body
    assert code not in body and "access-control-allow-origin" not in headers
    status, headers, body = http_get(port, "/")
    assert status == 200 and headers["content-type"].startswith("text/html") and "scannerd" in body
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert http_get(port, "/app.js")[0] == 200 and http_get(port, "/style.css")[0] == 200
    assert http_get(port, "/../config.toml")[0] == 404
    assert http_get(port, "/", host=f"rebound.example:{port}")[0] == 421  # DNS rebinding
    assert http_get(port, "/metrics", host=f"localhost:{port}")[0] == 200
    assert http_get(port, "/metrics", host="localhost:19464")[0] == 200  # through an SSH tunnel
    assert http_get(port, "/metrics", host=f"127.0.0.1.rebound.example:{port}")[0] == 421


def occupy(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def test_a_busy_port_leaves_the_scanners_working_and_is_retried_at_boot_and_on_reload(tmp_path: Path) -> None:
    pty = PtyScanner(tmp_path, "scanner")
    port, metrics_port = free_port(), free_port()
    sock = tmp_path / "s.sock"
    squatters = [occupy(port), occupy(metrics_port)]
    config = write_config(tmp_path, pty, port, sections=f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')
    daemon = Daemon(config, sock)
    try:
        daemon.wait_ready()
        client = Client(sock)
        client.wait_present()
        pty.release_slave()
        listeners = client.status()["listeners"]
        assert listeners["websocket"]["state"] == "unavailable" and listeners["websocket"]["error"]
        assert listeners["metrics"]["state"] == "unavailable"
        shown = subprocess.run([sys.executable, "-m", "scannerd", "status", "--socket", str(sock)], capture_output=True,
                               text=True, cwd=REPO, timeout=30).stdout
        assert f"websocket 127.0.0.1:{port}: unavailable (Address already in use, retrying)" in shown
        code = wechat_code()
        pty.write(f"{code}\r".encode(), None)
        assert client.next_of("scan")["code"] == code  # scanning goes on
        for s in squatters:
            s.close()
        wait_listening(sock, "websocket", 30)
        wait_listening(sock, "metrics", 30)
        WsClient(port).close()
        assert http_get(metrics_port, "/metrics")[0] == 200
        assert http_get(metrics_port, "/")[0] == 404  # metrics only: no page, no WebSocket
        # Reload onto another busy port: the same policy.
        new_port = free_port()
        squatter = occupy(new_port)
        config.write_text(config.read_text().replace(f"127.0.0.1:{port}", f"127.0.0.1:{new_port}"))
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: Client(sock, role=None).status()["listeners"]["websocket"]["state"] == "unavailable", 15)
        pty.write(f"{wechat_code()}\r".encode(), None)
        assert client.next_of("scan")["channel"] == "wechat"
        squatter.close()
        wait_listening(sock, "websocket", 30)
        WsClient(new_port).close()
        events = [e["event"] for e in daemon.log_events()]
        assert events.count("websocket_unavailable") == 2 and events.count("metrics_unavailable") == 1  # one line per change
    finally:
        for s in squatters:
            s.close()
        daemon.stop()
        pty.close()


def test_a_token_file_is_read_at_boot_and_again_on_reload(tmp_path: Path) -> None:
    pty = PtyScanner(tmp_path, "scanner")
    port = free_port()
    sock = tmp_path / "s.sock"
    token_file = tmp_path / "websocket.token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o640)
    config = write_config(tmp_path, pty, port)
    config.write_text(config.read_text().replace(f'token = "{TOKEN}"', f'token_file = "{token_file}"'))
    daemon = Daemon(config, sock)
    try:
        daemon.wait_ready()
        wait_listening(sock)
        client = WsClient(port, role="monitor")
        token_file.write_text("a-rotated-token-0123456789\n")
        daemon.signal(signal.SIGHUP)
        assert client.close_code(15) == 1008  # the file changed: the config changed
        WsClient(port, token="a-rotated-token-0123456789").close()
        assert TOKEN not in daemon.log() and "a-rotated-token" not in daemon.log()
    finally:
        daemon.stop()
        pty.close()


def test_an_event_with_a_unicode_line_separator_stays_one_message(rig: tuple[Daemon, PtyScanner, Path, int]) -> None:
    _daemon, _pty, sock, port = rig
    monitor = WsClient(port, role="monitor")
    text = "\u2028\u2029" + "1" * 20  # JSON leaves both unescaped; str.splitlines() would cut there
    answer = Client(sock, role=None).command({"cmd": "inject", "device": "window-1", "code": text})
    assert answer["ok"] is True
    event = monitor.next_of("scan", "reject")  # one message that parses, not two halves
    assert event["device"] == "window-1" and event["masked"] == mask(text)


def test_no_origin_only_when_allowed_and_a_cap_on_connections(tmp_path: Path, rig: tuple[Daemon, PtyScanner, Path, int]) -> None:
    daemon, pty, _sock, port = rig
    assert refused_status(port) == 403
    write_config(tmp_path, pty, port, extra="allow_no_origin = true\nmax_clients = 2")
    daemon.signal(signal.SIGHUP)

    def no_origin_admitted() -> bool:
        try:
            WsClient(port, origin=None, role=None).close()
        except InvalidStatus:
            return False
        return True

    wait_for(no_origin_admitted, 15, interval=0.2)
    first, second = WsClient(port, role="monitor"), WsClient(port, token=None, role=None)  # unauthenticated ones count too
    assert refused_status(port, origin=HIS_ORIGIN) == 503
    first.close()
    second.close()
    wait_for(lambda: not refused_status_or_none(port), 10)


def refused_status_or_none(port: int) -> int | None:
    try:
        WsClient(port, role=None).close()
    except InvalidStatus as e:
        return int(e.response.status_code)
    return None
