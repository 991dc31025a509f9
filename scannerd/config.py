"""TOML configuration → frozen dataclasses.

No file at all is a valid configuration (auto-detect scanners, serve the local socket). A bad
file fails fast with one message naming the file, the key path and what was expected:
`config.toml: scanner[1].baudrate: expected one of 1200…921600, got "fast"`.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .sources import registry

DEFAULT_CONFIG_PATH = Path("/etc/scannerd/config.toml")

AREAS = ("outpatient", "emergency", "inpatient", "international")
ROLES = ("window", "kiosk")
BAUDRATES = (1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
PARITIES = ("N", "E", "O", "M", "S")
LAYOUTS = ("us", "uk", "de", "fr")
# "auto": a frame ends at CR, LF, CRLF or TAB; the others are one terminator (none: the idle gap only).
TERMINATOR_NAMES = ("auto", "CR", "LF", "CRLF", "TAB", "none")

T = TypeVar("T")


def default_idle_gap_ms(transport: str) -> int:
    """Serial scanners send a character every ~1 ms at 9600 baud; keyboard-wedge scanners pause
    1–19 ms between keys, some Zebra models ~80 ms (CODES.md): the safety net must not cut them."""
    return 50 if transport == "serial" else 200


class ConfigError(ValueError):
    """A configuration problem: `file: key: expected …, got …`."""

    def __init__(self, file: str, key: str, message: str) -> None:
        self.file, self.key, self.message = file, key, message
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")


SYSTEM_SOCKET_PATH = "/run/scannerd/scannerd.sock"

# sockaddr_un.sun_path is 108 bytes on Linux, NUL included.
AF_UNIX_PATH_MAX = 108


def default_socket_path() -> str:
    # Under the systemd unit: RuntimeDirectory=scannerd gives $RUNTIME_DIRECTORY=/run/scannerd
    # (the service user has no XDG_RUNTIME_DIR, and its /tmp is private).
    runtime_directory = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime_directory:
        return os.path.join(runtime_directory, "scannerd.sock")
    if os.geteuid() == 0:
        return SYSTEM_SOCKET_PATH
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "scannerd.sock")
    return f"/tmp/scannerd-{os.geteuid()}/scannerd.sock"


@dataclass(frozen=True, slots=True)
class SiteConfig:
    hospital: str = ""
    hospital_name: str = ""
    area: str = "outpatient"


@dataclass(frozen=True, slots=True)
class SocketConfig:
    path: str = field(default_factory=default_socket_path)
    mode: int = 0o660
    group: str = ""
    client_buffer_bytes: int = 1 << 20
    max_clients: int = 64


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    payment_ttl_s: float = 60.0
    duplicate_window_ms: int = 1500
    # How long a non-payment code waits for a subscriber (a prescription slip is not a secret,
    # but replaying a five-minute-old scan to a HIS that reconnects surprises a cashier).
    other_ttl_s: float = 60.0
    queue_limit: int = 256


@dataclass(frozen=True, slots=True)
class ScannerConfig:
    name: str
    transport: str = "serial"
    path: str = ""
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1
    encoding: str = "utf-8"
    role: str = "window"
    area: str = ""  # empty: site.area
    terminator: str = "auto"  # CR, LF, CRLF or TAB, whichever the scanner sends
    idle_gap_ms: int = 0  # 0: the transport's default (default_idle_gap_ms), set on creation
    prefix: str = ""
    suffix: str = ""
    max_length: int = 512
    aim: bool = True
    vendor_ids: Mapping[str, str] = field(default_factory=dict)
    # Matching a hotplugged device (evdev, and serial by-id).
    usb: str = ""  # "vid:pid", lowercase hex
    match_name: str = ""  # regex on the input device name
    by_id: str = ""
    # Keyboard wedge.
    grab: bool = True
    layout: str = "us"
    shared_keyboard: bool = False
    alt_numpad: bool = False
    human_max_median_gap_ms: float = 15.0
    human_min_chars: int = 6
    # Scanner control (serial): a profile name from scannerd/control/profiles or [[control.profile]].
    control: str = ""
    lock_setup_codes: bool = False  # send the profile's forbid-setup-barcodes command on open
    # Keys only this scanner's transport understands, parsed by its registry entry.
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Every way a scanner entry is made (config, auto-detect, `scannerd test`, replay) gets
        # the idle gap its transport needs unless one was given.
        if self.idle_gap_ms == 0:
            object.__setattr__(self, "idle_gap_ms", default_idle_gap_ms(self.transport))


@dataclass(frozen=True, slots=True)
class ControlConfig:
    """[control]: prompts per role, an amount ceiling, and the profiles (built-in + site)."""

    kiosk_voice: str = ""
    window_voice: str = ""
    max_amount_fen: int = 0  # 0: what each device can show
    recover_interval_s: float = 2.0
    # name → scannerd.control.profile.Profile (typed Any here: config does not import control)
    profiles: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def voice_for(self, role: str) -> str:
        return self.kiosk_voice if role == "kiosk" else self.window_voice


@dataclass(frozen=True, slots=True)
class MqttConfig:
    host: str
    port: int = 1883
    client_id: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    password_file: str = ""
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    topic_prefix: str = ""
    qos: int = 1
    keepalive_s: int = 30
    queue_limit: int = 1000
    subscribe_cmd: bool = True


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str = ""  # "127.0.0.1:9464" serves Prometheus text; empty: only the socket `metrics` command


@dataclass(frozen=True, slots=True)
class WebSocketConfig:
    """The protocol over a WebSocket for browser HIS, the diagnostic page and /metrics."""

    listen: str = "127.0.0.1:8765"
    allow_remote: bool = False
    # Exact origins ("https://his.example-hospital.cn"); the listener's own page is always allowed.
    allowed_origins: tuple[str, ...] = ()
    allow_no_origin: bool = False  # non-browser clients (they send no Origin header)
    token: str = field(default="", repr=False)  # from token or token_file, never empty
    token_file: str = ""
    allow_inject: bool = False
    max_clients: int = 32

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    auto: bool = True
    extra_vendor_ids: tuple[str, ...] = ()


SYSTEM_LEDGER_PATH = "/var/lib/scannerd/ledger.sqlite"
RESULT_STATUSES = ("paid", "refunded", "failed")


def default_ledger_path() -> str:
    """The unit's StateDirectory when run by systemd or as root, else $XDG_STATE_HOME/scannerd/."""
    state_directory = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state_directory:
        return os.path.join(state_directory, "ledger.sqlite")
    if os.geteuid() == 0:
        return SYSTEM_LEDGER_PATH
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state_home, "scannerd", "ledger.sqlite")


@dataclass(frozen=True, slots=True)
class AcceptanceKind:
    """One kind of transaction the acceptance standard asks every station to show.

    A scan counts when its kind (and channel, if given) match; a HIS result on that scan counts
    when its channel, medical_insurance flag and status match.
    """

    name: str
    scan_kind: str
    scan_channel: str = ""  # empty: any channel (a scanner cannot tell whose 医保码 it is)
    result_channel: str = ""
    result_medical_insurance: bool | None = None  # None: either
    result_statuses: tuple[str, ...] = ("paid", "refunded")  # reversed transactions count too


DEFAULT_ACCEPTANCE_KINDS: tuple[AcceptanceKind, ...] = (
    # 云闪付医保码一码付: the scanner sees a 医保码; the HIS says UnionPay settled it.
    AcceptanceKind("unionpay_medical", scan_kind="medical_insurance", result_channel="unionpay", result_medical_insurance=True),
    # 银联标准付款码: a UnionPay payment code the HIS reports paid or refunded.
    AcceptanceKind("unionpay_standard", scan_kind="payment", scan_channel="unionpay", result_channel="unionpay"),
)


@dataclass(frozen=True, slots=True)
class AcceptanceConfig:
    ledger: str = field(default_factory=default_ledger_path)
    result_retention_h: float = 24.0  # how long a scan id accepts a HIS `result`
    # Bound on remembered scan ids (ids only, never codes; ~0.4 kB each): a busy window scans
    # a few hundred codes a day.
    result_ids_max: int = 20_000
    kinds: tuple[AcceptanceKind, ...] = DEFAULT_ACCEPTANCE_KINDS
    # Required kinds per role (names from `kinds`).
    required: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: {role: ("unionpay_medical", "unionpay_standard") for role in ROLES}
    )
    # Areas the hospital verdict requires; empty: the areas that have stations in the ledger.
    areas: tuple[str, ...] = ()

    def kind(self, name: str) -> AcceptanceKind:
        return next(k for k in self.kinds if k.name == name)


@dataclass(frozen=True, slots=True)
class Config:
    source: str = "<embedded default>"
    site: SiteConfig = field(default_factory=SiteConfig)
    socket: SocketConfig = field(default_factory=SocketConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    scanners: tuple[ScannerConfig, ...] = ()
    mqtt: MqttConfig | None = None
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    websocket: WebSocketConfig | None = None  # None: no [websocket] section, no TCP listener
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    acceptance: AcceptanceConfig = field(default_factory=AcceptanceConfig)
    rules: tuple[dict[str, Any], ...] = ()  # raw [[rule]] tables, validated by classify
    classify: dict[str, Any] = field(default_factory=dict)  # raw [classify] table
    # The classifier compiled from rules + classify while validating them; not part of equality.
    compiled: Any = field(default=None, compare=False, repr=False)

    def scanner_area(self, scanner: ScannerConfig) -> str:
        return scanner.area or self.site.area

    def classifier(self) -> Any:
        """The classifier for this config: built when the config was read, or on first use when
        it was read with `compile_rules=False` (then a bad rule raises ConfigError here)."""
        if self.compiled is None:
            object.__setattr__(self, "compiled", _build_classifier(self))
        return self.compiled


# --- reading values ---------------------------------------------------------------------


class _Table:
    """A TOML table being read: every get names its key path, unknown keys are an error."""

    def __init__(self, file: str, path: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(file, path, f"expected a table, got {_show(data)}")
        self.file, self.path, self.data = file, path, data
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def err(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), message)

    def get(self, name: str, kind: type[T] | tuple[type, ...], default: T) -> T:
        self.used.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a TOML `true` is never a number here.
        if isinstance(value, bool) and bool not in kinds:
            raise self.err(name, f"expected {_kind_name(kinds)}, got {_show(value)}")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            raise self.err(name, f"expected {_kind_name(kinds)}, got {_show(value)}")
        return value  # type: ignore[return-value]

    def choice(self, name: str, choices: tuple[Any, ...], default: Any, shown: str | None = None) -> Any:
        self.used.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        if isinstance(value, bool) or value not in choices:
            listing = shown or " | ".join(str(c) for c in choices)
            raise self.err(name, f"expected one of {listing}, got {_show(value)}")
        return value

    def number(self, name: str, default: float, lo: float, hi: float, integer: bool = True) -> Any:
        value = self.get(name, int if integer else (int, float), default)
        if not lo <= value <= hi:
            raise self.err(name, f"expected a number from {_num(lo)} to {_num(hi)}, got {_show(value)}")
        return value

    def check(self, name: str, value: str, pattern: str, expected: str) -> str:
        if value and not re.fullmatch(pattern, value):
            raise self.err(name, f"expected {expected}, got {_show(value)}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            known = ", ".join(sorted(self.used))
            raise self.err(unknown[0], f"unknown key (known keys here: {known})")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _kind_name(kinds: tuple[type, ...]) -> str:
    if int in kinds and float in kinds:
        return "a number"
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


# --- sections -----------------------------------------------------------------------------


def _site(t: _Table) -> SiteConfig:
    hospital = t.check("hospital", t.get("hospital", str, ""), r"H\d{11}", 'H followed by 11 digits (国标编码, e.g. "H37020201175")')
    site = SiteConfig(
        hospital=hospital,
        hospital_name=t.get("hospital_name", str, ""),
        area=t.choice("area", AREAS, "outpatient"),
    )
    t.finish()
    return site


def _socket(t: _Table) -> SocketConfig:
    path = t.get("path", str, "") or default_socket_path()
    size = len(os.fsencode(path)) + 1
    if size > AF_UNIX_PATH_MAX:
        raise t.err("path", f"expected a socket path of at most {AF_UNIX_PATH_MAX - 1} bytes (the AF_UNIX limit), "
                            f"got {size - 1} bytes: {_show(path)}")
    mode_text = t.get("mode", str, "0660")
    if not re.fullmatch(r"0?[0-7]{3}", mode_text):
        raise t.err("mode", f'expected an octal mode like "0660", got {_show(mode_text)}')
    mode = int(mode_text, 8)
    if mode & 0o007:
        # Anyone on the PC could then read every payment code and send commands.
        raise t.err("mode", f'expected a mode that gives others no access (e.g. "0660"), got {_show(mode_text)}')
    group = t.get("group", str, "")
    if group:
        try:
            grp.getgrnam(group)
        except KeyError:
            raise t.err("group", f"expected an existing group (getent group {group}), got {_show(group)}") from None
    sock = SocketConfig(
        path=path,
        mode=mode,
        group=group,
        client_buffer_bytes=t.number("client_buffer_bytes", 1 << 20, 4096, 1 << 28),
        max_clients=t.number("max_clients", 64, 1, 4096),
    )
    t.finish()
    return sock


def _policy(t: _Table) -> PolicyConfig:
    policy = PolicyConfig(
        payment_ttl_s=t.number("payment_ttl_s", 60.0, 1, 600, integer=False),
        duplicate_window_ms=t.number("duplicate_window_ms", 1500, 0, 60_000),
        other_ttl_s=t.number("other_ttl_s", 60.0, 1, 3600, integer=False),
        queue_limit=t.number("queue_limit", 256, 1, 100_000),
    )
    t.finish()
    return policy


def _scanner(t: _Table, index: int, site: SiteConfig) -> ScannerConfig:
    name = t.get("name", str, "")
    if not name:
        raise t.err("name", "expected a non-empty name (used in events, topics and logs)")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise t.err("name", f"expected letters, digits, '-', '_' or '.' (it becomes an MQTT topic level), got {_show(name)}")
    transport = t.choice("transport", registry.names(), "serial")
    path = t.get("path", str, "")
    usb = t.check("usb", t.get("usb", str, "").lower(), r"[0-9a-f]{4}:[0-9a-f]{4}", 'a USB id "vid:pid" in hex, e.g. "0c2e:0b61"')
    match_name = t.get("match_name", str, "")
    if match_name:
        try:
            re.compile(match_name)
        except re.error as e:
            raise t.err("match_name", f"expected a regular expression, got {_show(match_name)} ({e})") from None
    by_id = t.get("by_id", str, "")
    if transport == "serial" and not path and not by_id:
        raise t.err("path", 'expected the serial device path (e.g. "/dev/ttyACM0" or a /dev/serial/by-id/… link)')
    if transport != "serial" and not (path or usb or match_name or by_id):
        raise t.err("path", "expected at least one of path, usb, match_name or by_id to find the device")
    baud = t.choice("baudrate", BAUDRATES, 9600, shown=f"{BAUDRATES[0]}…{BAUDRATES[-1]}")
    vendor_ids = t.get("vendor_ids", dict, {})
    for k, v in vendor_ids.items():
        if len(k) != 1 or not isinstance(v, str):
            raise t.err("vendor_ids", f'expected one-character keys with symbology names, e.g. {{ s = "qr" }}, got key {_show(k)}')
    encoding = t.get("encoding", str, "utf-8")
    try:
        "".encode(encoding)
    except LookupError:
        raise t.err("encoding", f'expected a text encoding such as "utf-8" or "gbk", got {_show(encoding)}') from None
    scanner = ScannerConfig(
        name=name,
        transport=transport,
        path=path,
        baudrate=baud,
        bytesize=t.choice("bytesize", (5, 6, 7, 8), 8),
        parity=t.choice("parity", PARITIES, "N"),
        stopbits=t.choice("stopbits", (1, 1.5, 2), 1),
        encoding=encoding,
        role=t.choice("role", ROLES, "window"),
        area=t.choice("area", AREAS, ""),
        terminator=t.choice("terminator", TERMINATOR_NAMES, "auto"),
        idle_gap_ms=t.number("idle_gap_ms", 0, 5, 5000) if "idle_gap_ms" in t.data else 0,  # 0: by transport
        prefix=t.get("prefix", str, ""),
        suffix=t.get("suffix", str, ""),
        max_length=t.number("max_length", 512, 8, 65536),
        aim=t.get("aim", bool, True),
        vendor_ids=dict(vendor_ids),
        usb=usb,
        match_name=match_name,
        by_id=by_id,
        grab=t.get("grab", bool, True),
        layout=t.choice("layout", LAYOUTS, "us"),
        shared_keyboard=t.get("shared_keyboard", bool, False),
        alt_numpad=t.get("alt_numpad", bool, False),
        human_max_median_gap_ms=t.number("human_max_median_gap_ms", 15.0, 0.1, 1000, integer=False),
        human_min_chars=t.number("human_min_chars", 6, 1, 512),
        control=t.get("control", str, ""),
        lock_setup_codes=t.get("lock_setup_codes", bool, False),
        settings=_transport_settings(t, registry.get(transport)),
    )
    if scanner.control and transport != "serial":
        raise t.err("control", "expected control only on a serial scanner (HID-POS output reports come with HID-POS)")
    if scanner.lock_setup_codes and not scanner.control:
        raise t.err("lock_setup_codes", 'expected a control profile on this scanner (control = "…") to send it with')
    t.finish()
    return scanner


def _transport_settings(t: _Table, transport: registry.Transport) -> dict[str, Any]:
    """The keys only this scanner's transport understands, as its registry entry declares them."""
    out: dict[str, Any] = {}
    for setting in transport.settings:
        if setting.choices:
            out[setting.name] = t.choice(setting.name, setting.choices, setting.default)
        else:
            out[setting.name] = t.get(setting.name, type(setting.default), setting.default)
        if setting.pattern:
            t.check(setting.name, out[setting.name], setting.pattern, setting.doc)
    return out


def _mqtt(t: _Table, file: str) -> MqttConfig:
    host = t.get("host", str, "")
    if not host:
        raise t.err("host", "expected the broker host name or address")
    password_file = t.get("password_file", str, "")
    password = t.get("password", str, "")
    if password and password_file:
        raise t.err("password_file", "expected either password or password_file, not both")
    tls = t.get("tls", bool, False)
    cfg = MqttConfig(
        host=host,
        port=t.number("port", 8883 if tls else 1883, 1, 65535),
        client_id=t.get("client_id", str, ""),
        username=t.get("username", str, ""),
        password=password,
        password_file=password_file,
        tls=tls,
        ca_file=t.get("ca_file", str, ""),
        cert_file=t.get("cert_file", str, ""),
        key_file=t.get("key_file", str, ""),
        topic_prefix=t.check("topic_prefix", t.get("topic_prefix", str, "").rstrip("/"), r"[^+#\x00]*",
                             "a topic prefix without the wildcards + and # (e.g. \"hospital/kiosk-07\")"),
        qos=t.choice("qos", (0, 1, 2), 1),
        keepalive_s=t.number("keepalive_s", 30, 5, 3600),
        queue_limit=t.number("queue_limit", 1000, 1, 1_000_000),
        subscribe_cmd=t.get("subscribe_cmd", bool, True),
    )
    t.finish()
    for key in ("ca_file", "cert_file", "key_file", "password_file"):
        value = getattr(cfg, key)
        if value and not os.path.exists(value):
            raise t.err(key, f"expected an existing file, got {_show(value)} (not found)")
    if cfg.password_file:
        mode = os.stat(cfg.password_file).st_mode
        if mode & 0o004:
            raise t.err("password_file", f"expected a file others cannot read, got mode {oct(mode & 0o777)} (chmod o-r {cfg.password_file})")
    if cfg.password:
        # An inline password is only as secret as the config file that holds it.
        try:
            config_mode = stat.S_IMODE(os.stat(file).st_mode)
        except OSError:
            config_mode = 0  # parsed from memory (tests, tools): no file to check
        if config_mode & 0o004:
            raise t.err("password", f"expected password_file, or a config file others cannot read: {file} has mode "
                                    f"{oct(config_mode)} (chmod o-r {file}, or move the password to a 0640 password_file)")
    return cfg


def _metrics(t: _Table) -> MetricsConfig:
    expected = 'host:port, e.g. "127.0.0.1:9464" or "[::1]:9464"'
    listen = t.check("listen", t.get("listen", str, ""), r"([^:\s\[\]]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}", expected)
    if listen:
        port = int(listen.rpartition(":")[2])
        if not 1 <= port <= 65535:
            raise t.err("listen", f"expected {expected} with a port from 1 to 65535, got {_show(listen)}")
    t.finish()
    return MetricsConfig(listen=listen)


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
TOKEN_MIN_LENGTH = 16
_ORIGIN = re.compile(r"(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:\d{1,5})?")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or bool(re.fullmatch(r"127(\.\d{1,3}){3}", host))


def _websocket(t: _Table) -> WebSocketConfig:
    listen = t.check("listen", t.get("listen", str, "127.0.0.1:8765"), r"(\[[0-9a-fA-F:.]+\]|[^:\s\[\]]+):\d{1,5}",
                     'host:port, e.g. "127.0.0.1:8765" (IPv6 in brackets: "[::1]:8765")')
    port = int(listen.rpartition(":")[2])
    if not 1 <= port <= 65535:
        raise t.err("listen", f"expected a port from 1 to 65535, got {port}")
    allow_remote = t.get("allow_remote", bool, False)
    host = listen.rpartition(":")[0].strip("[]")
    if not allow_remote and not is_loopback(host):
        raise t.err("listen", f"expected a loopback address (127.0.0.1, ::1 or localhost), got {_show(listen)}: "
                    "any host on the network could connect; set allow_remote = true only behind a firewall you control")
    origins = t.get("allowed_origins", list, [])
    for i, origin in enumerate(origins):
        key = f"allowed_origins[{i + 1}]"
        if not isinstance(origin, str) or not _ORIGIN.fullmatch(origin):
            shown = _show(origin) if isinstance(origin, str) else "a " + type(origin).__name__
            hint = " (no wildcards: list each HIS origin)" if isinstance(origin, str) and "*" in origin else ""
            raise t.err(key, f'expected an origin like "https://his.example-hospital.cn" (scheme://host[:port], '
                        f"lowercase, no path){hint}, got {shown}")
    token = t.get("token", str, "")
    token_file = t.get("token_file", str, "")
    if token and token_file:
        raise t.err("token_file", "expected either token or token_file, not both")
    if token_file:
        _check_token_file(t, token_file)  # read by the daemon only (with_secrets): tools need not read it
    elif not token:
        raise t.err("token", "expected token or token_file: any local process can reach a TCP port, "
                    "the token is what keeps other users and pages out")
    else:
        _check_token(t.file, t.key("token"), token)
    cfg = WebSocketConfig(
        listen=listen,
        allow_remote=allow_remote,
        allowed_origins=tuple(origins),
        allow_no_origin=t.get("allow_no_origin", bool, False),
        token=token,
        token_file=token_file,
        allow_inject=t.get("allow_inject", bool, False),
        max_clients=t.number("max_clients", 32, 1, 1024),
    )
    t.finish()
    return cfg


def _check_token(file: str, key: str, token: str) -> None:
    if len(token) < TOKEN_MIN_LENGTH or not token.isprintable() or token != token.strip():
        raise ConfigError(file, key, f"expected at least {TOKEN_MIN_LENGTH} printable characters without surrounding "
                          f"spaces (e.g. the output of `openssl rand -hex 24`), got {len(token)} characters")


def _check_token_file(t: _Table, path: str) -> None:
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        raise t.err("token_file", f"expected an existing file, got {_show(path)} (not found)") from None
    except OSError as e:
        raise t.err("token_file", f"cannot stat {_show(path)}: {e.strerror}") from None
    if mode & ~0o640:
        raise t.err("token_file", f"expected mode 0600 or 0640 (owner read-write, group read at most), "
                    f"got {oct(mode)} (chmod 0640 {path})")


def with_secrets(config: Config) -> Config:
    """The config with `[websocket] token_file` read into its token: what the daemon runs with
    (at boot and on reload, so a rotated token is a changed config). Tools that only read the
    config (status, listen) never need the secret, nor the right to read it."""
    ws = config.websocket
    if ws is None or not ws.token_file:
        return config
    key = "websocket.token_file"
    try:
        with open(ws.token_file, encoding="utf-8") as f:
            token = f.read(4096).strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(config.source, key, f"cannot read {_show(ws.token_file)}: {e}") from None
    _check_token(config.source, key, token)
    return dataclasses.replace(config, websocket=dataclasses.replace(ws, token=token))


def _same_address(a: str, b: str) -> bool:
    (host_a, _, port_a), (host_b, _, port_b) = a.rpartition(":"), b.rpartition(":")
    return port_a == port_b and (host_a == host_b or "0.0.0.0" in (host_a, host_b) or "[::]" in (host_a, host_b))


def _discovery(t: _Table) -> DiscoveryConfig:
    extra = t.get("extra_vendor_ids", list, [])
    for i, v in enumerate(extra):
        if not isinstance(v, str) or not re.fullmatch(r"[0-9a-fA-F]{4}", v):
            raise t.err(f"extra_vendor_ids[{i + 1}]", f'expected a 4-digit hex USB vendor id like "0c2e", got {_show(v)}')
    cfg = DiscoveryConfig(auto=t.get("auto", bool, True), extra_vendor_ids=tuple(v.lower() for v in extra))
    t.finish()
    return cfg


def _control(t: _Table) -> ControlConfig:
    # Imported here: the control package imports config.
    from .control.profile import builtin_profiles, site_profiles

    t.used.add("profile")
    profiles = site_profiles(t.data.get("profile", []), t.file, builtin_profiles())
    cfg = ControlConfig(
        kiosk_voice=t.get("kiosk_voice", str, ""),
        window_voice=t.get("window_voice", str, ""),
        max_amount_fen=t.number("max_amount_fen", 0, 0, 99_999_999),
        recover_interval_s=t.number("recover_interval_s", 2.0, 0.1, 600, integer=False),
        profiles=profiles,
    )
    t.finish()
    return cfg


_KIND_NAME = r"[a-z][a-z0-9_]{0,39}"


def _acceptance_kind(t: _Table, name: str) -> AcceptanceKind:
    # The vocabulary of events; model imports nothing from here.
    from .model import Channel, Kind

    kinds = tuple(k.value for k in Kind)
    channels = tuple(c.value for c in Channel)
    statuses = t.get("result_status", list, ["paid", "refunded"])
    for i, status in enumerate(statuses):
        if status not in RESULT_STATUSES:
            raise t.err(f"result_status[{i + 1}]", f"expected one of {' | '.join(RESULT_STATUSES)}, got {_show(status)}")
    if not statuses:
        raise t.err("result_status", "expected at least one status (e.g. [\"paid\", \"refunded\"])")
    medical = t.get("result_medical_insurance", bool, False) if "result_medical_insurance" in t.data else None
    kind = AcceptanceKind(
        name=name,
        scan_kind=t.choice("scan_kind", kinds, "", shown=" | ".join(kinds)),
        scan_channel=t.choice("scan_channel", channels, "", shown="a channel name such as unionpay, nhsa, wechat"),
        result_channel=t.choice("result_channel", channels, "", shown="a channel name such as unionpay"),
        result_medical_insurance=medical,
        result_statuses=tuple(statuses),
    )
    if not kind.scan_kind:
        raise t.err("scan_kind", f"expected the kind of scan this counts: one of {' | '.join(kinds)}")
    t.finish()
    return kind


def _acceptance(t: _Table) -> AcceptanceConfig:
    base = AcceptanceConfig()
    kinds = {k.name: k for k in base.kinds}
    raw_kinds = t.get("kind", dict, {})
    for name, table in raw_kinds.items():
        if not re.fullmatch(_KIND_NAME, name):
            raise t.err(f"kind.{name}", "expected a kind name of lowercase letters, digits and '_' (e.g. wechat_medical)")
        kinds[name] = _acceptance_kind(_Table(t.file, t.key(f"kind.{name}"), table), name)
    required = dict(base.required)
    raw_required = t.get("required", dict, {})
    for role, names in raw_required.items():
        key = f"required.{role}"
        if role not in ROLES:
            raise t.err(key, f"expected a role: one of {' | '.join(ROLES)}")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise t.err(key, f"expected a list of kind names, got {_show(names)}")
        for i, n in enumerate(names):
            if n not in kinds:
                raise t.err(f"{key}[{i + 1}]", f"expected a kind defined here or by default ({', '.join(sorted(kinds))}), got {_show(n)}")
        required[role] = tuple(names)
    areas = t.get("areas", list, [])
    for i, area in enumerate(areas):
        if area not in AREAS:
            raise t.err(f"areas[{i + 1}]", f"expected one of {' | '.join(AREAS)}, got {_show(area)}")
    cfg = AcceptanceConfig(
        ledger=t.get("ledger", str, "") or default_ledger_path(),
        result_retention_h=t.number("result_retention_h", 24.0, 0.01, 24 * 31, integer=False),
        result_ids_max=t.number("result_ids_max", 20_000, 1, 1_000_000),
        kinds=tuple(kinds.values()),
        required=required,
        areas=tuple(areas),
    )
    t.finish()
    return cfg


def _check_control(file: str, control: ControlConfig, scanners: tuple[ScannerConfig, ...]) -> None:
    """Every scanner's profile exists, and the role's prompt and the amount ceiling suit it."""
    from .control.params import ControlParamError, check_voice, max_amount_fen

    for i, s in enumerate(scanners):
        if not s.control:
            continue
        key = f"scanner[{i + 1}]"
        profile = control.profiles.get(s.control)
        if profile is None:
            raise ConfigError(file, f"{key}.control", f"expected a control profile, one of {' | '.join(sorted(control.profiles))}, got {_show(s.control)}")
        if s.lock_setup_codes and not profile.has("lock_setup_codes"):
            raise ConfigError(file, f"{key}.lock_setup_codes", f"expected a profile that can lock setup codes; {profile.name} has no lock_setup_codes verb")
        voice = control.voice_for(s.role)
        if voice and profile.has("voice"):
            try:
                check_voice(voice, profile)
            except ControlParamError as e:
                raise ConfigError(file, f"control.{s.role}_voice", f"{e.message} (for {s.name}, profile {profile.name})") from None
        top = max_amount_fen(profile)
        if profile.has("amount") and control.max_amount_fen > top:
            raise ConfigError(file, "control.max_amount_fen", f"expected at most {top} (what {profile.name} on {s.name} can show), got {control.max_amount_fen}")


def _section(root: _Table, name: str, parse: Callable[[_Table], T], default: T) -> T:
    root.used.add(name)
    if name not in root.data:
        return default
    return parse(_Table(root.file, name, root.data[name]))


def parse_config(
    data: dict[str, Any], file: str = "config.toml", *, compile_rules: bool = True, search_overlaps: bool = False
) -> Config:
    """`compile_rules=False`: leave [[rule]] and [classify] unchecked until `classifier()` (for
    tools that only need the socket path); `search_overlaps`: check-config's strict rule check."""
    root = _Table(file, "", data)
    site = _section(root, "site", _site, SiteConfig())
    socket = _section(root, "socket", _socket, SocketConfig())
    policy = _section(root, "policy", _policy, PolicyConfig())
    root.used.add("scanner")
    raw_scanners = data.get("scanner", [])
    if not isinstance(raw_scanners, list):
        raise ConfigError(file, "scanner", "expected [[scanner]] tables (an array of tables)")
    scanners = tuple(_scanner(_Table(file, f"scanner[{i + 1}]", s), i, site) for i, s in enumerate(raw_scanners))
    seen: dict[str, int] = {}
    for i, s in enumerate(scanners):
        if s.name in seen:
            raise ConfigError(file, f"scanner[{i + 1}].name", f'expected a unique name, "{s.name}" is also scanner[{seen[s.name] + 1}]')
        seen[s.name] = i
    mqtt = _section(root, "mqtt", lambda t: _mqtt(t, file), None)
    metrics = _section(root, "metrics", _metrics, MetricsConfig())
    websocket = _section(root, "websocket", _websocket, None)
    discovery = _section(root, "discovery", _discovery, DiscoveryConfig())
    control = _section(root, "control", _control, None) or _control(_Table(file, "control", {}))
    _check_control(file, control, scanners)
    acceptance = _section(root, "acceptance", _acceptance, AcceptanceConfig())
    if websocket is not None and metrics.listen and _same_address(metrics.listen, websocket.listen):
        raise ConfigError(file, "metrics.listen", f"expected another address than [websocket] listen ({websocket.listen}), "
                          "which serves /metrics already: remove [metrics] listen")
    root.used.update({"rule", "classify"})
    rules = data.get("rule", [])
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise ConfigError(file, "rule", "expected [[rule]] tables (an array of tables)")
    classify = data.get("classify", {})
    if not isinstance(classify, dict):
        raise ConfigError(file, "classify", "expected a [classify] table")
    root.finish()
    config = Config(
        source=file,
        site=site,
        socket=socket,
        policy=policy,
        scanners=scanners,
        mqtt=mqtt,
        metrics=metrics,
        websocket=websocket,
        discovery=discovery,
        control=control,
        acceptance=acceptance,
        rules=tuple(rules),
        classify=dict(classify),
    )
    if compile_rules:
        # Site rules are checked by the classifier that will run them.
        object.__setattr__(config, "compiled", _build_classifier(config, search_overlaps=search_overlaps))
    return config


def _build_classifier(config: Config, *, search_overlaps: bool = False) -> Any:
    # Imported here: classify imports model, not config.
    from .classify import Classifier, RuleError

    try:
        return Classifier.build(config.rules, config.classify, search_overlaps=search_overlaps)
    except RuleError as e:
        raise ConfigError(config.source, e.key, e.message) from None


def load_config(
    path: str | os.PathLike[str] | None, *, compile_rules: bool = True, search_overlaps: bool = False
) -> Config:
    """Read a config file; None means the embedded default (or /etc/scannerd/config.toml if present).

    `compile_rules=False` reads everything but the rules (compiled on first `classifier()`):
    `status` and the other socket tools must work when a site rule is broken. `search_overlaps`
    adds the slow same-priority overlap search: `check-config` only, never the daemon.
    """
    if path is None:
        if DEFAULT_CONFIG_PATH.exists():
            path = DEFAULT_CONFIG_PATH
        else:
            return Config()  # default rules only: compiled on first classifier(), checked by the tests
    p = Path(path)
    name = str(p)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(name, "", "file not found") from None
    except OSError as e:
        raise ConfigError(name, "", f"cannot read: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(name, "", f"expected UTF-8 text: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(name, "", f"not valid TOML: {e}") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively.
        raise ConfigError(name, "", "not valid TOML: expected arrays and inline tables nested a few levels deep, "
                                    "got nesting deeper than the parser's limit") from None
    return parse_config(data, name, compile_rules=compile_rules, search_overlaps=search_overlaps)
