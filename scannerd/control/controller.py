"""One controlled scanner: whitelisted verbs with validated parameters, one command at a time,
spaced as the device needs, each waiting for its ACK or reply frame within the profile's timeout.

The command layer calls `arm`, `disarm`, `display` and `feedback`; each answers with a
ControlResult whose `scanner` says what the device did: `confirmed`, `refused` (it answered
NAK / ENQ / an error code), `unanswered`, or `not_controllable`. A device that stops answering
is reported `error` / `control_unanswered` through `on_state`; the controller keeps reasserting
the state the device should be in and reports it `present` again when it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from ..framing import FramingSpec
from .channel import ControlChannel, FrameSink
from .families import Message, SerialCounter
from .params import ControlParamError, check_amount, check_voice, expand
from .profile import Profile
from .replies import Reply

log = structlog.get_logger("scannerd.control")

CONFIRMED, REFUSED, UNANSWERED, NOT_CONTROLLABLE = "confirmed", "refused", "unanswered", "not_controllable"
CONTROL_UNANSWERED = "control_unanswered"

StateCallback = Callable[[str, str], None]  # (state, reason): ("error", "control_unanswered") / ("present", "")


@dataclass(frozen=True, slots=True)
class ControlResult:
    scanner: str  # confirmed | refused | unanswered | not_controllable
    reason: str = ""
    ignored: tuple[str, ...] = ()  # parameters this device cannot show (an amount on an engine)

    def as_reply(self) -> dict[str, Any]:
        """The fields a command reply carries."""
        out: dict[str, Any] = {"scanner": self.scanner}
        if self.reason:
            out["scanner_reason"] = self.reason
        if self.ignored:
            out["ignored"] = list(self.ignored)
        return out


NOT_CONTROLLABLE_RESULT = ControlResult(NOT_CONTROLLABLE, "no control profile")

# One step of an operation: a verb and the parameters its placeholder takes.
_Step = tuple[str, dict[str, Any]]


def messages_for(profile: Profile, steps: list[_Step], serials: SerialCounter) -> list[Message]:
    """The wire messages for an operation's steps (parameters already validated)."""
    parts: list[bytes] = []
    verbs: list[str] = []
    for verb, params in steps:
        for part in profile.verbs.get(verb, ()):
            parts.append(expand(part, profile, **params))
        if profile.has(verb):
            verbs.append(verb)
    return profile.codec.encode(parts, tuple(verbs), serials) if parts else []


class DeviceController:
    def __init__(
        self,
        device: str,
        profile: Profile,
        spec: FramingSpec,
        emit: FrameSink,
        *,
        on_state: StateCallback | None = None,
        reads_when_idle: bool = False,
        default_voice: str = "",
        lock_setup_codes: bool = False,
        amount_limit_fen: int = 0,
        recover_interval_s: float = 2.0,
    ) -> None:
        """`reads_when_idle`: a window's scanner reads when nobody armed it (enable on open and
        on disarm); a kiosk's reads only while armed (disable on open, disarm and TTL)."""
        self.device = device
        self.profile = profile
        self.channel = ControlChannel(device, profile, spec, emit)
        self.channel.listener = self
        self.on_state = on_state
        self.reads_when_idle = reads_when_idle
        self.default_voice = default_voice
        self.lock_setup_codes = lock_setup_codes
        self.amount_limit_fen = amount_limit_fen
        self.recover_interval_s = recover_interval_s
        self.state = "ok"  # ok | error
        self.armed = False
        self._serials = SerialCounter()
        self._lock: asyncio.Lock | None = None
        self._pending: tuple[asyncio.Future[Reply | None], int | None] | None = None
        self._last_send = float("-inf")
        self._ttl: asyncio.TimerHandle | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def use_profile(self, profile: Profile) -> None:
        """New verbs, limits or timing of the same protocol family (a reloaded site profile)."""
        assert profile.family == self.profile.family
        self.profile = profile
        self.channel.profile = profile

    @property
    def busy(self) -> bool:
        """A command is out, waiting for its reply."""
        return self._pending is not None

    # --- the command layer's verbs -------------------------------------------------------------

    async def arm(self, amount_fen: int | None = None, voice: str | None = None, ttl_s: float | None = None) -> ControlResult:
        """Switch reading on, show the amount and speak the prompt (the role default when
        `voice` is None; "" for none). After `ttl_s` the device is switched off again."""
        steps: list[_Step] = [("enable", {})]
        ignored = self._display_steps(steps, amount_fen, voice if voice is not None else self.default_voice, voice is not None)
        self.armed = True
        self._cancel_ttl()
        if ttl_s is not None:
            self._ttl = asyncio.get_running_loop().call_later(ttl_s, lambda: self._spawn(self._expire()))
        result = await self._run(steps)
        return ControlResult(result.scanner, result.reason, ignored)

    async def disarm(self) -> ControlResult:
        self.armed = False
        self._cancel_ttl()
        return await self._run(self._idle_steps())

    async def display(self, amount_fen: int | None = None, voice: str | None = None) -> ControlResult:
        """Show an amount and/or speak a prompt without changing whether the device reads."""
        if amount_fen is None and voice is None:
            raise ControlParamError("amount_fen", "expected amount_fen and/or voice to display")
        steps: list[_Step] = []
        ignored = self._display_steps(steps, amount_fen, voice or "", True)
        if not steps:
            return ControlResult(NOT_CONTROLLABLE, f"{self.profile.name} has no amount display or voice", ignored)
        result = await self._run(steps)
        return ControlResult(result.scanner, result.reason, ignored)

    async def feedback(self, ok: bool) -> ControlResult:
        """Good / bad light or beep after a scan or a reject, where the device has one."""
        verb = "good" if ok else "bad"
        if not self.profile.has(verb):
            return ControlResult(NOT_CONTROLLABLE, f"{self.profile.name} has no {verb} verb")
        return await self._run([(verb, {})])

    def check(self, amount_fen: int | None = None, voice: str | None = None) -> None:
        """Raise ControlParamError now for what `arm` / `display` would refuse, before the
        caller changes anything (the software arming happens before the device answers)."""
        self._display_steps([], amount_fen, voice or "", True)

    def feedback_soon(self, ok: bool) -> None:
        """`feedback` without waiting for it (from the pipeline's outcome callbacks). Not for
        a device that stopped answering: each would wait out its timeout ahead of `disarm`."""
        if self.profile.has("good" if ok else "bad") and self.channel.attached and self.state == "ok":
            self._spawn(self.feedback(ok))

    async def close(self) -> None:
        self._cancel_ttl()
        tasks = [*self._tasks, *([self._recovery] if self._recovery else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- ChannelListener -----------------------------------------------------------------------

    def attached(self) -> None:
        """The port opened (or reopened): lock setup codes, put the device in the state it should be in."""
        self._spawn(self._reassert())

    def detached(self) -> None:
        if self._pending is not None and not self._pending[0].done():
            self._pending[0].set_result(None)  # the command went nowhere: unanswered, device absent
        if self._recovery is not None:
            self._recovery.cancel()
            self._recovery = None

    def reply(self, reply: Reply) -> None:
        pending = self._pending
        if pending is None or pending[0].done():
            log.debug("control_reply_unexpected", device=self.device, status=reply.status)
            return
        future, serial = pending
        if serial is not None and reply.serial is not None and reply.serial != serial:
            log.debug("control_reply_stale", device=self.device, serial=reply.serial, expected=serial)
            return
        future.set_result(reply)

    # --- inside --------------------------------------------------------------------------------

    def _display_steps(self, steps: list[_Step], amount_fen: int | None, voice: str, voice_asked: bool) -> tuple[str, ...]:
        """Validate amount and prompt (before anything is sent) and add their steps."""
        ignored: list[str] = []
        if amount_fen is not None:
            if self.profile.has("amount"):
                steps.append(("amount", {"amount_fen": check_amount(amount_fen, self.profile, self.amount_limit_fen)}))
            else:
                ignored.append("amount_fen")
        if voice:
            if self.profile.has("voice"):
                steps.append(("voice", {"voice": check_voice(voice, self.profile)}))
            elif voice_asked:
                ignored.append("voice")
        return tuple(ignored)

    def _idle_steps(self) -> list[_Step]:
        steps: list[_Step] = [("enable" if self.reads_when_idle else "disable", {})]
        if self.profile.has("amount_off"):
            steps.append(("amount_off", {}))
        return steps

    async def _run(self, steps: list[_Step], *, recovering: bool = False) -> ControlResult:
        messages = messages_for(self.profile, steps, self._serials)
        if not messages:
            return ControlResult(NOT_CONTROLLABLE, f"{self.profile.name} has none of {', '.join(v for v, _ in steps)}")
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self.channel.attached:
                return ControlResult(UNANSWERED, "device_absent")
            for message in messages:
                reply = await self._exchange(message)
                if reply is None:
                    if self.channel.attached:
                        self._went_silent(recovering)
                        return ControlResult(UNANSWERED, CONTROL_UNANSWERED)
                    return ControlResult(UNANSWERED, "device_absent")
                if not reply.ok:
                    log.warning("control_refused", device=self.device, verbs=list(message.verbs), status=reply.status, code=reply.code)
                    self._answered()
                    return ControlResult(REFUSED, f"device answered {reply.status}" + (f" {reply.code}" if reply.code else ""))
            log.debug("control_confirmed", device=self.device, verbs=[v for v, _ in steps])
            self._answered()
            return ControlResult(CONFIRMED)

    async def _exchange(self, message: Message) -> Reply | None:
        loop = asyncio.get_running_loop()
        wait = self._last_send + self.profile.min_spacing_ms / 1000 - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)  # the device's minimum spacing between commands
        future: asyncio.Future[Reply | None] = loop.create_future()
        self._pending = (future, message.serial)
        try:
            if not self.channel.send(message.data):
                return None
            self._last_send = loop.time()
            return await asyncio.wait_for(future, self.profile.timeout_ms / 1000)
        except TimeoutError:
            return None
        finally:
            self._pending = None

    def _went_silent(self, recovering: bool) -> None:
        if self.state != "error":
            self.state = "error"
            log.warning("control_unanswered", device=self.device, profile=self.profile.name)
            if self.on_state is not None:
                self.on_state("error", CONTROL_UNANSWERED)
        if not recovering and (self._recovery is None or self._recovery.done()):
            self._recovery = asyncio.get_running_loop().create_task(self._recover())

    def _answered(self) -> None:
        if self.state == "error":
            self.state = "ok"
            log.info("control_answering_again", device=self.device)
            if self.on_state is not None:
                self.on_state("present", "")

    async def _recover(self) -> None:
        """Keep telling a silent device the state it should be in until it answers."""
        while self.state == "error" and self.channel.attached:
            await asyncio.sleep(self.recover_interval_s)
            await self._reassert(recovering=True)

    async def _reassert(self, recovering: bool = False) -> None:
        if self.lock_setup_codes and self.profile.has("lock_setup_codes"):
            result = await self._run([("lock_setup_codes", {})], recovering=recovering)
            if result.scanner == UNANSWERED:
                return
        await self._run([("enable", {})] if self.armed else self._idle_steps(), recovering=recovering)

    async def _expire(self) -> None:
        self._ttl = None
        if self.armed:
            log.info("control_arm_expired", device=self.device)
            await self.disarm()

    def _cancel_ttl(self) -> None:
        if self._ttl is not None:
            self._ttl.cancel()
            self._ttl = None

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
