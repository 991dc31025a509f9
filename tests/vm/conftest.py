"""The VM rig's session fixture: build the guest, boot it ONCE, serve it, hand out its results.

Where the rig cannot run (no qemu-system-x86_64, no busybox-static, not x86_64 Linux, no kernel
package) every rig test is skipped with one line saying why — unless SCANNERD_REQUIRE_VM=1
(set by CI), which turns that skip into a failure.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import vmbuild  # noqa: E402 - found through the sys.path line above
import vmqemu  # noqa: E402
from vmcheck import missing_prerequisite, rig_unavailable  # noqa: E402

REPO = HERE.parent.parent
VM_TIMEOUT_S = float(os.environ.get("SCANNERD_VM_TIMEOUT", "170"))

_summary: dict[str, Any] = {}


GUEST_SH = """#!/bin/sh
# Written by tests/vm/conftest.py; run by the guest's /init inside the chroot.
exec /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root LANG=C.UTF-8 \\
    PYTHONPATH={repo} {python} -u {repo}/tests/vm/guest/scenarios.py /run/vmrig
"""


@pytest.fixture(scope="session")
def vm(tmp_path_factory: pytest.TempPathFactory) -> vmqemu.RunResult:
    why = missing_prerequisite()
    if why:
        rig_unavailable(why)
    t0 = time.monotonic()
    try:
        guest = vmbuild.build()
    except vmbuild.BuildError as e:
        rig_unavailable(str(e))
    build_s = time.monotonic() - t0
    workdir = Path(os.environ.get("SCANNERD_VM_WORKDIR") or tmp_path_factory.mktemp("vm"))
    workdir.mkdir(parents=True, exist_ok=True)
    # The guest runs this very interpreter (a venv's bin/python keeps its venv) on this repo.
    python = sys.executable
    script = GUEST_SH.format(repo=shlex.quote(str(REPO)), python=shlex.quote(python))
    machine = vmqemu.Vm(
        guest, workdir, script, timeout=VM_TIMEOUT_S,
        usb=[
            vmqemu.UsbDevice("usb-kbd", "kbd0", port=1),
            vmqemu.UsbDevice("usb-serial", "ser0", port=2, props={"chardev": "ser0"}),
        ],
        serial_chardevs=("ser0",),
    )
    plan = {"repo": str(REPO), "python": python, "only": os.environ.get("SCANNERD_VM_ONLY", "").split(",") if os.environ.get("SCANNERD_VM_ONLY") else []}
    result = machine.run(plan)
    _summary.update(build_s=build_s, boot_to_test_s=result.boot_to_test_s, guest_uptime_s=result.guest_uptime_at_hello_s,
                    vm_s=result.total_s, workdir=str(workdir), kernel=guest.version,
                    accel="kvm" if vmqemu.kvm_usable() else "tcg")
    (workdir / "host-log.txt").write_text("\n".join(result.host_log) + "\n")
    (workdir / "summary.json").write_text(json.dumps(_summary, indent=1))
    return result


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _summary:
        return
    s = _summary
    b2t = f"{s['boot_to_test_s']:.1f}s" if s.get("boot_to_test_s") is not None else "n/a"
    terminalreporter.write_line(
        f"VM rig: kernel {s['kernel']} ({s['accel']}), build {s['build_s']:.1f}s, boot-to-test {b2t} "
        f"(guest uptime {s.get('guest_uptime_s')}s), whole VM run {s['vm_s']:.1f}s; artefacts in {s['workdir']}")


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "vm: real-kernel test in the QEMU guest (tests/vm)")
