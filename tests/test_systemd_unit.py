"""systemd/scannerd.service and the sysusers file, checked by systemd's own tools.

`systemd-analyze verify` insists that ExecStart='s binary exists.  On a development machine
/usr/local/bin/scannerd usually does not, so the verify test checks a copy whose ExecStart= points
at an executable that exists (the scannerd console script of this environment if installed, else
the Python interpreter), and separately asserts that the shipped file's *only* complaint is that
missing binary.  `scannerd install` writes the same substitution with the real path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "scannerd.service"
SYSUSERS = REPO / "systemd" / "scannerd.sysusers"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or (
    "/usr/bin/systemd-analyze" if Path("/usr/bin/systemd-analyze").exists() else None
)
needs_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed (Debian package: systemd)"
)
MAX_EXPOSURE = 2.5


def directives(text: str) -> dict[str, list[str]]:
    """'Section.Key' → list of values, in order (systemd allows repeated keys)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {raw!r}"
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def one(d: dict[str, list[str]], key: str) -> str:
    values = d.get(key)
    assert values, f"{key} missing"
    return values[-1]


def test_unit_has_the_required_settings() -> None:
    d = directives(UNIT.read_text())
    expected = {
        "Service.Type": "notify",
        "Service.NotifyAccess": "main",
        "Service.ExecReload": "/bin/kill -HUP $MAINPID",
        "Service.Restart": "on-failure",
        "Service.User": "scannerd",
        "Service.Group": "scannerd",
        "Service.RuntimeDirectory": "scannerd",
        "Service.StateDirectory": "scannerd",
        "Service.ConfigurationDirectory": "scannerd",
        "Service.UMask": "0007",
        "Service.ProtectSystem": "strict",
        "Service.ProtectHome": "yes",
        "Service.NoNewPrivileges": "yes",
        "Service.PrivateTmp": "yes",
        "Service.CapabilityBoundingSet": "",
        "Service.MemoryDenyWriteExecute": "yes",
        "Service.LockPersonality": "yes",
        "Service.RestrictRealtime": "yes",
        "Service.DevicePolicy": "closed",
        "Install.WantedBy": "multi-user.target",
    }
    for key, value in expected.items():
        assert one(d, key) == value, key
    assert one(d, "Service.ExecStart").split() == [
        "/usr/local/bin/scannerd", "run", "-c", "/etc/scannerd/config.toml"
    ]
    assert set(one(d, "Service.RestrictAddressFamilies").split()) == {
        "AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6"
    }
    assert "@system-service" in d["Service.SystemCallFilter"]
    allowed = {v.split()[0]: v.split()[1] for v in d["Service.DeviceAllow"]}
    for group in ("char-input", "char-usb_device", "char-hidraw",
                  "char-ttyACM", "char-ttyUSB", "char-ttyS"):
        assert allowed.get(group) == "rw", group
    # The watchdog must be long enough for the daemon's half-interval pings and a slow start.
    assert re.fullmatch(r"\d+s", one(d, "Service.WatchdogSec"))
    assert int(one(d, "Service.WatchdogSec")[:-1]) >= 10
    assert re.fullmatch(r"\d+s", one(d, "Service.RestartSec"))
    # PrivateUsers= would make libudev ignore udev's netlink events (sender uid unmapped).
    assert "Service.PrivateUsers" not in d
    assert "Service.PrivateDevices" not in d  # would hide the scanners; DevicePolicy instead


def _unit_copy(tmp_path: Path, exec_path: str) -> Path:
    text = UNIT.read_text().replace("/usr/local/bin/scannerd", exec_path)
    out = tmp_path / "scannerd.service"
    out.write_text(text)
    return out


def _existing_executable() -> str:
    script = Path(sys.executable).parent / "scannerd"
    return str(script) if script.exists() else sys.executable


@needs_analyze
def test_systemd_analyze_verify_clean(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    unit = _unit_copy(tmp_path, _existing_executable())
    r = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr  # no warnings either


@needs_analyze
def test_shipped_unit_only_lacks_its_binary(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    if Path("/usr/local/bin/scannerd").exists():
        pytest.skip("/usr/local/bin/scannerd exists here: covered by the verify test")
    unit = tmp_path / "scannerd.service"
    shutil.copy(UNIT, unit)
    r = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)],
                       capture_output=True, text=True, timeout=60)
    complaints = [line for line in r.stderr.splitlines() if line.strip()]
    assert complaints and all("/usr/local/bin/scannerd" in c for c in complaints), r.stderr


@needs_analyze
def test_security_exposure_at_most_2_5() -> None:
    assert SYSTEMD_ANALYZE is not None
    r = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True, text=True, timeout=60,
    )
    m = re.search(r"Overall exposure level for scannerd\.service:\s*([0-9.]+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    score = float(m.group(1))
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}:\n{r.stdout}"


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None,
                    reason="systemd-sysusers not installed (Debian package: systemd)")
def test_sysusers_creates_user_and_group(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    r = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in
              (tmp_path / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in
              (tmp_path / "etc/group").read_text().splitlines()}
    user = passwd["scannerd"]
    assert int(user[2]) < 1000, "must be a system user"
    assert user[3] == groups["scannerd"][2], "primary group is scannerd"
    assert user[6] == "/usr/sbin/nologin"
    # the HIS socket's group, with the service in it (so it may chgrp its socket, no capability)
    assert groups["scannerd-clients"][3].split(",") == ["scannerd"]


def test_default_socket_is_in_runtime_directory_under_systemd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = pytest.importorskip("scannerd.config")
    # What systemd gives the service: a system user, RuntimeDirectory=scannerd → $RUNTIME_DIRECTORY
    monkeypatch.setattr(os, "geteuid", lambda: 998)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/scannerd")
    assert config.default_socket_path() == "/run/scannerd/scannerd.sock"
