"""The VM rig's scenarios, run in order inside the guest (entry point: see rig.py).

Each scenario returns the facts it observed; tests/vm/test_vm_rig.py asserts on them.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rig import (
    PLAN,
    REPO,
    RESULTS,
    SOCK,
    T0,
    Client,
    Daemon,
    Host,
    alipay,
    evdev_nodes,
    find_evdev,
    holds_open,
    load_module,
    log,
    set_raw,
    slim,
    unionpay,
    uptime,
    wait_until,
    wechat,
)

Result = dict[str, Any]
SCENARIOS: list[tuple[str, tuple[str, ...], Callable[[Run], Result]]] = []

SERIAL_FEATURES = ("scannerd/cli.py", "scannerd/service.py", "scannerd/sources/serial.py", "scannerd/delivery/unix_socket.py")

USB_KBD_NAME = "QEMU QEMU USB Keyboard"  # 0627:0001, a plain keyboard by identity


def scenario(name: str, requires: tuple[str, ...] = ()) -> Callable[[Callable[[Run], Result]], Callable[[Run], Result]]:
    def deco(fn: Callable[[Run], Result]) -> Callable[[Run], Result]:
        SCENARIOS.append((name, requires, fn))
        return fn
    return deco


class Run:
    """State shared by the scenarios of one boot: the host line, the running daemon."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.results: dict[str, Any] = {}
        self.daemon: Daemon | None = None
        self.client: Client | None = None
        # Devices that outlive one scenario (later ones build on them).
        self.honeywell: Any = None  # uinput scanner of the explicit-config evdev group
        self.kbd_unplugged = False  # the QEMU usb-kbd is unplugged (device_del) right now
        self.auto_scanner: Any = None  # uinput scanner plugged under auto-detection
        self.gadget_udc: str | None = None  # the UDC the HID gadget scanner is bound to
        self.pos_gadget: tuple[str, str] | None = None  # (UDC, /dev/hidgN) of the HID-POS gadget

    def save(self) -> None:
        tmp = RESULTS / "results.json.tmp"
        tmp.write_text(json.dumps(self.results, indent=1, default=str))
        tmp.rename(RESULTS / "results.json")

    def start_daemon(self, name: str, config: str) -> tuple[Daemon, Client]:
        """The daemon for a group of scenarios (one at a time: they share the socket path)."""
        if self.daemon is not None and self.daemon.name == name and self.daemon.proc.poll() is None:
            assert self.client is not None
            return self.daemon, self.client
        self.stop_daemon()
        self.daemon = Daemon(name, config)
        self.client = self.daemon.wait_socket()
        return self.daemon, self.client

    def stop_daemon(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.daemon is not None:
            rc = self.daemon.stop()
            self.results.setdefault("_daemons", {})[self.daemon.name] = {
                "exit_code": rc, "socket_up_s": self.daemon.started_s}
            self.daemon = None


# --- rig self-checks (no daemon) ----------------------------------------------------------

@scenario("rig_devices")
def rig_devices(run: Run) -> Result:
    """The guest kernel sees real devices: /dev/uinput, the usb-kbd through usbhid, the FTDI
    usb-serial as /dev/ttyUSB0; host typing (QMP) and host serial bytes arrive."""
    res: Result = {"uinput": os.path.exists("/dev/uinput")}
    res["ttyUSB0"] = bool(wait_until(lambda: os.path.exists("/dev/ttyUSB0"), 10))
    try:
        res["ttyUSB0_driver"] = os.path.basename(os.readlink("/sys/class/tty/ttyUSB0/device/driver"))
    except OSError:
        res["ttyUSB0_driver"] = None
    kbd = find_evdev(USB_KBD_NAME, 10)
    res["input_devices"] = evdev_nodes()
    res["usb_kbd_node"] = kbd

    # usb-kbd: the host types "a1\r" over QMP; read raw input_events (24 bytes each on x86_64).
    keys: list[tuple[float, int, int]] = []
    if kbd:
        fd = os.open(kbd, os.O_RDONLY | os.O_NONBLOCK)
        try:
            run.host.type("a1\r")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and sum(1 for k in keys if k[2] == 0) < 3:
                try:
                    data = os.read(fd, 24 * 64)
                except BlockingIOError:
                    time.sleep(0.01)
                    continue
                for i in range(0, len(data), 24):
                    sec, usec, typ, code, value = struct.unpack_from("llHHi", data, i)
                    if typ == 1:  # EV_KEY
                        keys.append((sec + usec / 1e6, code, value))
        finally:
            os.close(fd)
    res["usb_kbd_keys"] = [(code, value) for _, code, value in keys]
    res["usb_kbd_key_times"] = [round(t - keys[0][0], 4) for t, _, _ in keys] if keys else []

    # usb-serial: open (ftdi_sio resets the port on open, so open first), then the host writes.
    got = b""
    if res["ttyUSB0"]:
        fd = os.open("/dev/ttyUSB0", os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            set_raw(fd)
            time.sleep(0.2)
            run.host.serial_write(b"rig-check\r", baud=9600)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not got.endswith(b"\r"):
                try:
                    got += os.read(fd, 256)
                except BlockingIOError:
                    time.sleep(0.01)
        finally:
            os.close(fd)
    res["ttyUSB0_read"] = got.decode(errors="replace")
    return res


# --- serial scanners (foundation) ---------------------------------------------------------

SERIAL_CONFIG = f"""
[socket]
path = "{SOCK}"

[policy]
duplicate_window_ms = 1500

[discovery]
auto = false

[[scanner]]
name = "ftdi-1"
transport = "serial"
path = "/dev/ttyUSB0"
baudrate = 9600
terminator = "CR"
# The idle-gap safety net (default 50 ms) would complete a half scan before the unplug is seen;
# a longer one makes "unplug mid-scan" deterministic under emulation.
idle_gap_ms = 2000

[[scanner]]
name = "acm-1"
transport = "serial"
path = "/dev/ttyACM0"
baudrate = 115200
terminator = "CR"
"""


def serial_daemon(run: Run) -> tuple[Daemon, Client]:
    return run.start_daemon("serial", SERIAL_CONFIG)


def ready_ttyusb(daemon: Daemon, timeout: float = 10.0) -> bool:
    """The daemon holds /dev/ttyUSB0 open; bytes written earlier would be lost (ftdi resets on
    open, and the daemon sets termios just after opening), so wait a moment more."""
    ok = daemon.holds("/dev/ttyUSB0", timeout)
    time.sleep(0.3)
    return ok


@scenario("serial_ttyusb_codes", SERIAL_FEATURES)
def serial_ttyusb_codes(run: Run) -> Result:
    """WeChat, Alipay, UnionPay codes from an FTDI usb-serial scanner (host chardev → /dev/ttyUSB0)."""
    daemon, client = serial_daemon(run)
    res: Result = {"hello": client.hello, "daemon_opened": ready_ttyusb(daemon)}
    codes = {"wechat": wechat(1), "alipay": alipay(2), "unionpay": unionpay(3)}
    res["sent"] = codes
    m = client.mark()
    for code in codes.values():
        run.host.serial_write(code + "\r", baud=9600)
        client.wait_code(m, code, 5)
    time.sleep(0.3)
    res["events"] = slim(client.since(m))
    return res


@scenario("serial_acm_codes", SERIAL_FEATURES)
def serial_acm_codes(run: Run) -> Result:
    """A CDC-ACM scanner: dummy_hcd + g_serial give /dev/ttyACM0 (cdc_acm) <-> /dev/ttyGS0."""
    daemon, client = serial_daemon(run)
    res: Result = {}
    t = time.monotonic()
    load_module("usb_f_acm")
    load_module("g_serial")
    res["ttyACM0"] = bool(wait_until(lambda: os.path.exists("/dev/ttyACM0") and os.path.exists("/dev/ttyGS0"), 10))
    res["ttyACM0_appeared_s"] = round(time.monotonic() - t, 2)
    try:
        res["ttyACM0_driver"] = os.path.basename(os.readlink("/sys/class/tty/ttyACM0/device/driver"))
    except OSError:
        res["ttyACM0_driver"] = None
    # The daemon was started before the device existed: it must pick it up by itself.
    res["daemon_opened"] = daemon.holds("/dev/ttyACM0", 10)
    res["daemon_opened_after_s"] = round(time.monotonic() - t, 2)
    time.sleep(0.3)
    codes = {"wechat": wechat(11), "alipay": alipay(12), "unionpay": unionpay(13)}
    res["sent"] = codes
    m = client.mark()
    gs = os.open("/dev/ttyGS0", os.O_RDWR | os.O_NOCTTY)
    try:
        set_raw(gs)
        for code in codes.values():
            for ch in (code + "\r").encode():  # ~115200-baud pacing is below TCG's resolution; a byte at a time
                os.write(gs, bytes([ch]))
            client.wait_code(m, code, 5)
    finally:
        os.close(gs)
    time.sleep(0.3)
    res["events"] = slim(client.since(m))
    return res


@scenario("serial_unplug_replug", SERIAL_FEATURES)
def serial_unplug_replug(run: Run) -> Result:
    """usb-serial: a full scan, then half a scan, then QMP device_del: the full one was delivered,
    the half one becomes a device_removed reject; device_add (same port): the daemon reopens the
    port by itself and the next scan flows."""
    daemon, client = serial_daemon(run)
    res: Result = {"daemon_opened": ready_ttyusb(daemon)}
    full, partial, after = wechat(21), alipay(22), unionpay(23)
    res["sent"] = {"full": full, "partial": partial[:9], "after": after}
    m = client.mark()
    run.host.serial_write(full + "\r" + partial[:9], baud=9600)
    client.wait_code(m, full, 5)
    time.sleep(0.3)  # let the 9 bytes reach the daemon before the plug is pulled
    r = run.host.call("device_del", device="ser0")
    res["device_del_s"] = r.get("seconds")
    res["node_gone"] = bool(wait_until(lambda: not os.path.exists("/dev/ttyUSB0"), 5))
    client.wait_reject(m, 3)
    time.sleep(0.3)
    res["events_unplug"] = slim(client.since(m))
    res["daemon_alive_after_unplug"] = daemon.proc.poll() is None

    m2 = client.mark()
    t = time.monotonic()
    run.host.call("device_add", device="ser0")
    res["node_back"] = bool(wait_until(lambda: os.path.exists("/dev/ttyUSB0"), 10))
    res["node_back_s"] = round(time.monotonic() - t, 2)
    t_node = time.monotonic()
    res["daemon_reopened"] = daemon.holds("/dev/ttyUSB0", 10)
    res["reopen_after_node_s"] = round(time.monotonic() - t_node, 2)
    time.sleep(0.3)
    t_send = time.monotonic()
    run.host.serial_write(after + "\r", baud=9600)
    ev = client.wait_code(m2, after, 5)
    res["scan_after_replug_s"] = round(time.monotonic() - t_send, 2) if ev else None
    time.sleep(0.2)
    res["events_replug"] = slim(client.since(m2))
    res["daemon_pid_same"] = daemon.proc.poll() is None
    return res


# --- keyboard-wedge scanners (evdev) -------------------------------------------------------

EV_SYN, EV_KEY, SYN_REPORT = 0, 1, 0
KEY_LEFTSHIFT, KEY_ENTER, KEY_A = 42, 28, 30
DIGIT_KEYS = {str(d): 2 + (d - 1) % 10 for d in range(1, 11)}  # "1" → KEY_1 (2) … "0" → KEY_0 (11)
DIGIT_KEYS["0"] = 11
EVIOCGRAB = 0x40044590  # _IOW('E', 0x90, int)

HONEYWELL = {"name": "Honeywell Imaging 2D Barcode Scanner", "vendor": 0x0C2E, "product": 0x0B61}
PLAIN_KBD = {"name": "Logitech USB Keyboard", "vendor": 0x046D, "product": 0xC31C}


def make_uinput(identity: dict[str, Any]) -> Any:
    """A USB keyboard-like uinput device with the given name and vid:pid (python-evdev)."""
    import evdev

    keys = list(range(1, 120))
    return evdev.UInput({evdev.ecodes.EV_KEY: keys}, name=identity["name"], vendor=identity["vendor"],
                        product=identity["product"], version=0x0110, bustype=evdev.ecodes.BUS_USB)


def uinput_node(ui: Any, timeout: float = 5.0) -> str | None:
    node = ui.device.path if getattr(ui, "device", None) is not None else None
    return node or find_evdev(ui.name, timeout)


def ev_bytes(events: list[tuple[int, int, int]]) -> bytes:
    return b"".join(struct.pack("llHHi", 0, 0, t, c, v) for t, c, v in events)


def key_events(text: str) -> list[tuple[int, int, int]]:
    """Press/release (each followed by SYN_REPORT) for digits and Enter ("\r")."""
    out: list[tuple[int, int, int]] = []
    for ch in text:
        code = KEY_ENTER if ch == "\r" else DIGIT_KEYS[ch]
        out += [(EV_KEY, code, 1), (EV_SYN, SYN_REPORT, 0), (EV_KEY, code, 0), (EV_SYN, SYN_REPORT, 0)]
    return out


def uinput_type(ui: Any, text: str, gap_s: float = 0.003) -> None:
    """Type like a wedge scanner: one key event (+SYN) per write, `gap_s` apart."""
    evs = key_events(text)
    for i in range(0, len(evs), 2):
        os.write(ui.fd, ev_bytes(evs[i:i + 2]))
        time.sleep(gap_s)


def grabbed_by_other(node: str) -> bool | None:
    """EVIOCGRAB answers EBUSY while another fd holds the grab (ours is released at once)."""
    import fcntl

    fd = os.open(node, os.O_RDONLY | os.O_NONBLOCK)
    try:
        try:
            fcntl.ioctl(fd, EVIOCGRAB, 1)
        except OSError as e:
            return True if e.errno == 16 else None
        fcntl.ioctl(fd, EVIOCGRAB, 0)
        return False
    finally:
        os.close(fd)


def drain_key_events(fd: int) -> int:
    n = 0
    while True:
        try:
            data = os.read(fd, 24 * 256)
        except BlockingIOError:
            return n
        n += sum(1 for i in range(0, len(data), 24) if struct.unpack_from("llHHi", data, i)[2] == EV_KEY)


def evdev_explicit_config(honeywell_node: str) -> str:
    return f"""
[socket]
path = "{SOCK}"

[discovery]
auto = false

[[scanner]]
name = "honeywell-1"
transport = "evdev"
path = "{honeywell_node}"
usb = "0c2e:0b61"
terminator = "CR"
# The SYN_DROPPED scenario pauses mid-scan (so the daemon surely holds Shift) before its burst:
# the 50 ms idle-gap safety net must not complete the half scan during that pause.
idle_gap_ms = 2000

# Found by discovery (udev kernel events, no udevd in the guest) by vid:pid, also after a replug.
[[scanner]]
name = "usbkbd-1"
transport = "evdev"
usb = "0627:0001"
terminator = "CR"
# The idle-gap safety net (default 50 ms) would complete a half scan before the unplug is seen;
# a longer one makes "unplug mid-scan" deterministic under emulation.
idle_gap_ms = 2000
"""


def evdev_daemon(run: Run) -> tuple[Daemon, Client, Any, str, str]:
    """The explicit-path evdev daemon, with the uinput Honeywell scanner it reads."""
    if run.honeywell is None:
        run.honeywell = make_uinput(HONEYWELL)
    node = uinput_node(run.honeywell)
    kbd = find_evdev(USB_KBD_NAME, 10)
    if not node or not kbd:
        raise RuntimeError(f"input nodes missing: honeywell={node} usb-kbd={kbd}")
    daemon, client = run.start_daemon("evdev", evdev_explicit_config(node))
    return daemon, client, run.honeywell, node, kbd


EVDEV_SOURCE = SERIAL_FEATURES + ("scannerd/sources/evdev_wedge.py", "scannerd/sources/discovery.py")


@scenario("evdev_uinput_scanner_codes", EVDEV_SOURCE)
def evdev_uinput_scanner_codes(run: Run) -> Result:
    """A uinput "Honeywell" scanner types WeChat/Alipay/UnionPay codes: they arrive classified,
    and a second reader of the same node sees nothing while scannerd holds the grab."""
    daemon, client, ui, node, _ = evdev_daemon(run)
    res: Result = {"node": node, "daemon_opened": daemon.holds(node, 10)}
    time.sleep(0.3)
    res["grabbed"] = grabbed_by_other(node)
    reader = os.open(node, os.O_RDONLY | os.O_NONBLOCK)
    codes = {"wechat": wechat(31), "alipay": alipay(32), "unionpay": unionpay(33)}
    res["sent"] = codes
    m = client.mark()
    try:
        for code in codes.values():
            uinput_type(ui, code + "\r")
            client.wait_code(m, code, 5)
        time.sleep(0.3)
        res["second_reader_key_events"] = drain_key_events(reader)
    finally:
        os.close(reader)
    res["events"] = slim(client.since(m))
    return res


@scenario("evdev_syn_dropped", EVDEV_SOURCE)
def evdev_syn_dropped(run: Run) -> Result:
    """Shift held, then a burst far larger than evdev's 64-event client buffer in one write():
    the kernel drops events (SYN_DROPPED) including the Shift release. The broken scan must be a
    reject, the modifier state reset, and the next (paced) scan exact - not "!#$%…"."""
    daemon, client, ui, node, _ = evdev_daemon(run)
    res: Result = {"daemon_opened": daemon.holds(node, 10)}
    m = client.mark()
    uinput_type(ui, "13")
    os.write(ui.fd, ev_bytes([(EV_KEY, KEY_LEFTSHIFT, 1), (EV_SYN, SYN_REPORT, 0)]))
    time.sleep(0.5)  # the daemon has read "13" and Shift down
    burst = [(EV_KEY, KEY_A, 1), (EV_SYN, SYN_REPORT, 0), (EV_KEY, KEY_A, 0), (EV_SYN, SYN_REPORT, 0),
             (EV_KEY, KEY_LEFTSHIFT, 0), (EV_SYN, SYN_REPORT, 0)]
    burst += key_events("4567890123" * 20 + "\r")
    res["burst_events"] = len(burst)
    os.write(ui.fd, ev_bytes(burst))  # one syscall: the reader cannot keep up
    # The daemon skips the rest of a cut burst until its Enter or an idle gap (2 s here, see the
    # config); the burst's own Enter may be among the dropped events, so wait the gap out.
    time.sleep(2.3)
    res["events_burst"] = slim(client.since(m))
    m2 = client.mark()
    after = wechat(41)
    res["after"] = after
    uinput_type(ui, after + "\r")
    client.wait(m2, lambda e: e.get("type") in ("scan", "reject"), 5)
    time.sleep(0.3)
    res["events_after"] = slim(client.since(m2))
    return res


@scenario("evdev_usb_kbd_codes", EVDEV_SOURCE)
def evdev_usb_kbd_codes(run: Run) -> Result:
    """QEMU's usb-kbd (xhci → usbhid → evdev), typed by the host over QMP, configured as a
    scanner: codes arrive classified, scan time measured from kernel event timestamps."""
    daemon, client, _, _, kbd = evdev_daemon(run)
    res: Result = {"node": kbd, "daemon_opened": daemon.holds(kbd, 10)}
    time.sleep(0.3)
    res["grabbed"] = grabbed_by_other(kbd)
    codes = {"wechat": wechat(51), "alipay": alipay(52), "unionpay": unionpay(53)}
    res["sent"] = codes
    res["typing_s"] = {}
    m = client.mark()
    for ch, code in codes.items():
        r = run.host.type(code + "\r", interval_ms=8)
        res["typing_s"][ch] = r.get("seconds")
        client.wait_code(m, code, 5)
    time.sleep(0.3)
    res["events"] = slim(client.since(m))
    return res


@scenario("evdev_usb_kbd_unplug_mid_scan", EVDEV_SOURCE)
def evdev_usb_kbd_unplug_mid_scan(run: Run) -> Result:
    """Half a code typed on the usb-kbd, then QMP device_del: a device_removed reject, the daemon
    keeps running."""
    daemon, client, _, _, kbd = evdev_daemon(run)
    res: Result = {"daemon_opened": daemon.holds(kbd, 10)}
    time.sleep(0.3)
    m = client.mark()
    partial = wechat(61)[:8]
    res["partial"] = partial
    run.host.type(partial, interval_ms=8)
    time.sleep(0.4)  # the keys have reached the daemon (HID poll + TCG)
    r = run.host.call("device_del", device="kbd0")
    res["device_del_s"] = r.get("seconds")
    res["node_gone"] = bool(wait_until(lambda: not os.path.exists(kbd), 5))
    client.wait_reject(m, 3)
    time.sleep(0.3)
    res["events"] = slim(client.since(m))
    res["daemon_alive"] = daemon.proc.poll() is None
    res["daemon_released_node"] = not holds_open(daemon.proc.pid, kbd)
    run.kbd_unplugged = True
    return res


@scenario("evdev_usb_kbd_replug", EVDEV_SOURCE)
def evdev_usb_kbd_replug(run: Run) -> Result:
    """QMP device_add of the usb-kbd unplugged above (same port): discovery sees it, the daemon
    opens and grabs it within 1 s of the node appearing, and typed codes flow again."""
    if not run.kbd_unplugged:
        raise RuntimeError("runs after evdev_usb_kbd_unplug_mid_scan, which did not unplug the usb-kbd")
    daemon, client = run.daemon, run.client
    if daemon is None or client is None:
        raise RuntimeError("runs after evdev_usb_kbd_unplug_mid_scan, with its daemon")
    res: Result = {}
    t = time.monotonic()
    run.host.call("device_add", device="kbd0")
    kbd = find_evdev(USB_KBD_NAME, 10)
    res["node_back"] = kbd
    res["node_back_s"] = round(time.monotonic() - t, 2)
    if not kbd:
        return res
    t_node = time.monotonic()
    res["daemon_opened"] = daemon.holds(kbd, 10)
    res["open_after_node_s"] = round(time.monotonic() - t_node, 2)
    time.sleep(0.2)
    res["grabbed"] = grabbed_by_other(kbd)
    m = client.mark()
    code = alipay(71)
    res["sent"] = code
    run.host.type(code + "\r", interval_ms=8)
    client.wait_code(m, code, 5)
    time.sleep(0.2)
    res["events"] = slim(client.since(m))
    res["daemon_pid_same"] = daemon.proc.poll() is None
    run.kbd_unplugged = False
    return res


# --- auto-detection (no [[scanner]] entries) ------------------------------------------------

AUTO_CONFIG = f"""
[socket]
path = "{SOCK}"

[discovery]
auto = true
"""


def auto_daemon(run: Run) -> tuple[Daemon, Client]:
    if run.honeywell is not None:
        run.honeywell.close()  # the explicit group's scanner: each auto scenario plugs its own
        run.honeywell = None
    return run.start_daemon("auto", AUTO_CONFIG)


@scenario("auto_uinput_scanner_hotplug", EVDEV_SOURCE)
def auto_uinput_scanner_hotplug(run: Run) -> Result:
    """With no [[scanner]] entries, a Honeywell scanner (0c2e:0b61) plugged while the daemon
    runs is auto-detected and grabbed; its codes arrive classified; a second reader sees nothing."""
    daemon, client = auto_daemon(run)
    time.sleep(0.5)
    t = time.monotonic()
    ui = make_uinput(HONEYWELL)
    run.auto_scanner = ui
    node = uinput_node(ui)
    res: Result = {"node": node}
    res["daemon_opened"] = daemon.holds(node, 10) if node else False
    res["open_after_plug_s"] = round(time.monotonic() - t, 2)
    time.sleep(0.2)
    res["grabbed"] = grabbed_by_other(node) if node else None
    reader = os.open(node, os.O_RDONLY | os.O_NONBLOCK)
    codes = {"wechat": wechat(81), "alipay": alipay(82), "unionpay": unionpay(83)}
    res["sent"] = codes
    m = client.mark()
    try:
        for code in codes.values():
            uinput_type(ui, code + "\r")
            client.wait_code(m, code, 5)
        time.sleep(0.3)
        res["second_reader_key_events"] = drain_key_events(reader)
    finally:
        os.close(reader)
    res["events"] = slim(client.since(m))
    return res


@scenario("auto_plain_keyboard_ignored", EVDEV_SOURCE)
def auto_plain_keyboard_ignored(run: Run) -> Result:
    """A plain keyboard (Logitech 046d:c31c) plugged under auto-detection is not opened, not
    grabbed, and its typing - even a payment code at scanner speed - is never emitted. Neither
    are the AT keyboard and QEMU's usb-kbd (0627:0001) touched."""
    daemon, client = auto_daemon(run)
    ui = make_uinput(PLAIN_KBD)
    node = uinput_node(ui)
    res: Result = {"node": node}
    try:
        time.sleep(1.5)  # ample time for discovery to act, were it going to
        res["daemon_opened"] = holds_open(daemon.proc.pid, node)
        res["grabbed"] = grabbed_by_other(node)
        others = {d["name"]: d["node"] for d in evdev_nodes() if d["name"] in (USB_KBD_NAME, "AT Translated Set 2 keyboard")}
        res["other_keyboards_opened"] = {name: holds_open(daemon.proc.pid, n) for name, n in others.items()}
        reader = os.open(node, os.O_RDONLY | os.O_NONBLOCK)
        m = client.mark()
        code = wechat(91)
        res["typed"] = code
        try:
            n = 0
            for ch in code + "\r":  # drain as we go: evdev's 64-event client buffer would overflow
                uinput_type(ui, ch)
                n += drain_key_events(reader)
            time.sleep(1.0)
            res["reader_key_events"] = n + drain_key_events(reader)  # the keys really were typed
        finally:
            os.close(reader)
        res["events"] = slim(client.since(m))
    finally:
        ui.close()
    return res


@scenario("auto_uinput_unplug_replug", EVDEV_SOURCE)
def auto_uinput_unplug_replug(run: Run) -> Result:
    """The auto-detected scanner vanishes (uinput device destroyed) and comes back: nothing
    spurious is emitted, it is opened again within 1 s and scans flow, same daemon.

    Not mid-scan: an auto-detected device has the default 50 ms idle-gap safety net, which under
    emulation completes a half scan before the removal is seen; unplug mid-scan is covered by
    the usb-kbd and usb-serial scenarios, whose config sets a long idle gap."""
    daemon, client = auto_daemon(run)
    ui = run.auto_scanner
    if ui is None:
        raise RuntimeError("runs after auto_uinput_scanner_hotplug")
    node = uinput_node(ui)
    res: Result = {"daemon_opened": daemon.holds(node, 5)}
    m = client.mark()
    ui.close()  # the kernel removes the device: the daemon's fd gets ENODEV
    run.auto_scanner = None
    res["node_gone"] = bool(wait_until(lambda: not os.path.exists(node), 5))
    res["daemon_released_node"] = bool(wait_until(lambda: not holds_open(daemon.proc.pid, node), 5))
    time.sleep(0.3)
    res["events_unplug"] = slim(client.since(m))
    res["daemon_alive"] = daemon.proc.poll() is None

    m2 = client.mark()
    t = time.monotonic()
    ui2 = make_uinput(HONEYWELL)
    node2 = uinput_node(ui2)
    try:
        res["daemon_reopened"] = daemon.holds(node2, 10) if node2 else False
        res["open_after_plug_s"] = round(time.monotonic() - t, 2)
        time.sleep(0.2)
        code = wechat(102)
        res["after"] = code
        t_send = time.monotonic()
        uinput_type(ui2, code + "\r")
        ev = client.wait_code(m2, code, 5)
        res["scan_after_replug_s"] = round(time.monotonic() - t_send, 2) if ev else None
        time.sleep(0.2)
        res["events_replug"] = slim(client.since(m2))
    finally:
        ui2.close()
    res["daemon_pid_same"] = daemon.proc.poll() is None
    return res


# --- a real USB HID scanner: configfs HID gadget on dummy_hcd ------------------------------

# The USB HID boot-keyboard report descriptor (HID 1.11, appendix B.1).
HID_KBD_REPORT_DESC = bytes.fromhex(
    "05010906a1010507" "19e029e715002501" "7501950881029501" "7508810395057501" "0508190129059102"
    "9501750391039506" "7508150025650507" "1900296581" "00c0")
HID_USAGE = {**{str(d): 0x1D + d for d in range(1, 10)}, "0": 0x27, "\r": 0x28}
GADGET = Path("/sys/kernel/config/usb_gadget/vmscanner")
GADGET_SERIAL = "VM0001"


def setup_hid_gadget() -> str:
    """A Honeywell-identified (0c2e:0b61) USB HID keyboard on the second dummy UDC; returns the
    UDC name. Nothing is plugged until bind_gadget()."""
    load_module("usb_f_hid")
    cfs = Path("/sys/kernel/config")
    if not (cfs / "usb_gadget").exists():
        subprocess.run(["mount", "-t", "configfs", "configfs", str(cfs)], check=True)
    udcs = sorted(os.listdir("/sys/class/udc"))
    free = [u for u in udcs if not Path(f"/sys/class/udc/{u}/function").read_text().strip()] if udcs else []
    if not free:
        raise RuntimeError(f"no free UDC for the HID gadget (UDCs: {udcs})")
    g = GADGET
    g.mkdir()
    (g / "idVendor").write_text("0x0c2e")
    (g / "idProduct").write_text("0x0b61")
    (g / "bcdUSB").write_text("0x0200")
    (g / "strings/0x409").mkdir()
    (g / "strings/0x409/serialnumber").write_text(GADGET_SERIAL)
    (g / "strings/0x409/manufacturer").write_text("Honeywell")
    (g / "strings/0x409/product").write_text("Imaging 2D Barcode Scanner")
    f = g / "functions/hid.usb0"
    f.mkdir()
    (f / "protocol").write_text("1")
    (f / "subclass").write_text("1")
    (f / "report_length").write_text("8")
    (f / "report_desc").write_bytes(HID_KBD_REPORT_DESC)
    c = g / "configs/c.1"
    c.mkdir()
    (c / "strings/0x409").mkdir()
    (c / "strings/0x409/configuration").write_text("keyboard wedge")
    (c / "MaxPower").write_text("100")
    os.symlink(f, c / "hid.usb0")
    return free[-1]


def bind_gadget(udc: str) -> None:
    (GADGET / "UDC").write_text(udc)


def unbind_gadget() -> None:
    (GADGET / "UDC").write_text("\n")


def find_gadget_node(timeout: float = 10.0) -> str | None:
    def look() -> str | None:
        for d in evdev_nodes():
            if (d["vid"], d["pid"], d["bus"]) == ("0c2e", "0b61", "0003") and os.path.exists(d["node"]):
                return d["node"]
        return None
    return wait_until(look, timeout)


def hidg_type(text: str, gap_s: float = 0.004, timeout: float = 10.0) -> None:
    """Key-down and all-keys-up reports into /dev/hidg0, `gap_s` apart (~8 ms a character, in
    the 1-19 ms range real wedge scanners show; at dummy_hcd's full 1 ms pace a few ms of TCG
    stall overflow evdev's 64-event buffer). Each write also waits for the USB host side (the
    guest's usbhid, polling only while someone has the device open) to take the last report."""
    import select as _select

    fd = os.open("/dev/hidg0", os.O_RDWR | os.O_NONBLOCK)
    try:
        for ch in text:
            for report in (bytes([0, 0, HID_USAGE[ch], 0, 0, 0, 0, 0]), bytes(8)):
                deadline = time.monotonic() + timeout
                while True:
                    try:
                        os.write(fd, report)
                        time.sleep(gap_s)
                        break
                    except BlockingIOError:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise TimeoutError("the USB host side never polled /dev/hidg0") from None
                        _select.select([], [fd], [], left)
    finally:
        os.close(fd)


@scenario("auto_usb_hid_gadget_scanner", EVDEV_SOURCE)
def auto_usb_hid_gadget_scanner(run: Run) -> Result:
    """A real USB HID keyboard-wedge scanner (configfs gadget, 0c2e:0b61, serial VM0001) plugged
    while the daemon runs: the guest enumerates it (dummy_hcd → usbhid → evdev), discovery
    auto-detects it by its USB vendor, grabs it, and its codes arrive classified."""
    daemon, client = auto_daemon(run)
    udc = setup_hid_gadget()
    res: Result = {"udc": udc}
    t = time.monotonic()
    bind_gadget(udc)
    run.gadget_udc = udc
    node = find_gadget_node()
    res["node"] = node
    res["node_s"] = round(time.monotonic() - t, 2)
    if not node:
        res["input_devices"] = evdev_nodes()
        return res
    res["name"] = next(d["name"] for d in evdev_nodes() if d["node"] == node)
    t_node = time.monotonic()
    res["daemon_opened"] = daemon.holds(node, 10)
    res["open_after_node_s"] = round(time.monotonic() - t_node, 2)
    time.sleep(0.2)
    res["grabbed"] = grabbed_by_other(node)
    codes = {"wechat": wechat(111), "alipay": alipay(112), "unionpay": unionpay(113)}
    res["sent"] = codes
    m = client.mark()
    for code in codes.values():
        hidg_type(code + "\r")
        client.wait_code(m, code, 5)
    time.sleep(0.3)
    res["events"] = slim(client.since(m))
    return res


@scenario("devices_cli", EVDEV_SOURCE + ("scannerd/commands/devices.py",))
def devices_cli(run: Run) -> Result:
    """`scannerd devices --json` on a real kernel: what it would do with each device present
    (the USB HID gadget scanner, a uinput scanner, a uinput plain keyboard, QEMU's usb-kbd, the
    AT keyboard, the FTDI port), with the auto-detect config."""
    cfg = Path("/run/scannerd-vm/devices.toml")
    cfg.write_text(AUTO_CONFIG)
    scanner, plain = make_uinput(HONEYWELL), make_uinput(PLAIN_KBD)
    try:
        nodes = {"uinput_scanner": uinput_node(scanner), "uinput_plain": uinput_node(plain),
                 "usb_kbd": find_evdev(USB_KBD_NAME, 5), "at_kbd": find_evdev("AT Translated Set 2 keyboard", 5),
                 "gadget": find_gadget_node(5), "ftdi": "/dev/ttyUSB0"}
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": "/root", "LANG": "C.UTF-8"}
        p = subprocess.run([PLAN["python"], "-m", "scannerd", "devices", "--json", "-c", str(cfg)], env=env,
                           capture_output=True, text=True, timeout=60, check=False, cwd=str(REPO))
    finally:
        scanner.close()
        plain.close()
    rows = []
    for line in p.stdout.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    by_node = {r.get("devnode"): r for r in rows}
    return {"exit_code": p.returncode, "stderr": p.stderr[-1500:], "nodes": nodes,
            "rows": {k: by_node.get(v) for k, v in nodes.items()}}


# --- udev in the guest (optional: uses the host's udev package through the shared root) ----

UDEVD = "/usr/lib/systemd/systemd-udevd"


def node_facts(node: str) -> dict[str, Any]:
    import grp

    st = os.stat(node)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return {"group": group, "mode": oct(st.st_mode & 0o777)}


@scenario("udev_rules_and_hotplug", EVDEV_SOURCE + ("udev/70-scannerd.rules", UDEVD))
def udev_rules_and_hotplug(run: Run) -> Result:
    """systemd-udevd runs in the guest with the project's 70-scannerd.rules: the USB scanner's
    node gets group scannerd 0660 and a /dev/scanner/ link, plain keyboards and the FTDI port are
    left alone; the daemon (now following udevd, as in production) picks the scanner up again
    after an unplug/replug and its codes flow."""
    import grp

    udc = run.gadget_udc
    if udc is None:
        raise RuntimeError("runs after auto_usb_hid_gadget_scanner")
    run.stop_daemon()
    res: Result = {}
    # The guest's /etc is a tmpfs overlay on the host's: these writes never reach the host.
    try:
        grp.getgrnam("scannerd")
    except KeyError:
        with open("/etc/group", "a") as f:
            f.write("scannerd:x:973:\n")
    Path("/etc/udev/rules.d").mkdir(parents=True, exist_ok=True)
    Path("/etc/udev/rules.d/70-scannerd.rules").write_bytes((REPO / "udev/70-scannerd.rules").read_bytes())
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "SYSTEMD_IGNORE_CHROOT": "1", "SYSTEMD_LOG_LEVEL": "warning"}
    t = time.monotonic()
    with open(RESULTS / "udevd.log", "wb") as udevd_log:
        subprocess.run([UDEVD, "--daemon"], env=env, stdout=udevd_log, stderr=subprocess.STDOUT, timeout=20, check=True)
    res["udevd_up"] = bool(wait_until(lambda: os.path.exists("/run/udev/control"), 10))
    subprocess.run(["udevadm", "trigger", "--action=add", "--subsystem-match=input", "--subsystem-match=tty",
                    "--subsystem-match=usb"], env=env, timeout=30, check=False)
    subprocess.run(["udevadm", "settle", "--timeout=30"], env=env, timeout=40, check=False)
    res["udev_ready_s"] = round(time.monotonic() - t, 2)
    node = find_gadget_node(5)
    res["scanner_node"] = node
    res["scanner_facts"] = node_facts(node) if node else None
    links = {}
    if os.path.isdir("/dev/scanner"):
        for name in sorted(os.listdir("/dev/scanner")):
            links[name] = os.path.realpath(f"/dev/scanner/{name}")
    res["scanner_links"] = links
    kbd = find_evdev(USB_KBD_NAME, 2)
    res["usb_kbd_facts"] = node_facts(kbd) if kbd else None
    res["ttyUSB0_facts"] = node_facts("/dev/ttyUSB0") if os.path.exists("/dev/ttyUSB0") else None
    res["by_id"] = sorted(os.listdir("/dev/input/by-id")) if os.path.isdir("/dev/input/by-id") else []

    # The daemon now follows udevd (discovery's production source): unplug, replug, scan.
    daemon, client = run.start_daemon("auto-udev", AUTO_CONFIG)
    res["daemon_opened_at_start"] = daemon.holds(node, 10) if node else False
    unbind_gadget()
    res["node_gone"] = bool(wait_until(lambda: not os.path.exists(node), 5)) if node else False
    t = time.monotonic()
    bind_gadget(udc)
    node2 = find_gadget_node()
    res["node_back_s"] = round(time.monotonic() - t, 2)
    if node2:
        t_node = time.monotonic()
        res["daemon_reopened"] = daemon.holds(node2, 10)
        res["reopen_after_node_s"] = round(time.monotonic() - t_node, 2)
        # udevd's workers for the new device compete for the one emulated CPU: let them finish
        # (a cashier does not scan within milliseconds of plugging in).
        subprocess.run(["udevadm", "settle", "--timeout=30"], env=env, timeout=40, check=False)
        time.sleep(0.2)
        m = client.mark()
        code = unionpay(121)
        res["after"] = code
        hidg_type(code + "\r")
        client.wait_code(m, code, 5)
        time.sleep(0.2)
        res["events_replug"] = slim(client.since(m))
    res["daemon_pid_same"] = daemon.proc.poll() is None
    return res


# --- a real USB HID-POS scanner: configfs gadget with a Honeywell-style 0x008C descriptor ------

sys.path.insert(0, str(REPO / "tests"))
from hidpos_fixtures import HONEYWELL_DESCRIPTOR, pos_reports  # noqa: E402 - test data shared with the host tests

POS_GADGET = Path("/sys/kernel/config/usb_gadget/vmpos")
POS_SERIAL = "VMPOS1"
HIDPOS_SOURCE = ("scannerd/sources/hidpos.py", "scannerd/sources/hid_reports.py", "scannerd/sources/registry.py")
# The long idle gap keeps "unplug mid-code" deterministic under TCG: the give-up timer for a
# missing last report must not fire before the unbind does.
HIDPOS_CONFIG = """
[socket]
path = "{sock}"

[[scanner]]
name = "pos-{backend}"
transport = "hidpos"
usb = "0c2e:0967"
serial = "{serial}"
backend = "{backend}"
idle_gap_ms = 3000
"""


def setup_pos_gadget() -> tuple[str, str]:
    """A Honeywell N5600-like HID-POS scanner (0c2e:0967, serial VMPOS1, 64-byte reports) on a
    free dummy UDC; returns (UDC, /dev/hidgN). Not plugged until bind_pos()."""
    load_module("usb_f_hid")
    cfs = Path("/sys/kernel/config")
    if not (cfs / "usb_gadget").exists():
        subprocess.run(["mount", "-t", "configfs", "configfs", str(cfs)], check=True)
    udcs = sorted(os.listdir("/sys/class/udc"))
    free = [u for u in udcs if not Path(f"/sys/class/udc/{u}/function").read_text().strip()]
    taken = {(GADGET / "UDC").read_text().strip()} if (GADGET / "UDC").exists() else set()
    free = [u for u in free if u not in taken]
    if not free:
        raise RuntimeError(f"no free UDC for the HID-POS gadget (UDCs: {udcs})")
    g = POS_GADGET
    g.mkdir()
    (g / "idVendor").write_text("0x0c2e")
    (g / "idProduct").write_text("0x0967")
    (g / "bcdUSB").write_text("0x0200")
    (g / "strings/0x409").mkdir()
    (g / "strings/0x409/serialnumber").write_text(POS_SERIAL)
    (g / "strings/0x409/manufacturer").write_text("Honeywell Imaging & Mobility")
    (g / "strings/0x409/product").write_text("N5600")
    f = g / "functions/hid.pos0"
    f.mkdir()
    (f / "protocol").write_text("0")
    (f / "subclass").write_text("0")
    (f / "report_length").write_text("64")
    (f / "report_desc").write_bytes(HONEYWELL_DESCRIPTOR)
    c = g / "configs/c.1"
    c.mkdir()
    (c / "strings/0x409").mkdir()
    (c / "strings/0x409/configuration").write_text("HID POS")
    (c / "MaxPower").write_text("100")
    os.symlink(f, c / "hid.pos0")
    # f_hid names its node hidg<minor>; the node itself appears when the gadget is bound.
    minor = (f / "dev").read_text().strip().split(":")[1]
    return free[0], f"/dev/hidg{minor}"


def bind_pos(udc: str) -> None:
    (POS_GADGET / "UDC").write_text(udc)


def unbind_pos() -> None:
    (POS_GADGET / "UDC").write_text("\n")


def pos_usb_device() -> Path | None:
    for d in Path("/sys/bus/usb/devices").iterdir():
        try:
            if (d / "idVendor").read_text().strip() == "0c2e" and (d / "idProduct").read_text().strip() == "0967":
                return d
        except OSError:
            continue
    return None


def find_pos_hidraw(timeout: float = 10.0) -> str | None:
    def look() -> str | None:
        base = Path("/sys/class/hidraw")
        if not base.is_dir():
            return None
        for h in sorted(base.iterdir()):
            try:
                uevent = (h / "device/uevent").read_text()
            except OSError:
                continue
            if "HID_ID=0003:00000C2E:00000967" in uevent and os.path.exists(f"/dev/{h.name}"):
                return f"/dev/{h.name}"
        return None
    return wait_until(look, timeout)


def find_pos_usbfs(timeout: float = 10.0) -> str | None:
    def look() -> str | None:
        d = pos_usb_device()
        if d is None:
            return None
        try:
            bus, dev = int((d / "busnum").read_text()), int((d / "devnum").read_text())
        except (OSError, ValueError):
            return None
        node = f"/dev/bus/usb/{bus:03d}/{dev:03d}"
        return node if os.path.exists(node) else None
    return wait_until(look, timeout)


def hidg_reports(hidg: str, reports: list[bytes], timeout: float = 10.0) -> None:
    """Write input reports into the gadget; each write waits until the host took the last one
    (f_hid holds one report at a time; the host polls only while its reader is open)."""
    import select as _select

    fd = os.open(hidg, os.O_RDWR | os.O_NONBLOCK)
    try:
        for report in reports:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    os.write(fd, report)
                    break
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"the USB host side never polled {hidg}") from None
                    _select.select([], [fd], [], left)
        # Wait until the last one is taken too: then the host has every report.
        _select.select([], [fd], [], timeout)
    finally:
        os.close(fd)


def hidg_read_output(hidg: str, timeout: float = 5.0) -> str | None:
    """One output report the host sent to the gadget, as hex (None if none came)."""
    import select as _select

    fd = os.open(hidg, os.O_RDWR | os.O_NONBLOCK)
    try:
        if not _select.select([fd], [], [], timeout)[0]:
            return None
        return os.read(fd, 64).hex()
    finally:
        os.close(fd)


def hidpos_daemon_scenario(run: Run, backend: str) -> Result:
    """The daemon reads the gadget through `backend`: a code in one report and one over three
    reports arrive classified with their symbology; unbinding mid-code gives a device_removed
    reject; after a rebind codes flow again, without a restart."""
    udc, hidg = run.pos_gadget or setup_pos_gadget()
    run.pos_gadget = (udc, hidg)
    if (POS_GADGET / "UDC").read_text().strip() != udc:
        bind_pos(udc)
    res: Result = {"udc": udc, "hidg": hidg}
    find_node = find_pos_hidraw if backend == "hidraw" else find_pos_usbfs
    node = find_node()
    res["node"] = node
    if not node:
        res["sysfs_hidraw"] = sorted(os.listdir("/sys/class/hidraw")) if os.path.isdir("/sys/class/hidraw") else None
        return res
    daemon, client = run.start_daemon(f"hidpos-{backend}", HIDPOS_CONFIG.format(sock=SOCK, backend=backend,
                                                                                 serial=POS_SERIAL))
    res["daemon_opened"] = daemon.holds(node, 15)
    if not res["daemon_opened"]:
        res["daemon_log"] = daemon.log_tail()
        return res
    if backend == "pyusb":
        # usbhid let go of the POS interface: its hidraw node is gone while libusb has it.
        res["hidraw_gone_while_claimed"] = bool(wait_until(lambda: find_pos_hidraw(0.05) is None, 5))
    short, long_code = wechat(131), "HIS" + "".join(str(i % 10) for i in range(140))  # 143 bytes: 3 reports
    res["sent"] = {"short": short, "long": long_code}
    m = client.mark()
    hidg_reports(hidg, pos_reports(short.encode(), aim=b"]Q1"))
    long_reports = pos_reports(long_code.encode(), aim=b"]Q1")
    res["long_reports"] = len(long_reports)
    hidg_reports(hidg, long_reports)
    client.wait_code(m, long_code, 10)
    res["events"] = slim(client.since(m))
    # Half a code, then the cable goes.
    m = client.mark()
    hidg_reports(hidg, pos_reports(b"9" * 100)[:1])  # the first of two reports: continued set
    t = time.monotonic()
    unbind_pos()
    client.wait_reject(m, 10)
    res["removed_reject_s"] = round(time.monotonic() - t, 2)
    res["events_unplug"] = slim(client.since(m))
    res["node_gone"] = bool(wait_until(lambda: not os.path.exists(node), 5))
    # Plugged back in: discovery starts the source again.
    t = time.monotonic()
    bind_pos(udc)
    node2 = find_node()
    res["node_back"] = node2
    if node2:
        res["daemon_reopened"] = daemon.holds(node2, 15)
        res["reopen_after_plug_s"] = round(time.monotonic() - t, 2)
        m = client.mark()
        after = alipay(133)
        res["after"] = after
        hidg_reports(hidg, pos_reports(after.encode(), aim=b"]Q1"))
        client.wait_code(m, after, 10)
        res["events_replug"] = slim(client.since(m))
    res["daemon_alive"] = daemon.proc.poll() is None
    return res


@scenario("hidpos_hidraw_daemon", HIDPOS_SOURCE)
def hidpos_hidraw_daemon(run: Run) -> Result:
    return hidpos_daemon_scenario(run, "hidraw")


def ensure_udevd() -> bool:
    """systemd-udevd with the project's rules, as the udev scenario starts it (if not running).
    libusb (Debian builds it with libudev) learns of hotplugged devices from udevd only."""
    import grp

    if os.path.exists("/run/udev/control"):
        return True
    if not os.path.exists(UDEVD):
        return False
    try:
        grp.getgrnam("scannerd")
    except KeyError:
        with open("/etc/group", "a") as f:
            f.write("scannerd:x:973:\n")
    Path("/etc/udev/rules.d").mkdir(parents=True, exist_ok=True)
    Path("/etc/udev/rules.d/70-scannerd.rules").write_bytes((REPO / "udev/70-scannerd.rules").read_bytes())
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "SYSTEMD_IGNORE_CHROOT": "1", "SYSTEMD_LOG_LEVEL": "warning"}
    with open(RESULTS / "udevd-hidpos.log", "wb") as udevd_log:
        subprocess.run([UDEVD, "--daemon"], env=env, stdout=udevd_log, stderr=subprocess.STDOUT, timeout=20, check=True)
    if not wait_until(lambda: os.path.exists("/run/udev/control"), 10):
        return False
    subprocess.run(["udevadm", "trigger", "--action=add", "--subsystem-match=usb", "--subsystem-match=hidraw"],
                   env=env, timeout=30, check=False)
    subprocess.run(["udevadm", "settle", "--timeout=30"], env=env, timeout=40, check=False)
    return True


@scenario("hidpos_pyusb_daemon", HIDPOS_SOURCE)
def hidpos_pyusb_daemon(run: Run) -> Result:
    udevd = ensure_udevd()
    res = hidpos_daemon_scenario(run, "pyusb")
    res["udevd"] = udevd
    usbfs = find_pos_usbfs(1)
    res["usbfs_facts"] = node_facts(usbfs) if usbfs and udevd else None
    run.stop_daemon()  # gives the interface back to usbhid
    hidraw = find_pos_hidraw(10)
    res["hidraw_back_after_stop"] = bool(hidraw)
    if hidraw and udevd:
        subprocess.run(["udevadm", "settle", "--timeout=30"], timeout=40, check=False,
                       env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "SYSTEMD_IGNORE_CHROOT": "1"})
    res["hidraw_facts"] = node_facts(hidraw) if hidraw and udevd else None
    return res


@scenario("hidpos_feedback_and_control", HIDPOS_SOURCE)
def hidpos_feedback_and_control(run: Run) -> Result:
    """The sources' whitelisted verbs on the real kernel: good/bad beep and trigger on/off
    output reports reach the gadget through hidraw and through pyusb (libusb), and
    HIDIOCGRDESC gives the gadget's descriptor."""
    import asyncio

    from scannerd.config import ScannerConfig
    from scannerd.framing import FramingSpec
    from scannerd.model import DeviceInfo
    from scannerd.sources.hidpos import (
        HidPosSettings,
        HidrawSource,
        PyusbSource,
        hidraw_descriptor,
    )

    run.stop_daemon()
    udc, hidg = run.pos_gadget or setup_pos_gadget()
    run.pos_gadget = (udc, hidg)
    if (POS_GADGET / "UDC").read_text().strip() != udc:
        bind_pos(udc)
    res: Result = {}
    node = find_pos_hidraw()
    res["node"] = node
    if not node:
        return res
    fd = os.open(node, os.O_RDONLY)
    try:
        res["descriptor_matches"] = hidraw_descriptor(fd) == HONEYWELL_DESCRIPTOR
    finally:
        os.close(fd)
    scanner = ScannerConfig(name="pos", transport="hidpos", usb="0c2e:0967")
    for backend in ("hidraw", "pyusb"):
        items: list[Any] = []
        device = DeviceInfo("pos", "hidpos", "outpatient", "kiosk", node if backend == "hidraw" else "")
        cls = HidrawSource if backend == "hidraw" else PyusbSource
        source = cls(device, FramingSpec(idle_gap_ms=3000), items.append, lambda _s: None, scanner,
                     HidPosSettings(backend=backend, serial=POS_SERIAL, beep_on_reject=True))

        async def drive(source: Any = source, items: list[Any] = items) -> dict[str, Any]:
            loop = asyncio.get_running_loop()
            task = loop.create_task(source.run())
            seen: dict[str, Any] = {}
            deadline = loop.time() + 15
            while not source.present and not task.done() and loop.time() < deadline:
                await asyncio.sleep(0.02)
            seen["present"] = source.present
            if source.present:
                for verb in ("good", "bad", "enable", "disable"):
                    if verb == "bad":
                        source.feedback(False)
                    else:
                        source.control(verb)
                    seen[verb] = await loop.run_in_executor(None, hidg_read_output, hidg)
                code = wechat(141)
                await loop.run_in_executor(None, hidg_reports, hidg, pos_reports(code.encode(), aim=b"]Q1"))
                deadline = loop.time() + 10
                while not items and loop.time() < deadline:
                    await asyncio.sleep(0.02)
                seen["frame"] = [getattr(i, "text", None) == code and getattr(i, "symbology", None) for i in items]
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            thread = getattr(source, "thread", None)
            seen["thread_alive_after_stop"] = thread.is_alive() if thread is not None else None
            return seen

        res[backend] = asyncio.run(drive())
    res["hidraw_back"] = bool(find_pos_hidraw(10))  # pyusb gave the interface back
    return res


def main() -> int:
    start_uptime = uptime()
    host = Host()
    host.call("hello", uptime=start_uptime)
    run = Run(host)
    run.results["_meta"] = {"uptime_at_driver_start": start_uptime, "kernel": os.uname().release}
    run.save()
    only = set(PLAN.get("only") or [])
    try:
        for name, requires, fn in SCENARIOS:
            if only and name not in only:
                continue
            # Relative paths: daemon features in the repo; absolute ones: tools on the host.
            missing = [r for r in requires if not r.startswith("/") and not (REPO / r).exists()]
            absent = [r for r in requires if r.startswith("/") and not os.path.exists(r)]
            if missing or absent:
                run.results[name] = {"status": "missing", "missing": missing} if missing else \
                    {"status": "unavailable", "absent": absent}
                run.save()
                continue
            t = time.monotonic()
            log(f"scenario {name}")
            try:
                res = fn(run)
                res.setdefault("status", "ran")
            except Exception as e:
                res = {"status": "error", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
                if run.daemon is not None:
                    res["daemon_log_tail"] = run.daemon.log_tail()
            res["seconds"] = round(time.monotonic() - t, 2)
            log(f"scenario {name}: {res['status']} in {res['seconds']}s")
            run.results[name] = res
            run.save()
    finally:
        run.stop_daemon()
        run.results["_meta"]["driver_seconds"] = round(time.monotonic() - T0, 2)
        run.save()
        host.call("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
