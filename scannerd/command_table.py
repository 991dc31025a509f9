"""Every command of the protocol, as one table: name, arguments, handler, read-only, transports.

Transports (the Unix socket, the WebSocket, MQTT `…/cmd`) decode a line with
`protocol.decode_command` and call `CommandTable.dispatch`; nothing else decides what a
command means, which arguments it takes, or who may send it. Arguments are validated here, in
one place, before a handler runs: wrong types, numbers out of range (NaN and Infinity never get
this far), over-long strings and unknown keys are refused with `ok: false` and a reason.

Handlers reach the daemon through the `Services` protocol, so the table can be tested without
one and the daemon never grows its own `if name == …` chain again.
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from .protocol import Refused, reply

if TYPE_CHECKING:
    from .delivery.hub import Subscriber

log = structlog.get_logger("scannerd.commands")

SOCKET = "socket"
WEBSOCKET = "websocket"
MQTT = "mqtt"
LOCAL = frozenset({SOCKET, WEBSOCKET})
EVERYWHERE = frozenset({SOCKET, WEBSOCKET, MQTT})

DEVICE_NAME_MAX = 64
MAX_DEVICES = 256


class CommandError(Refused):
    """A command that cannot be carried out; the message becomes the reply's `error`."""


@dataclass(frozen=True, slots=True)
class Arg:
    kind: str  # "str" | "int" | "number" | "bool" | "str_list" | "choice"
    required: bool = False
    lo: float = -math.inf
    hi: float = math.inf
    max_len: int = 256
    choices: tuple[str, ...] = ()
    max_items: int = MAX_DEVICES
    doc: str = ""

    def describe(self) -> str:
        if self.kind == "str":
            return f"a string of at most {self.max_len} characters"
        if self.kind == "int":
            return f"an integer from {_num(self.lo)} to {_num(self.hi)}"
        if self.kind == "number":
            return f"a number from {_num(self.lo)} to {_num(self.hi)}"
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + " | ".join(f'"{c}"' for c in self.choices)
        return f"a list of at most {self.max_items} strings of at most {self.max_len} characters"

    def check(self, name: str, value: Any) -> Any:
        bad = CommandError(f'"{name}" must be {self.describe()}, got {_show(value)}')
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise bad
            return value
        if self.kind in ("int", "number"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad
            if self.kind == "int" and not isinstance(value, int):
                raise bad
            if isinstance(value, float) and not math.isfinite(value):
                raise bad
            if not self.lo <= value <= self.hi:
                raise bad
            return value
        if self.kind in ("str", "choice"):
            if not isinstance(value, str) or len(value) > self.max_len:
                raise bad
            if self.kind == "choice" and value not in self.choices:
                raise bad
            return value
        if self.kind == "str_list":
            if not isinstance(value, list) or len(value) > self.max_items:
                raise bad
            if not all(isinstance(v, str) and 0 < len(v) <= self.max_len for v in value):
                raise bad
            return value
        raise AssertionError(f"unknown argument kind {self.kind}")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'a string of {len(value)} characters' if len(value) > 40 else f'"{value}"'
    if isinstance(value, (int, float)):
        text = str(value)
        return text if len(text) <= 24 else f"a number of {len(text)} digits"
    return {dict: "an object", list: "a list", type(None): "null"}.get(type(value), type(value).__name__)


@dataclass(frozen=True, slots=True)
class CommandContext:
    """Who sent a command: which transport, which connection, which Unix user (if known)."""

    transport: str
    subscriber: Subscriber | None = None
    peer_uid: int | None = None


class Services(Protocol):
    """What handlers may ask of the daemon."""

    def status(self, ctx: CommandContext) -> dict[str, Any]: ...
    def devices(self) -> list[dict[str, Any]]: ...
    def metrics_json(self) -> dict[str, Any]: ...
    def metrics_text(self) -> str: ...
    def shapes(self) -> dict[str, Any]: ...
    def known_device(self, name: str) -> bool: ...
    def device_names(self) -> list[str]: ...
    async def arm(self, device: str, ttl_s: float | None, amount_fen: int | None, voice: str | None) -> dict[str, Any]: ...
    async def disarm(self, device: str) -> dict[str, Any]: ...
    async def display(self, device: str, amount_fen: int | None, voice: str | None) -> dict[str, Any]: ...
    def inject(self, device: str, code: str, symbology: str | None) -> dict[str, Any]: ...
    def subscribe(self, ctx: CommandContext, role: str, devices: list[str] | None, ack: bool, show_codes: bool) -> dict[str, Any]: ...
    def ack(self, ctx: CommandContext, event_id: str) -> dict[str, Any]: ...


Handler = Callable[[Services, CommandContext, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    summary: str
    handler: Handler
    args: Mapping[str, Arg] = field(default_factory=dict)
    read_only: bool = True
    transports: frozenset[str] = EVERYWHERE
    # Transports a site may open this command to by configuration (CommandTable.grant), e.g.
    # inject from the browser for a test page with `[websocket] allow_inject = true`.
    opt_in: frozenset[str] = frozenset()


# --- handlers ---------------------------------------------------------------------------------


def _device(services: Services, name: str) -> str:
    if not services.known_device(name):
        raise CommandError(f"unknown device {name!r}; known: {', '.join(services.device_names()) or 'none'}")
    return name


async def _status(s: Services, ctx: CommandContext, a: dict[str, Any]) -> dict[str, Any]:
    return s.status(ctx)


async def _devices(s: Services, ctx: CommandContext, a: dict[str, Any]) -> dict[str, Any]:
    return {"devices": s.devices()}


async def _metrics(s: Services, ctx: CommandContext, a: dict[str, Any]) -> dict[str, Any]:
    if a.get("format") == "prometheus":
        return {"text": s.metrics_text()}
    return {"metrics": s.metrics_json()}


async def _shapes(s: Services, ctx: CommandContext, a: dict[str, Any]) -> dict[str, Any]:
    return s.shapes()


async def _subscribe(s: Services, ctx: CommandContext, a: dict[str, Any]) -> dict[str, Any]:
    if ctx.subscriber is None:
        raise CommandError(f"subscribe is not available over {ctx.transport}")
    show = bool(a.get("show_codes", False))
    if show and ctx.peer_uid not in (0, os.geteuid()):
        raise CommandError('"show_codes" needs root or the daemon\'s own user; '
                           "a monitor of another user receives masked codes only")
    return s.subscribe(ctx, a["role"], a.get("devices"), bool(a.get("ack", False)), show)


async def _ack(s: Services, ctx: CommandContext, a: dict[str, Any]) -> dict[str, Any]:
    if ctx.subscriber is None:
        raise CommandError(f"ack is not available over {ctx.transport}")
    return s.ack(ctx, a["id"])


async def _arm(s: Services, ctx: CommandContext, a: dict[str, Any]) -> dict[str, Any]:
    return await s.arm(_device(s, a["device"]), a.get("ttl_s"), a.get("amount_fen"), a.get("voice"))


async def _disarm(s: Services, ctx: CommandContext, a: dict[str, Any]) -> dict[str, Any]:
    return await s.disarm(_device(s, a["device"]))


async def _display(s: Services, ctx: CommandContext, a: dict[str, Any]) -> dict[str, Any]:
    if a.get("amount_fen") is None and a.get("voice") is None:
        raise CommandError('display needs "amount_fen" and/or "voice"')
    return await s.display(_device(s, a["device"]), a.get("amount_fen"), a.get("voice"))


async def _inject(s: Services, ctx: CommandContext, a: dict[str, Any]) -> dict[str, Any]:
    return s.inject(_device(s, a["device"]), a["code"], a.get("symbology"))


_DEVICE = Arg("str", required=True, max_len=DEVICE_NAME_MAX, doc="a configured or discovered scanner name")

COMMANDS: tuple[Command, ...] = (
    Command("status", "the daemon, its scanners, sinks and armed kiosks", _status),
    Command("devices", "every scanner: present or missing, and why", _devices),
    Command("metrics", "counters and histograms (JSON, or Prometheus text)", _metrics,
            {"format": Arg("choice", choices=("json", "prometheus"))}, transports=LOCAL),
    Command("shapes", "the census of code shapes no rule knows (counts, no codes)", _shapes, transports=LOCAL),
    Command("subscribe", "receive events: role his (full codes, takes waiting scans) or monitor (masked)", _subscribe, {
        "role": Arg("choice", required=True, choices=("his", "monitor")),
        "devices": Arg("str_list", max_len=DEVICE_NAME_MAX, doc="only these scanners (absent: all)"),
        "ack": Arg("bool", doc="his: a scan stays pending until acked, and is redelivered if the connection closes first"),
        "show_codes": Arg("bool", doc="monitor: full codes (root or the daemon's user only)"),
    }, read_only=False, transports=LOCAL),
    Command("ack", "confirm a scan the HIS has taken (subscribe with ack: true)", _ack,
            {"id": Arg("str", required=True, max_len=64)}, read_only=False, transports=LOCAL),
    Command("arm", "open a kiosk's scan window (the payment page is shown)", _arm, {
        "device": _DEVICE,
        "ttl_s": Arg("number", lo=0.1, hi=3600, doc="disarm by itself after this many seconds"),
        "amount_fen": Arg("int", lo=0, hi=10**10, doc="amount to show on a scan box, in fen"),
        "voice": Arg("str", max_len=100, doc="prompt a scan box speaks"),
    }, read_only=False),
    Command("disarm", "close a kiosk's scan window", _disarm, {"device": _DEVICE}, read_only=False),
    Command("display", "show an amount and/or speak a prompt on a scan box, without arming", _display, {
        "device": _DEVICE,
        "amount_fen": Arg("int", lo=0, hi=10**10, doc="amount to show, in fen"),
        "voice": Arg("str", max_len=100, doc="prompt to speak"),
    }, read_only=False),
    Command("inject", "a test scan from a configured scanner (local socket only)", _inject, {
        "device": _DEVICE,
        "code": Arg("str", required=True, max_len=65536),
        "symbology": Arg("str", max_len=32),
    }, read_only=False, transports=frozenset({SOCKET}), opt_in=frozenset({WEBSOCKET})),
)

# Keys every command may carry besides its arguments: the command name and a request tag the
# reply echoes, so a client with several commands in flight can pair replies with requests.
ENVELOPE = ("cmd", "req")
_REQ = Arg("str", max_len=64)


class CommandTable:
    def __init__(self, services: Services, commands: tuple[Command, ...] = COMMANDS) -> None:
        self.services = services
        self.commands = {c.name: c for c in commands}
        self._granted: dict[str, frozenset[str]] = {}

    def grant(self, transport: str, names: set[str] | frozenset[str]) -> None:
        """Open opt-in commands to a transport (replacing its earlier grants): the site's
        configuration says whether, the table says which commands ever may be."""
        for name in names:
            command = self.commands.get(name)
            if command is None or transport not in command.opt_in:
                raise ValueError(f"{name!r} cannot be opened to {transport}")
        self._granted[transport] = frozenset(names)

    def permits(self, transport: str, command: Command) -> bool:
        return transport in command.transports or command.name in self._granted.get(transport, ())

    def allowed(self, transport: str) -> list[str]:
        return sorted(n for n, c in self.commands.items() if self.permits(transport, c))

    async def handle(self, transport: str, obj: dict[str, Any], subscriber: Subscriber | None = None,
                     peer_uid: int | None = None) -> dict[str, Any]:
        """What a transport calls for each decoded line: it says who sent it, the table decides."""
        return await self.dispatch(CommandContext(transport, subscriber, peer_uid), obj)

    async def dispatch(self, ctx: CommandContext, obj: dict[str, Any]) -> dict[str, Any]:
        """Validate and run one decoded command; always returns a reply, never raises."""
        name = obj.get("cmd")
        tag = obj.get("req")
        echo: dict[str, Any] = {}
        if tag is not None:
            try:
                echo["req"] = _REQ.check("req", tag)
            except CommandError as e:
                return reply(name if isinstance(name, str) else "?", False, error=str(e))
        if not isinstance(name, str):
            return reply("?", False, error='missing "cmd" (a string)', **echo)
        command = self.commands.get(name)
        if command is None or not self.permits(ctx.transport, command):
            known = ", ".join(self.allowed(ctx.transport))
            what = "unknown cmd" if command is None else f"cmd not allowed over {ctx.transport}"
            return reply(name[:64], False, error=f"{what} {name[:64]!r}; allowed here: {known}", **echo)
        try:
            args = self._arguments(command, obj)
            result = await command.handler(self.services, ctx, args)
        except Refused as e:  # the table's own checks, the hub's and the daemon's refusals
            return reply(name, False, error=str(e), **echo)
        except Exception as e:  # a bug in one command must not take the connection down
            log.exception("command_failed", cmd=name)
            return reply(name, False, error=f"internal error: {type(e).__name__}", **echo)
        return reply(name, True, **result, **echo)

    @staticmethod
    def _arguments(command: Command, obj: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(obj) - set(command.args) - set(ENVELOPE))
        if unknown:
            known = ", ".join(sorted(command.args)) or "none"
            raise CommandError(f"unknown argument {unknown[0][:64]!r} for {command.name} (its arguments: {known})")
        out: dict[str, Any] = {}
        for key, arg in command.args.items():
            if key not in obj or obj[key] is None:
                if arg.required:
                    raise CommandError(f'missing "{key}": {arg.describe()}')
                continue
            out[key] = arg.check(key, obj[key])
        return out
