"""Can the VM rig run here? One place for the prerequisite check and the skip-or-fail rule."""

from __future__ import annotations

import os
import platform
import shutil

import pytest
import vmbuild
import vmqemu


def require_vm() -> bool:
    """SCANNERD_REQUIRE_VM=1 (CI): the rig must run; not being able to is a failure."""
    return os.environ.get("SCANNERD_REQUIRE_VM") == "1"


def rig_unavailable(reason: str, module_level: bool = False) -> None:
    if require_vm():
        pytest.fail(f"VM rig required (SCANNERD_REQUIRE_VM=1) but cannot run: {reason}", pytrace=False)
    pytest.skip(f"VM rig skipped: {reason}", allow_module_level=module_level)


def missing_prerequisite() -> str | None:
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return f"needs x86_64 Linux, this is {platform.system()} {platform.machine()}"
    if shutil.which(vmqemu.QEMU) is None:
        return f"{vmqemu.QEMU} not found (apt install qemu-system-x86)"
    if not vmbuild.is_static_elf(vmbuild.BUSYBOX):
        return f"{vmbuild.BUSYBOX} missing or not static (apt install busybox-static)"
    return None
