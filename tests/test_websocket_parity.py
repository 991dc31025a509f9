"""Protocol parity: one scripted exchange (monitor and HIS subscriptions, the queued hand-over,
acks, redelivery to the next HIS, refusals) run against the Unix socket and against the
WebSocket of the same daemon gives the same replies and events."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import Client, Daemon, PtyScanner, alipay_code, wait_for, wechat_code
from ws_client import WsClient, free_port, wait_listening, websocket_section

Connect = Callable[..., Any]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Daemon, PtyScanner, Path, int]]:
    pty = PtyScanner(tmp_path, "scanner")
    port = free_port()
    sock = tmp_path / "s.sock"
    config = tmp_path / "config.toml"
    config.write_text(f"""
[socket]
path = "{sock}"
[policy]
duplicate_window_ms = 0
{websocket_section(port)}
[[scanner]]
name = "window-1"
path = "{pty.link}"
terminator = "CR"
""")
    daemon = Daemon(config, sock)
    try:
        daemon.wait_ready()
        Client(sock, role=None).wait_present()
        pty.release_slave()
        wait_listening(sock)
        yield daemon, pty, sock, port
    finally:
        daemon.stop()
        pty.close()


def script(connect: Connect, pty: PtyScanner, sock: Path, codes: tuple[str, str]) -> list[dict[str, Any]]:
    def counts() -> dict[str, int]:
        return dict(Client(sock, role=None).status()["sinks"]["socket"])

    out: list[dict[str, Any]] = []
    a, b = codes
    monitor = connect("monitor")
    out.append(monitor.subscribed)
    pty.write(f"{a}\r".encode(), None)
    out.append(monitor.next_of("scan"))
    wait_for(lambda: counts()["queued"] == 1)
    his = connect("his", ack=True)
    out.append(his.subscribed)
    out.append(his.next_of("scan"))  # the waiting scan, queued
    pty.write(f"{b}\r".encode(), None)
    out.append(his.next_of("scan"))  # live
    out.append(monitor.next_of("scan"))
    out.append(his.command({"cmd": "subscribe", "role": "monitor"}))  # one role per connection
    his.close()  # without acking either
    wait_for(lambda: counts()["queued"] == 2 and counts()["his"] == 0)
    his2 = connect("his", ack=True)
    out.append(his2.subscribed)
    first, second = his2.next_of("scan"), his2.next_of("scan")
    out += [first, second]
    out.append(his2.command({"cmd": "ack", "id": first["id"]}))
    out.append(his2.command({"cmd": "ack", "id": first["id"]}))  # already acknowledged
    out.append(his2.command({"cmd": "ack", "id": "no-such-id"}))
    out.append(his2.command({"cmd": "ack", "id": second["id"], "req": "r-7"}))
    out.append(his2.command({"cmd": "arm", "device": "window-1", "ttl_s": float("nan")}))
    out.append(his2.command({"cmd": "arm", "device": "window-1", "ttl_s": 1e9}))
    out.append(his2.command({"cmd": "disarm", "device": "nobody"}))
    out.append(his2.command({"cmd": "devices"}))
    out.append(his2.command({"cmd": "no-such-command"}))
    assert his2.nothing_within(0.3)
    for c in (monitor, his2):
        c.close()
    wait_for(lambda: counts()["his"] == 0 and counts()["monitors"] == 0 and counts()["unacked"] == 0)
    return out


def normalise(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ids become their order of appearance; times and latencies (different per run) go."""
    ids: dict[str, str] = {}

    def fix(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items() if k not in ("ts", "latency", "age_ms", "last_scan_s_ago")}
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, str):
            for real, label in ids.items():
                value = value.replace(real, label)
            return re.sub(r"; allowed here: .*", "; allowed here: …", value)
        return value

    for m in messages:
        if m.get("type") == "scan" and m["id"] not in ids:
            ids[m["id"]] = f"<id{len(ids)}>"
    return [fix(m) for m in messages]


def test_the_same_exchange_gives_the_same_replies_and_events_over_both_transports(
        rig: tuple[Daemon, PtyScanner, Path, int]) -> None:
    daemon, pty, sock, port = rig
    codes = (wechat_code(), alipay_code())
    over_socket = script(lambda role, **kw: Client(sock, role=role, **kw), pty, sock, codes)
    over_websocket = script(lambda role, **kw: WsClient(port, role=role, **kw), pty, sock, codes)
    assert normalise(over_socket) == normalise(over_websocket)
    # And the exchange is the contract, not two agreeing mistakes.
    n = normalise(over_websocket)
    assert n[1]["masked"] and "code" not in n[1]
    assert n[3]["code"] == codes[0] and n[3]["queued"] is True
    assert n[7]["queued"] == 2 and [n[8]["code"], n[9]["code"]] == list(codes)
    assert n[8]["redelivered"] is True and n[9]["redelivered"] is True
    assert [n[10]["ok"], n[11]["ok"], n[12]["ok"], n[13]["ok"], n[13]["req"]] == [True, False, False, True, "r-7"]
    assert "already acknowledged" in n[11]["error"] and "NaN" in n[14]["error"] and "ttl_s" in n[15]["error"]
    assert all(code not in daemon.log() for code in codes)
