"""`scannerd simulate`: a scanner on a pseudo-terminal feeding sample codes (no hardware needed).

With `--box newland` it is a kiosk's Newland scan box instead: it reads only while the daemon
has switched it on (`arm`), shows the amount, speaks the prompt, and then "the patient shows a
code" once. With `--with-daemon` it also plays the HIS's payment page: arm with an amount,
take the scan, disarm, and again.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..model import mask
from ..simulator import SimulatedScanner, demo_config, sample_scans


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("simulate", help="simulate a serial scanner on a pty feeding sample codes (try scannerd without hardware)")
    p.add_argument("--dir", default=f"/tmp/scannerd-sim-{os.geteuid()}", help="where the pty link, config and socket go")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between scans")
    p.add_argument("--count", type=int, default=0, help="stop after this many scans (0: run until Ctrl-C)")
    p.add_argument("--with-daemon", action="store_true", help="also run `scannerd run` on the generated config")
    p.add_argument("--box", choices=("newland",), help="a kiosk's scan box speaking its control protocol (the kiosk flow)")
    p.add_argument("--seed", type=int, help="repeatable sample codes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    if args.box:
        return _run_box(args, directory)
    link = directory / "scanner"
    scanner = SimulatedScanner(link)
    config = directory / "config.toml"
    config.write_text(demo_config(directory, link))
    daemon = None
    if args.with_daemon:
        daemon = subprocess.Popen([sys.executable, "-m", "scannerd", "run", "-c", str(config)])
    print(f"simulated scanner: {link} -> {os.readlink(link)}", file=sys.stderr)
    print(f"config:            {config}", file=sys.stderr)
    if daemon is None:
        print(f"start the daemon:  scannerd run -c {config}", file=sys.stderr)
    print(f"watch the events:  scannerd listen --socket {directory / 'scannerd.sock'}", file=sys.stderr)
    rng = random.Random(args.seed)
    sent = 0
    try:
        time.sleep(1.0)  # give the daemon time to open the port
        for label, text in sample_scans(rng):
            if args.count and sent >= args.count:
                break
            shown = text if label == "garbage read" else mask(text)
            print(f"scan {sent + 1}: {label:<34} {shown!r}", file=sys.stderr)
            scanner.send(text)
            sent += 1
            time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    finally:
        scanner.close()
        if daemon is not None:
            daemon.terminate()
            daemon.wait(10)
    return 0


def _run_box(args: argparse.Namespace, directory: Path) -> int:
    from ..control.simulated import SimulatedNewlandBox, demo_box_config

    link = directory / "scanbox"
    box = SimulatedNewlandBox(link)
    config = directory / "config.toml"
    config.write_text(demo_box_config(directory, link), encoding="utf-8")
    sock = directory / "scannerd.sock"
    daemon = None
    if args.with_daemon:
        if sock.exists():
            sock.unlink()  # a stale one from an earlier run would pass for a ready daemon
        # The daemon's log in a file: this terminal shows the kiosk flow, step by step.
        with open(directory / "daemon.log", "wb") as daemon_log:
            daemon = subprocess.Popen([sys.executable, "-m", "scannerd", "run", "-c", str(config)], stderr=daemon_log)
    _say(f"simulated scan box: {link} -> {os.readlink(link)} (Newland frame protocol, kiosk role)")
    _say(f"config:             {config}")
    if daemon is not None:
        _say(f"daemon log:         {directory / 'daemon.log'}")
    else:
        _say(f"start the daemon:   scannerd run -c {config}")
        _say("arm it as the HIS's payment page does:")
        _say(f"""  python3 -c 'from scannerd.client import request; print(request("{sock}", {{"cmd": "arm", "device": "sim-kiosk-1", "amount_fen": 1250, "ttl_s": 30}}))'""")
    _say(f"watch the events:   scannerd listen --socket {sock}")
    rng = random.Random(args.seed)
    codes = ((label, text) for label, text in sample_scans(rng) if label != "garbage read")
    scans = 0
    reported = 0  # box commands printed so far
    served = -1  # the SET that switched the box on and has had its one scan
    his_next = time.monotonic() + 1.0  # when the demo HIS acts next (arm, or disarm after a scan)
    his_events: threading.Thread | None = None
    try:
        while not args.count or scans < args.count:
            if daemon is not None and daemon.poll() is not None:
                _say(f"the daemon exited with {daemon.returncode}")
                return 1
            commands, state = box.snapshot()
            for command in commands[reported:]:
                refused = "" if command.status == "00" else f" (refused: {command.status})"
                _say("box received SET " + ", ".join(f"{k}={_shown(k, v)}" for k, v in command.tags) + refused)
            reported = len(commands)
            switched_on_by = max((i for i, c in enumerate(commands) if c.values("SWITCH") == [b"ON"]), default=-1)
            if state.switched_on and switched_on_by != served:
                # The patient shows a code at the lit scan window: one read per switch-on.
                served = switched_on_by
                time.sleep(min(args.interval, 1.0))
                label, text = next(codes)
                framed = scans % 2 == 0
                _say(f"patient shows {label}: {mask(text)} (box sends it {'as a DATA= frame' if framed else 'as code + CR LF'})")
                (box.scan_framed if framed else box.scan_plain)(text)
                scans += 1
                his_next = time.monotonic() + args.interval
            elif daemon is not None and his_events is None and sock.exists():
                his_events = _his_takes_scans(sock)
            elif daemon is not None and time.monotonic() >= his_next and sock.exists():
                # The demo HIS: the payment page arms with an amount; once paid, it disarms.
                if state.switched_on:
                    _his_request(sock, {"cmd": "disarm", "device": "sim-kiosk-1"})
                else:
                    _his_request(sock, {"cmd": "arm", "device": "sim-kiosk-1", "amount_fen": rng.randrange(100, 50_000), "ttl_s": 30})
                his_next = time.monotonic() + args.interval
            time.sleep(0.05)
    except KeyboardInterrupt:
        pass
    finally:
        box.close()
        if daemon is not None:
            daemon.terminate()
            daemon.wait(10)
    return 0


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")  # one write: a line never interleaves with another process's
    sys.stderr.flush()


def _shown(key: str, value: bytes) -> str:
    if key in ("VOICE", "PROMPT"):
        return value.decode("gbk", errors="replace")
    return value.decode("ascii", errors="replace")


def _his_takes_scans(sock: Path) -> threading.Thread | None:
    """The demo HIS's event connection: subscribed as `his`, it takes each scan (and "pays")."""
    from ..client import ClientError, connect

    try:
        conn, stream = connect(str(sock), timeout=None)
    except ClientError:
        return None
    stream.write(b'{"cmd":"subscribe","role":"his"}\n')

    def read() -> None:
        with conn:
            for line in stream:
                event = json.loads(line)
                if event.get("type") == "scan":
                    _say(f"HIS: took scan {event['channel']} {event['kind']} {mask(event['code'])} → pays")
                elif event.get("type") == "reject":
                    _say(f"HIS: reject {event['reason']}")

    thread = threading.Thread(target=read, name="demo-his", daemon=True)
    thread.start()
    return thread


def _his_request(sock: Path, cmd: dict[str, object]) -> None:
    from ..client import ClientError, request

    try:
        answer = request(str(sock), cmd)
    except ClientError as e:
        _say(f"HIS: {e}")
        return
    fen = cmd.get("amount_fen")
    amount = f" ¥{fen / 100:.2f}" if isinstance(fen, int) else ""
    _say(f"HIS: {cmd['cmd']}{amount} → ok={answer.get('ok')} scanner={answer.get('scanner')} {answer.get('error', '')}".rstrip())
