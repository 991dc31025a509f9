"""The real daemon under a scenario: pty scanners, HIS and monitor connections, a mosquitto.

Everything runs in this one thread except paho's network loop: the rig writes like a scanner,
then pumps every connection (reads what arrived, acks, hands events to the oracle). Waits are
conditions with generous deadlines, pumping while they wait; nothing asserts on elapsed time.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import random
import select
import signal
import socket
import struct
import termios
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .codes import KINDS, Code, garbage
from .oracle import Oracle, Verdict
from .scenario import Profile, Step, generate
from helpers import Client, Daemon, PtyScanner
from mqtt_broker import Broker

WAIT_S = 60.0  # the longest any one condition may take on a loaded machine


class ScenarioError(AssertionError):
    """The daemon did not reach a state the scenario waits for (it hung, or lost something)."""


class Conn:
    """One connection to the daemon's socket, read without blocking."""

    def __init__(self, path: Path, name: str, oracle: Oracle) -> None:
        self.name = name
        self.oracle = oracle
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(WAIT_S)
        self.sock.connect(str(path))
        self.buf = b""
        self.stalled = False
        self.closed = False
        self.replies: list[dict[str, Any]] = []
        hello = self._read_line_blocking()
        if hello.get("type") != "hello":
            raise ScenarioError(f"{name}: expected hello, got {hello}")
        self.sock.setblocking(False)

    def _read_line_blocking(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ScenarioError(f"{self.name}: the daemon closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return dict(json.loads(line))

    def send(self, obj: dict[str, Any]) -> None:
        data = (json.dumps(obj) + "\n").encode()
        self.sock.setblocking(True)
        self.sock.settimeout(WAIT_S)
        try:
            self.sock.sendall(data)
        finally:
            self.sock.setblocking(False)

    def pump(self) -> None:
        if self.stalled or self.closed:
            return
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno in (errno.ECONNRESET, errno.EPIPE):
                    chunk = b""
                else:
                    raise
            if not chunk:
                self.closed = True
                break
            self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            if line:
                self.handle(json.loads(line))

    def handle(self, event: dict[str, Any]) -> None:
        if event.get("type") == "device":
            self.on_device(event)
        elif event.get("type") == "reply":
            self.replies.append(event)
        elif event.get("type") == "reject":
            self.on_reject(event)
        elif event.get("type") == "scan":
            self.on_scan(event)

    def on_scan(self, event: dict[str, Any]) -> None:
        pass

    def on_reject(self, event: dict[str, Any]) -> None:
        pass

    def on_device(self, event: dict[str, Any]) -> None:
        pass

    def subscribe(self, **fields: Any) -> None:
        self.send({"cmd": "subscribe", **fields})
        self.wait_reply("subscribe")

    def wait_reply(self, cmd: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_S
        while True:
            self.pump()
            for i, r in enumerate(self.replies):
                if r.get("cmd") == cmd:
                    del self.replies[i]
                    if not r.get("ok"):
                        raise ScenarioError(f"{self.name}: {cmd} refused: {r}")
                    return r
            if time.monotonic() > deadline or self.closed:
                raise ScenarioError(f"{self.name}: no reply to {cmd}")
            select.select([self.sock], [], [], 0.05)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()


class His(Conn):
    def __init__(self, path: Path, name: str, oracle: Oracle, ack: bool) -> None:
        super().__init__(path, name, oracle)
        self.ack = ack
        self.holding_acks = False  # receive but do not ack (then vanish: the scans must move on)
        self.unacked: list[dict[str, Any]] = []
        self.acks_sent: list[str] = []
        self.subscribe(role="his", ack=ack)

    def on_scan(self, event: dict[str, Any]) -> None:
        if not self.ack:
            self.oracle.receipt(self.name, event, counts=True)
            return
        # An acking HIS has a scan once the daemon accepts its ack (the reply says so).
        self.oracle.receipt(self.name, event, counts=False)
        if self.holding_acks:
            self.unacked.append(event)
            return
        self.acks_sent.append(event["id"])
        self.send({"cmd": "ack", "id": event["id"]})

    def handle(self, event: dict[str, Any]) -> None:
        if event.get("type") == "reply" and event.get("cmd") == "ack":
            event_id = self.acks_sent.pop(0)  # replies come in the order of the commands
            if event.get("ok"):
                self.oracle.settle(self.name, event_id)
            elif "expired" not in str(event.get("error")):
                # Expired while unacked is the daemon's to count; anything else is wrong.
                self.oracle.verdict.note("wrong", f"{self.name}: ack refused: {event.get('error')}")
            return
        super().handle(event)

    def on_reject(self, event: dict[str, Any]) -> None:
        pass  # the permanent monitor checks rejects


class Monitor(Conn):
    def __init__(self, path: Path, name: str, oracle: Oracle, judge_rejects: bool) -> None:
        super().__init__(path, name, oracle)
        self.judge_rejects = judge_rejects
        self.subscribe(role="monitor")

    def on_scan(self, event: dict[str, Any]) -> None:
        self.oracle.monitor_event(self.name, event)

    def on_reject(self, event: dict[str, Any]) -> None:
        if self.judge_rejects:
            self.oracle.reject(event)

    def on_device(self, event: dict[str, Any]) -> None:
        if self.judge_rejects:
            self.oracle.device_states.append(event)


class MqttObserver:
    """A dashboard on the broker: every scan id published on <prefix>/scan/# at most once."""

    def __init__(self, port: int, prefix: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.ids: dict[str, int] = {}
        self.resent = 0
        self.lock = threading.Lock()
        # A persistent session on a persistent broker: nothing published while the observer
        # reconnects after a broker restart is missed.
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"chaos-observer-{os.getpid()}", clean_session=False)
        topic = f"{prefix}/scan/#"
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_message = self._message
        self.client.reconnect_delay_set(1, 2)
        self.client.connect_async("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def _message(self, _c: Any, _u: Any, message: Any) -> None:
        try:
            event_id = json.loads(message.payload)["id"]
        except (ValueError, KeyError, TypeError):
            event_id = "(unparsable)"
        with self.lock:
            if message.dup and event_id in self.ids:
                # The broker resending to us (our PUBACK was lost when it died): QoS 1 between
                # broker and subscriber, not the sink publishing twice.
                self.resent += 1
                return
            self.ids[event_id] = self.ids.get(event_id, 0) + 1

    def duplicates(self) -> list[str]:
        with self.lock:
            return [i for i, n in self.ids.items() if n > 1]

    def close(self) -> None:
        self.client.loop_stop()
        with contextlib.suppress(Exception):
            self.client.disconnect()


@dataclass
class Summary:
    scenarios: int = 0
    scans: int = 0
    faults: int = 0
    lost: int = 0
    duplicated: int = 0
    late: int = 0
    leaked: int = 0
    wrong: int = 0
    expired: int = 0
    mqtt_published: int = 0
    partials_rejected: int = 0
    partials_unread: int = 0

    def add(self, verdict: Verdict, scans: int, faults: int, expired: int, mqtt_published: int) -> None:
        self.scenarios += 1
        self.partials_rejected += verdict.partials[0]
        self.partials_unread += verdict.partials[1]
        self.scans += scans
        self.faults += faults
        self.lost += verdict.lost
        self.duplicated += verdict.duplicated
        self.late += verdict.late
        self.leaked += verdict.leaked
        self.wrong += verdict.wrong
        self.expired += expired
        self.mqtt_published += mqtt_published

    def line(self) -> str:
        return (f"chaos: scenarios {self.scenarios}, scans {self.scans}, faults {self.faults}, "
                f"lost {self.lost}, duplicated {self.duplicated}, late {self.late}, leaked {self.leaked}, "
                f"wrong {self.wrong} (expired and counted {self.expired}, mqtt published {self.mqtt_published}, "
                f"unplugged mid-scan {self.partials_rejected} rejected + {self.partials_unread} never read)")

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.late or self.leaked or self.wrong)


class Rig:
    def __init__(self, directory: Path, profile: Profile, seed: int) -> None:
        self.directory = directory
        self.profile = profile
        self.seed = seed
        self.rng = random.Random(seed ^ 0x5CA11)
        self.codes_rng = random.Random(seed ^ 0xC0DE)
        self.oracle = Oracle()
        self.sock = directory / "scannerd.sock"
        self.config = directory / "config.toml"
        self.scanners = [PtyScanner(directory, f"scanner-{i}") for i in range(profile.scanners)]
        self.plugged = [True] * profile.scanners
        self.broker: Broker | None = Broker(directory / "mqtt", persistent=True) if profile.mqtt else None
        self.broker_up = False
        self.observer: MqttObserver | None = None
        self.variant = 0
        self.his: list[His] = []
        self.monitors: list[Monitor] = []
        self.serial = 0
        self.faults = 0
        self._log_offset = 0
        self._log_events: list[str] = []
        self.daemon: Daemon | None = None
        self.permanent: Monitor | None = None
        self.trace: list[str] = []  # the steps so far, for a failure's diagnosis
        self.scan_at: dict[str, int] = {}

    # --- set-up -------------------------------------------------------------------------------

    def _config_text(self, valid: bool = True) -> str:
        if not valid:
            return '[[scanner]]\nname = "broken\nbaudrate = \n'
        p = self.profile
        lines = [
            "[site]", f'hospital_name = "chaos {self.variant}"',
            "[socket]", f'path = "{self.sock}"',
            "[policy]", f"payment_ttl_s = {p.payment_ttl_s}", f"other_ttl_s = {p.other_ttl_s}",
            # Codes never repeat in a scenario; the window changes with each valid reload.
            f"duplicate_window_ms = {1500 - self.variant % 2 * 100}", "queue_limit = 100000",
        ]
        if self.broker is not None:
            lines += ["[mqtt]", 'host = "127.0.0.1"', f"port = {self.broker.port}", 'topic_prefix = "chaos"', "keepalive_s = 5"]
        for i, s in enumerate(self.scanners):
            lines += ["[[scanner]]", f'name = "s{i}"', f'path = "{s.link}"', 'terminator = "CR"',
                      f"idle_gap_ms = {p.idle_gap_ms}", 'role = "window"']
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        if self.broker is not None:
            self.broker.start()
            self.broker_up = True
            self.observer = MqttObserver(self.broker.port, "chaos")
        self.config.write_text(self._config_text())
        self.config.chmod(0o640)
        self.daemon = Daemon(self.config, self.sock)
        self.daemon.wait_ready(WAIT_S)
        self.permanent = Monitor(self.sock, "monitor-0", self.oracle, judge_rejects=True)
        self.monitors.append(self.permanent)
        self._connect_his(ack=False)
        for i in range(len(self.scanners)):
            self._wait_present(i)

    def close(self) -> None:
        for c in [*self.his, *self.monitors]:
            c.close()
        if self.daemon is not None:
            self.daemon.stop(30)
        if self.observer is not None:
            self.observer.close()
        if self.broker is not None:
            self.broker.stop()
        for s in self.scanners:
            s.close()

    # --- waiting --------------------------------------------------------------------------------

    def pump(self) -> None:
        for c in [*self.his, *self.monitors]:
            c.pump()

    def until(self, cond: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            if cond():
                return
            if time.monotonic() > deadline:
                raise ScenarioError(f"seed {self.seed}: timed out after {timeout:g} s waiting for {what}; {self.diagnosis()}")
            socks = [c.sock for c in [*self.his, *self.monitors] if not c.closed and not c.stalled]
            select.select(socks, [], [], 0.02)

    def _control(self, cmd: dict[str, Any]) -> dict[str, Any]:
        c = Client(self.sock, timeout=WAIT_S, role=None)
        try:
            return c.command(cmd, timeout=WAIT_S)
        finally:
            c.close()

    def _wait_present(self, index: int) -> None:
        name = f"s{index}"

        def present() -> bool:
            devices = {d["name"]: d for d in self._control({"cmd": "status"})["devices"]}
            return bool(devices.get(name, {}).get("present"))

        self.until(present, f"scanner {name} open")
        self.scanners[index].release_slave()

    def _log_count(self, event: str) -> int:
        assert self.daemon is not None
        with open(self.daemon.stderr_path, "rb") as f:
            f.seek(self._log_offset)
            data = f.read()
        complete = data.rfind(b"\n") + 1
        self._log_offset += complete
        for line in data[:complete].splitlines():
            with contextlib.suppress(ValueError):
                self._log_events.append(str(json.loads(line).get("event")))
        return self._log_events.count(event)

    def expired_count(self) -> int:
        metrics = self._control({"cmd": "metrics"})["metrics"]
        return int(sum(s["value"] for s in metrics.get("scannerd_expired_total", []) if s["labels"].get("sink") == "socket"))

    def mqtt_unconfirmed(self) -> int:
        metrics = self._control({"cmd": "metrics"})["metrics"]
        return int(sum(s["value"] for s in metrics.get("scannerd_undelivered_total", [])
                       if s["labels"].get("sink") == "mqtt" and s["labels"].get("reason") == "unconfirmed"))

    def _settled_all(self) -> bool:
        unsettled = len(self.oracle.unsettled())
        # Short TTLs: a scan that waited too long is expired (counted), not in flight.
        return unsettled == 0 or unsettled <= self.expired_count()

    def barrier(self) -> None:
        """Every scan made so far has reached an HIS or expired (stalled ones resume first)."""
        for h in self.his:
            h.stalled = False
        if not any(not h.closed for h in self.his):
            self._connect_his(ack=False)
        self.until(self._settled_all, "every scan so far to reach an HIS or expire")

    # --- steps ----------------------------------------------------------------------------------

    def run(self, steps: list[Step]) -> None:
        for step in steps:
            if step.pause_ms:
                self._pause(step.pause_ms)
            self.trace.append(step.action)
            getattr(self, f"do_{step.action}")(step)
            self.pump()

    def _pause(self, ms: int) -> None:
        end = time.monotonic() + ms / 1000
        while (left := end - time.monotonic()) > 0:
            self.pump()
            socks = [c.sock for c in [*self.his, *self.monitors] if not c.closed and not c.stalled]
            select.select(socks, [], [], min(left, 0.01))

    def _plugged(self) -> list[int]:
        return [i for i, p in enumerate(self.plugged) if p]

    def _new_code(self, kind: str) -> Code:
        while True:
            code = KINDS[kind](self.codes_rng)
            if code.text not in self.oracle.made and code.text not in self.oracle.partials:
                return code

    def do_scan(self, step: Step) -> None:
        plugged = self._plugged()
        if not plugged:
            self.do_replug(step)
            plugged = self._plugged()
        index = self.rng.choice(plugged)
        code = self._new_code(step.kind)
        data = code.text.encode() + b"\r"
        ttl = self.profile.payment_ttl_s if code.kind in ("payment", "medical_insurance") else self.profile.other_ttl_s
        pty = self.scanners[index]
        if step.split and code.multibyte:
            # Cut inside the first multibyte character: the daemon must glue it back together.
            first = next(i for i, c in enumerate(code.text) if ord(c) > 127)
            cut = len(code.text[:first].encode()) + 1
            pty.write(data[:cut], baud=None)
            self._pause(5)
            pty.write(data[cut:], baud=None)
        else:
            pty.write(data, baud=None)
        self.oracle.scanned(code, f"s{index}", ttl)
        self.scan_at[code.text] = len(self.trace)

    def _fault(self) -> None:
        self.faults += 1

    def _connect_his(self, ack: bool) -> His:
        self.serial += 1
        h = His(self.sock, f"his-{self.serial}{'-ack' if ack else ''}", self.oracle, ack)
        self.his.append(h)
        return h

    def _live_his(self, ack: bool | None = None) -> list[His]:
        return [h for h in self.his if not h.closed and (ack is None or h.ack == ack)]

    def do_his_connect(self, step: Step) -> None:
        self._fault()
        self._connect_his(ack=False)

    def do_his_ack_connect(self, step: Step) -> None:
        self._fault()
        self._connect_his(ack=True)

    def do_his_stall(self, step: Step) -> None:
        live = [h for h in self._live_his() if not h.stalled]
        if len(live) > 1:  # somebody keeps reading: a stall is a delay, not an outage
            self._fault()
            self.rng.choice(live).stalled = True

    def do_his_resume(self, step: Step) -> None:
        stalled = [h for h in self._live_his() if h.stalled]
        if stalled:
            self._fault()
            self.rng.choice(stalled).stalled = False

    def do_his_drop_unacked(self, step: Step) -> None:
        h = self._connect_his(ack=True)
        h.holding_acks = True
        self._fault()
        # It takes the next scans (the most recent subscriber is not preferred, so scan until it
        # holds one or a few scans went elsewhere), then vanishes without acking: they must move on.
        for _ in range(3):
            self.do_scan(Step("scan", kind=self.rng.choice(list(KINDS))))
        self._pause(20)
        h.close()
        self.his.remove(h)

    def do_his_leave(self, step: Step) -> None:
        live = self._live_his()
        if len(live) < 2:
            return
        victim = self.rng.choice(live)
        self._fault()
        if victim.ack:
            # Abrupt, but not with an ack in flight: whether the daemon took an ack whose reply
            # never came back is unknowable to the HIS too. What it had not acked is redelivered.
            victim.stalled = False
            self.until(lambda: not victim.acks_sent, f"{victim.name}'s acks to be answered")
            victim.close()
        else:
            # A non-acking HIS that closes may lose what was in flight to it (that is what
            # acks are for): it leaves only once everything so far has been read. The next scan
            # may still be written into its closed connection: that write fails (EPIPE) and the
            # scan must go to another HIS, not be counted delivered.
            self.barrier()
            victim.close()
        self.his.remove(victim)

    def do_monitor_connect(self, step: Step) -> None:
        self._fault()
        self.serial += 1
        self.monitors.append(Monitor(self.sock, f"monitor-{self.serial}", self.oracle, judge_rejects=False))

    def do_monitor_leave(self, step: Step) -> None:
        extra = [m for m in self.monitors if m is not self.permanent]
        if extra:
            self._fault()
            m = self.rng.choice(extra)
            m.close()
            self.monitors.remove(m)

    def do_unplug_mid_scan(self, step: Step) -> None:
        plugged = self._plugged()
        if len(plugged) < 2:
            return
        index = self.rng.choice(plugged)
        self._fault()
        code = self._new_code(self.rng.choice(["wechat", "nhsa", "prescription"]))
        raw = code.text.encode()
        part = raw[: self.rng.randint(4, len(raw) - 2)]
        text = part.decode(errors="ignore")
        def removed() -> int:
            return sum(r.get("device") == f"s{index}" and r.get("reason") == "device_removed" for r in self.oracle.rejects)

        def absent() -> int:
            return sum(d.get("device") == f"s{index}" and d.get("state") == "absent" for d in self.oracle.device_states)

        rejected_before, absent_before = removed(), absent()
        self.scanners[index].write(part, baud=None)
        # Unplug once the daemon has read the partial scan (its framer holds it).
        self._wait_read(index)
        self.scanners[index].unplug()
        self.plugged[index] = False
        self.oracle.partial(text, f"s{index}")
        # The daemon reports the cut read (a reject) before the device's absence.
        self.until(lambda: absent() > absent_before, f"s{index} reported absent")
        self.oracle.partial_outcome(f"s{index}", rejected=removed() > rejected_before)

    def _wait_read(self, index: int) -> None:
        """Until the daemon has read everything written to scanner `index` (the pty's input
        queue, seen through a second descriptor of its slave side, is empty)."""
        fd = os.open(self.scanners[index].slave_path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            # The pty hands written bytes to the slave side asynchronously: an empty queue right
            # after the write may mean "not arrived yet". Require it empty over a while.
            self._pause(50)
            quiet = 0
            deadline = time.monotonic() + WAIT_S
            while quiet < 5 and time.monotonic() < deadline:
                waiting = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
                quiet = quiet + 1 if waiting == 0 else 0
                self._pause(10)
        finally:
            os.close(fd)

    def do_replug(self, step: Step) -> None:
        unplugged = [i for i, p in enumerate(self.plugged) if not p]
        if not unplugged:
            return
        index = self.rng.choice(unplugged)
        self._fault()
        self.scanners[index].replug()
        self.plugged[index] = True
        self._wait_present(index)

    def do_broker_stop(self, step: Step) -> None:
        if self.broker is not None and self.broker_up:
            self._fault()
            self.broker.stop()
            self.broker_up = False

    def do_broker_start(self, step: Step) -> None:
        if self.broker is not None and not self.broker_up:
            self._fault()
            self.broker.start()
            self.broker_up = True

    def _sighup(self, valid: bool) -> None:
        assert self.daemon is not None
        event = "reloaded" if valid else "reload_refused"
        before = self._log_count(event)
        if valid:
            self.variant += 1
        self.config.write_text(self._config_text(valid))
        self.daemon.signal(signal.SIGHUP)
        self.until(lambda: self._log_count(event) > before, f"the daemon to log {event}")
        if not valid:
            self.config.write_text(self._config_text())  # the admin fixes it; no reload needed

    def do_sighup_valid(self, step: Step) -> None:
        self._fault()
        self._sighup(True)

    def do_sighup_invalid(self, step: Step) -> None:
        self._fault()
        self._sighup(False)

    def do_garbage(self, step: Step) -> None:
        plugged = self._plugged()
        if not plugged:
            return
        index = self.rng.choice(plugged)
        self._fault()
        data, why = garbage(self.rng)
        self.scanners[index].write(data + b"\r", baud=None)
        self.oracle.garbage(f"s{index}", why)

    def do_outage(self, step: Step) -> None:
        """Every HIS goes away; scans wait; an HIS comes back. With short TTLs the waiting scans
        expire first: the daemon must count them, and never hand one over."""
        self._fault()
        self.barrier()
        for h in self.his:
            h.close()
        self.his.clear()
        expired_before = self.expired_count()
        made = 0
        for _ in range(self.rng.randint(3, 12)):
            self.do_scan(Step("scan", kind=self.rng.choice(list(KINDS))))
            made += 1
        if self.profile.short_ttl:
            self.until(lambda: self.expired_count() >= expired_before + made, "the outage's scans to expire",
                       timeout=max(self.profile.payment_ttl_s, self.profile.other_ttl_s) + WAIT_S)
        self._connect_his(ack=self.rng.random() < 0.5)

    # --- the end ----------------------------------------------------------------------------------

    def diagnosis(self) -> str:
        """What is missing, where, and who is connected (masked codes only)."""
        from scannerd.model import mask

        missing = [f"{mask(m.code.text)} on {m.device} ({m.code.kind}, ids {sorted(m.ids)}, "
                   f"steps before: {self.trace[max(0, self.scan_at.get(m.code.text, 0) - 6):self.scan_at.get(m.code.text, 0) + 2]})"
                   for m in self.oracle.unsettled()[:10]]
        clients = [f"{h.name}{' stalled' if h.stalled else ''}{' closed' if h.closed else ''} acks_pending={len(h.acks_sent)}"
                   for h in self.his]
        try:
            hub = self._control({"cmd": "status"}).get("sinks", {}).get("socket")
        except (OSError, ScenarioError, TimeoutError, ConnectionError) as e:
            hub = {"error": str(e)}
        return f"missing {missing}; clients {clients}; daemon sinks {hub}"

    def finish(self) -> tuple[Verdict, int, int]:
        """Let everything settle, stop the daemon, judge. Returns (verdict, expired, mqtt published)."""
        for h in self.his:
            h.stalled = False
            h.holding_acks = False
        if not any(not h.ack for h in self._live_his()):
            self._connect_his(ack=False)
        self.until(lambda: len(self.oracle.unsettled()) <= self.expired_count(), "every scan settled or counted expired")
        if self.broker is not None and not self.broker_up:
            self.broker.start()
            self.broker_up = True
        expired = self.expired_count()
        mqtt_published = 0
        if self.observer is not None:
            delivered_ids = {i for m in self.oracle.made.values() for i in m.ids}
            observer = self.observer
            # What the sink still queues goes out after the broker is back (well within TTL); a
            # PUBLISH the broker died under is counted unconfirmed and never resent.
            self.until(lambda: len(delivered_ids - set(observer.ids)) <= self.mqtt_unconfirmed(),
                       "the MQTT sink to publish every scan")
            for event_id in observer.duplicates():
                self.oracle.verdict.note("duplicated", f"MQTT published scan {event_id} twice")
            mqtt_published = len(observer.ids)
        assert self.daemon is not None
        for c in [*self.his, *self.monitors]:
            c.close()
        self.his.clear()
        self.monitors.clear()
        self.daemon.stop(30)
        # The daemon's files (its log, anything it wrote beside its config); the broker's own
        # store under mqtt/ holds the MQTT payloads by design.
        broker_dir = self.directory / "mqtt"
        files = [p for p in self.directory.rglob("*")
                 if p.is_file() and not p.is_symlink() and broker_dir not in p.parents]
        verdict = self.oracle.finish(expired, self.daemon.log(), files)
        return verdict, expired, mqtt_published


def run_scenario(directory: Path, profile: Profile, seed: int) -> tuple[Verdict, int, int, int, int]:
    """One scenario: (verdict, scans, faults, expired, mqtt published). Raises ScenarioError
    (with the seed in its message) when the daemon never reaches a state waited for."""
    steps = generate(seed, profile)
    rig = Rig(directory, profile, seed)
    try:
        rig.start()
        rig.run(steps)
        verdict, expired, published = rig.finish()
        verdict.partials = (rig.oracle.partials_rejected, rig.oracle.partials_unread)
        return verdict, len(rig.oracle.made), rig.faults, expired, published
    except (OSError, ValueError, KeyError) as e:  # the daemon refused a connection, sent garbage…
        where = traceback.extract_tb(e.__traceback__)[-3:]
        at = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(where))
        raise ScenarioError(f"seed {seed}: {type(e).__name__}: {e} at {at}; steps {rig.trace[-6:]}") from e
    finally:
        rig.close()
