"""The metrics endpoint on a port another program holds: same policy at boot and on reload
(issue 11 item 11) — never fatal, reported unavailable, retried until it listens. The endpoint
is the daemon's one HTTP listener class (delivery/http_listener.py) in its metrics-only form."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from structlog.testing import capture_logs

from scannerd.delivery.http_listener import HttpListener, metrics_only


async def eventually(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def http_get(port: int, path: str = "/metrics") -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data.decode()


def metrics_server(port: int, render: Callable[[], str]) -> HttpListener:
    return HttpListener("metrics", "127.0.0.1", port, metrics_only(render, "127.0.0.1"))


def occupy() -> tuple[socket.socket, int]:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder, holder.getsockname()[1]


async def test_a_busy_port_is_reported_and_retried_until_it_is_free() -> None:
    holder, port = occupy()
    server = metrics_server(port, lambda: "scannerd_up 1\n")
    try:
        with capture_logs() as logs:
            await server.start(initial_s=0.02, max_s=0.05)  # returns, does not raise
            assert server.status()["state"] == "unavailable"
            assert "in use" in str(server.status()["error"])
            await eventually(lambda: server.attempts >= 4, what="several retries")
            assert [e["event"] for e in logs].count("metrics_unavailable") == 1  # one line, not one per retry
            holder.close()
            await eventually(lambda: server.state == "listening", what="listening once the port is free")
        body = await http_get(port)
        assert body.startswith("HTTP/1.1 200 OK") and "\r\n\r\nscannerd_up 1\n" in body
        assert server.status() == {"state": "listening", "listen": f"127.0.0.1:{port}", "attempts": server.attempts}
        assert [e["event"] for e in logs][-1] == "metrics_listening"
    finally:
        holder.close()
        await server.stop()
    assert server.status()["state"] == "stopped"


async def test_stop_while_retrying_ends_the_retries() -> None:
    holder, port = occupy()
    server = metrics_server(port, lambda: "")
    try:
        await server.start(initial_s=0.02, max_s=0.02)
        await eventually(lambda: server.attempts >= 2, what="retrying")
        await server.stop()
        tries = server.attempts
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "metrics-retry"]
        holder.close()
        await asyncio.sleep(0.2)  # ten retry periods: a leftover task would have bound the port
        assert server.attempts == tries and server.state == "stopped"
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.bind(("127.0.0.1", port))  # nobody took it
        probe.close()
    finally:
        holder.close()
        await server.stop()


async def test_free_port_listens_at_once() -> None:
    holder, port = occupy()
    holder.close()
    server = metrics_server(port, lambda: "x 1\n")
    await server.start()
    try:
        assert server.status() == {"state": "listening", "listen": f"127.0.0.1:{port}", "attempts": 1}
        assert (await http_get(port, "/nope")).startswith("HTTP/1.1 404")
        assert (await http_get(port, "/")).startswith("HTTP/1.1 404")  # metrics only: no page
    finally:
        await server.stop()
