"""The bare baseline: the least a program can do to move a scan from a pty to an HIS client.

asyncio, one reader per pty (os.read on loop.add_reader, as scannerd's serial source does),
split on CR, write the raw line to every connected Unix-socket client; with --mqtt, publish
it at QoS 1 through aiomqtt instead (one publisher task, waiting for each PUBACK, as a sink
must). No framing rules, no classification, no JSON, no logging: the floor scannerd is
measured against. Says READY=1 on $NOTIFY_SOCKET when listening, like the daemon.

    python bench/baseline.py --socket PATH --pty LINK [--pty LINK …] [--mqtt HOST:PORT --topic T]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import termios
import tty
from typing import Any


class Bare:
    def __init__(self) -> None:
        self.clients: list[asyncio.StreamWriter] = []
        self.outbox: asyncio.Queue[tuple[str, bytes]] | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients.append(writer)
        writer.write(b"hello\n")  # the client waits for this: from now on it gets every scan
        try:
            while await reader.read(65536):  # requests are read and ignored
                pass
        except (asyncio.CancelledError, ConnectionError):
            pass  # shutting down, or the client went away
        finally:
            self.clients.remove(writer)
            writer.close()

    def open_pty(self, path: str, index: int) -> None:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd, when=termios.TCSANOW)
        buf = bytearray()
        topic = f"scan/{index}"

        def readable() -> None:
            data = os.read(fd, 4096)
            if not data:
                asyncio.get_running_loop().remove_reader(fd)
                return
            buf.extend(data)
            while (end := buf.find(b"\r")) >= 0:
                line = bytes(buf[:end]) + b"\n"
                del buf[: end + 1]
                if self.outbox is not None:
                    self.outbox.put_nowait((topic, line))
                for w in self.clients:
                    w.write(line)

        asyncio.get_running_loop().add_reader(fd, readable)

    async def publish(self, host: str, port: int, prefix: str, connected: asyncio.Event) -> None:
        import aiomqtt

        assert self.outbox is not None
        async with aiomqtt.Client(host, port) as client:
            connected.set()
            while True:
                topic, line = await self.outbox.get()
                await client.publish(f"{prefix}/{topic}", line, qos=1)


def notify_ready() -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if path:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"READY=1", path)


async def main(args: Any) -> None:
    bare = Bare()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_unix_server(bare.serve, path=args.socket)
    for i, path in enumerate(args.pty):
        bare.open_pty(path, i)
    publisher = None
    if args.mqtt:
        host, _, port = args.mqtt.rpartition(":")
        bare.outbox = asyncio.Queue()
        connected = asyncio.Event()
        publisher = asyncio.create_task(bare.publish(host, int(port), args.topic, connected))
        await connected.wait()
    notify_ready()
    await stop.wait()
    if publisher is not None:
        publisher.cancel()
    server.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--pty", action="append", default=[])
    ap.add_argument("--mqtt", default="")
    ap.add_argument("--topic", default="bare")
    asyncio.run(main(ap.parse_args()))
