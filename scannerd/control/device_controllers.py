"""The daemon's side of scanner control: one DeviceController per controlled scanner, by name.

The daemon asks this for a control channel when it starts a serial source, releases it when the
source stops, and forwards `arm` / `disarm` / `display` and every pipeline result here. A
scanner without a profile answers `not_controllable` and is never written to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import ControlConfig, ScannerConfig
from ..framing import FramingSpec
from ..model import DeviceStateEvent, Frame, Rejected, RejectEvent, ScanEvent
from .channel import ControlChannel
from .controller import NOT_CONTROLLABLE_RESULT, DeviceController
from .params import ControlParamError

__all__ = ["ControlParamError", "DeviceControllers"]

StateSink = Callable[[DeviceStateEvent], None]
FrameSink = Callable[[Frame | Rejected], None]


class DeviceControllers:
    def __init__(self, config: ControlConfig, state: StateSink) -> None:
        self.config = config
        self._state = state
        self._controllers: dict[str, DeviceController] = {}

    def reconfigure(self, config: ControlConfig, scanners: tuple[ScannerConfig, ...]) -> None:
        """A reload: new prompts, ceiling and roles apply to running controllers at once; a
        changed profile or control key restarts the source (it is a source setting)."""
        self.config = config
        for scanner in scanners:
            controller = self._controllers.get(scanner.name)
            if controller is not None:
                controller.reads_when_idle = scanner.role != "kiosk"
                controller.default_voice = config.voice_for(scanner.role)
                controller.amount_limit_fen = config.max_amount_fen
                controller.recover_interval_s = config.recover_interval_s

    def channel_for(self, scanner: ScannerConfig, spec: FramingSpec, emit: FrameSink) -> ControlChannel | None:
        """The control channel for a scanner's new source, or None when it has no profile."""
        if not scanner.control:
            return None
        name = scanner.name
        controller = DeviceController(
            name,
            self.config.profiles[scanner.control],
            spec,
            emit,
            on_state=lambda state, reason: self._state(DeviceStateEvent(name, state, reason)),
            reads_when_idle=scanner.role != "kiosk",
            default_voice=self.config.voice_for(scanner.role),
            lock_setup_codes=scanner.lock_setup_codes,
            amount_limit_fen=self.config.max_amount_fen,
            recover_interval_s=self.config.recover_interval_s,
        )
        self._controllers[name] = controller
        return controller.channel

    async def release(self, name: str, channel: ControlChannel | None = None) -> None:
        """The scanner's source stopped (reload, removal, unplug, shutdown). With `channel`:
        only if that is still the scanner's channel (a restarted source has a new one)."""
        controller = self._controllers.get(name)
        if controller is None or (channel is not None and controller.channel is not channel):
            return
        del self._controllers[name]
        await controller.close()

    def check(self, name: str, amount_fen: int | None, voice: str | None) -> None:
        """Raise ControlParamError for parameters the scanner's device cannot take."""
        controller = self._controllers.get(name)
        if controller is not None:
            controller.check(amount_fen, voice)

    def get(self, name: str) -> DeviceController | None:
        return self._controllers.get(name)

    async def arm(self, name: str, amount_fen: int | None, voice: str | None, ttl_s: float | None) -> dict[str, Any]:
        """Raises ControlParamError for an amount or prompt the device cannot take."""
        controller = self._controllers.get(name)
        if controller is None:
            return NOT_CONTROLLABLE_RESULT.as_reply()
        return (await controller.arm(amount_fen, voice, ttl_s)).as_reply()

    async def disarm(self, name: str) -> dict[str, Any]:
        controller = self._controllers.get(name)
        if controller is None:
            return NOT_CONTROLLABLE_RESULT.as_reply()
        return (await controller.disarm()).as_reply()

    async def display(self, name: str, amount_fen: int | None, voice: str | None) -> dict[str, Any]:
        controller = self._controllers.get(name)
        if controller is None:
            return NOT_CONTROLLABLE_RESULT.as_reply()
        return (await controller.display(amount_fen, voice)).as_reply()

    def outcome(self, name: str, result: ScanEvent | RejectEvent | None) -> None:
        """After the pipeline took a read: `good` for a recognised scan, `bad` for a reject or
        a code no rule knows. (None: a suppressed double read, no feedback.)"""
        controller = self._controllers.get(name)
        if controller is None or result is None:
            return
        ok = isinstance(result, ScanEvent) and result.classification.channel != "unknown"
        controller.feedback_soon(ok)

    def states(self) -> dict[str, dict[str, Any]]:
        """For `status`: each controlled scanner's profile and whether it answers."""
        return {name: {"profile": c.profile.name, "state": c.state, "armed": c.armed} for name, c in self._controllers.items()}

    async def close(self) -> None:
        for name in list(self._controllers):
            await self.release(name)
