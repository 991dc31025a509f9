"""Boot the rig's guest under QEMU and serve its requests from the host side.

The guest driver (guest/driver.py) talks to the host over a control serial line (guest
/dev/ttyS1 <-> a host Unix socket): one JSON object per line, each answered with
{"id":…, "ok":…}. The host acts on the guest's behalf where only the host can: typing on the
QEMU usb-kbd via QMP `input-send-event`, writing scanner bytes into the usb-serial chardev,
unplugging and replugging USB devices with QMP `device_del` / `device_add`.

Results come back as JSON in a writable 9p share (results.json), written by the guest.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmbuild import Guest

QEMU = "qemu-system-x86_64"


class VmError(RuntimeError):
    pass


def kvm_usable() -> bool:
    """KVM only where it can really run a stock kernel (see VMRIG.md: kvm_pvm cannot)."""
    if os.environ.get("SCANNERD_VM_ACCEL") == "tcg":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    has_virt = any(f in flags.split() for f in ("vmx", "svm"))
    return has_virt and not Path("/sys/module/kvm_pvm").exists() and os.access("/dev/kvm", os.R_OK | os.W_OK)


# QEMU usb-kbd speaks in qcodes; the characters a scanner types, US layout.
_QCODE = {**{c: c for c in "abcdefghijklmnopqrstuvwxyz0123456789"},
          "\r": "ret", "\n": "ret", "\t": "tab", " ": "spc", "-": "minus", "=": "equal",
          "[": "bracket_left", "]": "bracket_right", ";": "semicolon", "'": "apostrophe",
          ",": "comma", ".": "dot", "/": "slash", "\\": "backslash", "`": "grave_accent"}
_SHIFTED = {"!": "1", "@": "2", "#": "3", "$": "4", "%": "5", "^": "6", "&": "7", "*": "8", "(": "9",
            ")": "0", "_": "minus", "+": "equal", "{": "bracket_left", "}": "bracket_right",
            ":": "semicolon", '"': "apostrophe", "<": "comma", ">": "dot", "?": "slash", "|": "backslash",
            "~": "grave_accent"}


def key_strokes(text: str) -> list[tuple[str, bool]]:
    """(qcode, down) pairs that type `text` on a US keyboard."""
    out: list[tuple[str, bool]] = []
    for ch in text:
        if ch.isupper() and ch.lower() in _QCODE:
            q, shift = ch.lower(), True
        elif ch in _SHIFTED:
            q, shift = _SHIFTED[ch], True
        elif ch in _QCODE:
            q, shift = _QCODE[ch], False
        else:
            raise ValueError(f"cannot type {ch!r} on the usb-kbd")
        if shift:
            out.append(("shift", True))
        out += [(q, True), (q, False)]
        if shift:
            out.append(("shift", False))
    return out


class Qmp:
    """A minimal QMP client: commands in order, events collected by a reader thread."""

    def __init__(self, path: Path, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        self.sock = socket.socket(socket.AF_UNIX)
        while True:
            try:
                self.sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError) as e:
                if time.monotonic() > deadline:
                    raise VmError(f"QMP socket {path} never came up") from e
                time.sleep(0.02)
        self.file = self.sock.makefile("rwb", buffering=0)
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.lock = threading.Lock()
        greeting = json.loads(self.file.readline())
        if "QMP" not in greeting:
            raise VmError(f"not a QMP greeting: {greeting}")
        threading.Thread(target=self._reader, daemon=True, name="qmp-reader").start()
        self.command("qmp_capabilities")

    def _reader(self) -> None:
        for line in self.file:
            msg = json.loads(line)
            if "event" in msg:
                with self.cond:
                    self.events.append(msg)
                    self.cond.notify_all()
            else:
                self.replies.put(msg)
        self.replies.put({"error": {"class": "Closed", "desc": "QMP connection closed"}})

    def command(self, execute: str, **arguments: Any) -> Any:
        with self.lock:
            msg: dict[str, Any] = {"execute": execute}
            if arguments:
                msg["arguments"] = arguments
            self.file.write(json.dumps(msg).encode() + b"\n")
            reply = self.replies.get(timeout=20)
        if "error" in reply:
            raise VmError(f"QMP {execute}: {reply['error'].get('desc')}")
        return reply.get("return")

    def wait_event(self, name: str, timeout: float, **data: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i, ev in enumerate(self.events):
                    if ev["event"] == name and all(ev.get("data", {}).get(k) == v for k, v in data.items()):
                        return self.events.pop(i)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise VmError(f"no QMP event {name} {data} within {timeout}s")
                self.cond.wait(left)


@dataclass
class UsbDevice:
    """A QEMU USB device the host can unplug and replug (same port: same by-path)."""

    driver: str
    id: str
    port: int
    props: dict[str, str] = field(default_factory=dict)

    def args(self) -> dict[str, Any]:
        return {"driver": self.driver, "id": self.id, "bus": "xhci.0", "port": str(self.port), **self.props}

    def cmdline(self) -> str:
        return ",".join([self.driver] + [f"{k}={v}" for k, v in self.args().items() if k != "driver"])


@dataclass
class RunResult:
    results: dict[str, Any]
    boot_to_test_s: float | None  # host wall clock: QEMU start -> guest driver's hello
    guest_uptime_at_hello_s: float | None
    total_s: float
    exit_code: int | None
    console: str
    guest_log: str
    workdir: Path
    host_log: list[str]


class Vm:
    """One guest boot: QEMU + QMP + control line + usb-serial chardevs, served until done."""

    def __init__(self, guest: Guest, workdir: Path, guest_script: str, timeout: float = 150.0,
                 usb: list[UsbDevice] | None = None, serial_chardevs: tuple[str, ...] = ("ser0",)) -> None:
        self.guest = guest
        self.workdir = workdir
        self.results_dir = workdir / "results"
        self.timeout = timeout
        self.guest_script = guest_script
        self.serial_chardevs = serial_chardevs
        self.usb = {d.id: d for d in (usb or [])}
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp: Qmp | None = None
        self.chardev_socks: dict[str, socket.socket] = {}
        self.ctl: socket.socket | None = None
        # Unix socket paths must stay under 108 bytes, whatever the workdir: a short dir in /tmp.
        self.sockdir = Path(tempfile.mkdtemp(prefix="vmrig-"))
        self.log: list[str] = []
        self.t_start = 0.0
        self.boot_to_test: float | None = None
        self.uptime_at_hello: float | None = None

    # -- QEMU ---------------------------------------------------------------------------------
    def command_line(self) -> list[str]:
        w = self.workdir
        accel = ["-accel", "kvm", "-cpu", "host"] if kvm_usable() else ["-accel", "tcg", "-cpu", "max"]
        cmd = [
            QEMU, "-nographic", "-nodefaults", "-no-user-config", "-monitor", "none", "-no-reboot",
            *accel, "-m", "1024", "-smp", os.environ.get("SCANNERD_VM_SMP", "1"),
            "-kernel", str(self.guest.kernel), "-initrd", str(self.guest.initrd),
            "-append", "console=ttyS0 panic=-1 quiet loglevel=4 8250.nr_uarts=2",
            "-chardev", f"file,id=con,path={w / 'console.log'}", "-serial", "chardev:con",
            "-chardev", f"socket,id=ctl,path={self.sockdir / 'ctl.sock'},server=on,wait=off", "-serial", "chardev:ctl",
            "-qmp", f"unix:{self.sockdir / 'qmp.sock'},server=on,wait=off",
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={self.results_dir},mount_tag=results,security_model=none,multidevs=remap",
            "-device", "qemu-xhci,id=xhci",
        ]
        for name in self.serial_chardevs:
            cmd += ["-chardev", f"socket,id={name},path={self.sockdir / (name + '.sock')},server=on,wait=off"]
        for dev in self.usb.values():
            cmd += ["-device", dev.cmdline()]
        return cmd

    def _note(self, msg: str) -> None:
        self.log.append(f"{time.monotonic() - self.t_start:7.2f} {msg}")

    def run(self, plan: dict[str, Any]) -> RunResult:
        shutil.rmtree(self.results_dir, ignore_errors=True)
        self.results_dir.mkdir(parents=True)
        (self.results_dir / "guest.sh").write_text(self.guest_script)
        (self.results_dir / "plan.json").write_text(json.dumps(plan))
        self.t_start = time.monotonic()
        cmd = self.command_line()
        (self.workdir / "qemu-cmdline.txt").write_text(" ".join(cmd) + "\n")
        with open(self.workdir / "qemu-stderr.log", "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        try:
            self.qmp = Qmp(self.sockdir / "qmp.sock")
            for name in self.serial_chardevs:
                s = socket.socket(socket.AF_UNIX)
                s.connect(str(self.sockdir / f"{name}.sock"))
                self.chardev_socks[name] = s
            self._serve()
            try:
                self.proc.wait(timeout=max(1.0, self.t_start + self.timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._note("guest did not power off in time")
        except Exception as e:
            self._note(f"host side error: {type(e).__name__}: {e}")
        finally:
            self._kill()
        return self._result()

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._note(f"killing QEMU pid {self.proc.pid}")
            self.proc.kill()
            self.proc.wait(timeout=10)
        for s in self.chardev_socks.values():
            s.close()
        if self.ctl is not None:
            self.ctl.close()
        shutil.rmtree(self.sockdir, ignore_errors=True)

    def _result(self) -> RunResult:
        def read(p: Path) -> str:
            try:
                return p.read_text(errors="replace")
            except OSError:
                return ""
        raw = read(self.results_dir / "results.json")
        try:
            results = json.loads(raw) if raw else {}
        except json.JSONDecodeError as e:
            results = {}
            self._note(f"results.json unreadable: {e}")
        return RunResult(
            results=results,
            boot_to_test_s=self.boot_to_test,
            guest_uptime_at_hello_s=self.uptime_at_hello,
            total_s=time.monotonic() - self.t_start,
            exit_code=self.proc.returncode if self.proc else None,
            console=read(self.workdir / "console.log") + read(self.workdir / "qemu-stderr.log"),
            guest_log=read(self.results_dir / "guest-console.log"),
            workdir=self.workdir,
            host_log=self.log,
        )

    # -- control line -------------------------------------------------------------------------
    def _serve(self) -> None:
        deadline = self.t_start + self.timeout
        ctl = socket.socket(socket.AF_UNIX)
        while True:
            try:
                ctl.connect(str(self.sockdir / "ctl.sock"))
                break
            except (FileNotFoundError, ConnectionRefusedError) as e:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise VmError("control socket never came up") from e
                time.sleep(0.02)
        self.ctl = ctl  # closed only once QEMU is gone: closing early can drop the last reply
        buf = b""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._note(f"QEMU exited with {self.proc.returncode}")
                return
            ctl.settimeout(0.2)
            try:
                chunk = ctl.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                line = line.strip(b"\r\x00 ")
                if not line.startswith(b"{"):
                    continue
                try:
                    req = json.loads(line)
                except json.JSONDecodeError:
                    self._note(f"bad control line {line[:200]!r}")
                    continue
                reply = self._handle(req)
                ctl.sendall(json.dumps(reply).encode() + b"\n")
                if req.get("op") == "done":
                    return
        self._note(f"timeout: guest not done within {self.timeout}s")

    def _handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        rid = req.get("id")
        try:
            extra = getattr(self, f"op_{op}")(req) or {}
            return {"id": rid, "ok": True, **extra}
        except Exception as e:
            self._note(f"op {op} failed: {e}")
            return {"id": rid, "ok": False, "error": f"{type(e).__name__}: {e}"}

    def op_hello(self, req: dict[str, Any]) -> dict[str, Any]:
        self.boot_to_test = time.monotonic() - self.t_start
        self.uptime_at_hello = req.get("uptime")
        self._note(f"guest driver hello after {self.boot_to_test:.2f}s (guest uptime {self.uptime_at_hello})")
        return {"host_time": time.time()}

    def op_done(self, req: dict[str, Any]) -> None:
        self._note("guest done")

    def op_log(self, req: dict[str, Any]) -> None:
        self._note(f"guest: {req.get('msg')}")

    def op_serial_write(self, req: dict[str, Any]) -> None:
        """Write bytes into a usb-serial chardev, paced like a scanner at `baud` (0: at once)."""
        data = base64.b64decode(req["data"])
        sock = self.chardev_socks[req.get("chardev", "ser0")]
        baud = int(req.get("baud", 0))
        if not baud:
            sock.sendall(data)
            return
        per_byte = 10.0 / baud
        chunk = max(1, int(0.002 / per_byte))  # ~2 ms worth of bytes per write
        t = time.monotonic()
        for i in range(0, len(data), chunk):
            sock.sendall(data[i:i + chunk])
            t += per_byte * chunk
            delay = t - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def op_type(self, req: dict[str, Any]) -> dict[str, Any]:
        """Type text on the QEMU usb-kbd, one key event per `interval_ms` (HID queue is 16 deep)."""
        interval = float(req.get("interval_ms", 15)) / 1000
        strokes = key_strokes(req["text"])
        t0 = time.monotonic()
        for q, down in strokes:
            self.qmp.command("input-send-event", events=[
                {"type": "key", "data": {"down": down, "key": {"type": "qcode", "data": q}}}])
            time.sleep(interval)
        return {"events": len(strokes), "seconds": round(time.monotonic() - t0, 3)}

    def op_device_del(self, req: dict[str, Any]) -> dict[str, Any]:
        dev_id = req["device"]
        t0 = time.monotonic()
        self.qmp.command("device_del", id=dev_id)
        self.qmp.wait_event("DEVICE_DELETED", timeout=10, device=dev_id)
        return {"seconds": round(time.monotonic() - t0, 3)}

    def op_device_add(self, req: dict[str, Any]) -> None:
        self.qmp.command("device_add", **self.usb[req["device"]].args())
