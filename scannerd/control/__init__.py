"""Scanner control: whitelisted verbs (enable, disable, amount, voice, good, bad, lock setup
codes) from profiles kept as data, sent to serial scanners and scan boxes, replies taken out of
their byte stream before the framer. See README, "Kiosk control"."""

from .controller import ControlResult, DeviceController
from .device_controllers import DeviceControllers
from .params import ControlError, ControlParamError
from .profile import Profile, builtin_profiles

__all__ = ["ControlError", "ControlParamError", "ControlResult", "DeviceController", "DeviceControllers", "Profile", "builtin_profiles"]
