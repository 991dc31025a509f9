"""The daemon's side of scanner control: one DeviceController per controlled scanner, by name.

The daemon asks this for a control channel whenever it starts a serial source (a scanner keeps
its controller, and so its armed state, across replugs and restarts), forwards `arm` /
`disarm` / `display` and every pipeline result here, and hands it each reloaded config. A
scanner without a profile answers `not_controllable` and is never written to.
"""

from __future__ import annotations

import asyncio
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
        self._retiring: set[asyncio.Task[None]] = set()

    async def reconfigure(self, config: ControlConfig, scanners: tuple[ScannerConfig, ...]) -> None:
        """A reload: new prompts, ceiling and roles apply to running controllers at once; a
        scanner that lost its profile (or its entry) loses its controller. A changed profile
        name or lock_setup_codes restarts the source, and channel_for makes a new controller."""
        self.config = config
        wanted = {s.name: s for s in scanners if s.control}
        for name in list(self._controllers):
            scanner = wanted.get(name)
            if scanner is None:
                await self._controllers.pop(name).close()
            else:
                controller = self._controllers[name]
                self._configure(controller, scanner)
                profile = config.profiles[scanner.control]
                if profile != controller.profile and profile.family == controller.profile.family:
                    controller.use_profile(profile)  # a site profile edited in place

    def channel_for(self, scanner: ScannerConfig, spec: FramingSpec, emit: FrameSink) -> ControlChannel | None:
        """The control channel for a scanner's new source, or None when it has no profile.
        A scanner's controller outlives its sources: a replug keeps it armed (or not)."""
        if not scanner.control:
            return None
        name = scanner.name
        profile = self.config.profiles[scanner.control]
        controller = self._controllers.get(name)
        if controller is not None and controller.profile == profile and controller.lock_setup_codes == scanner.lock_setup_codes:
            controller.channel.rebind(spec, emit)
            self._configure(controller, scanner)
            return controller.channel
        if controller is not None:
            self._retire(controller)
        controller = DeviceController(
            name,
            profile,
            spec,
            emit,
            on_state=lambda state, reason: self._state(DeviceStateEvent(name, state, reason)),
            lock_setup_codes=scanner.lock_setup_codes,
        )
        self._configure(controller, scanner)
        self._controllers[name] = controller
        return controller.channel

    def _configure(self, controller: DeviceController, scanner: ScannerConfig) -> None:
        controller.reads_when_idle = scanner.role != "kiosk"
        controller.default_voice = self.config.voice_for(scanner.role)
        controller.amount_limit_fen = self.config.max_amount_fen
        controller.recover_interval_s = self.config.recover_interval_s

    def _retire(self, controller: DeviceController) -> None:
        task = asyncio.get_running_loop().create_task(controller.close())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

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
        """Shutdown: stop every controller's timers and tasks (their sources are closed)."""
        controllers = list(self._controllers.values())
        self._controllers.clear()
        for controller in controllers:
            await controller.close()
        for task in list(self._retiring):
            await task
