"""`scannerd install` lays out the service files, and config.toml.example matches the schema."""

from __future__ import annotations

import argparse
import dataclasses
import grp
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from scannerd.commands import install as inst

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config.toml.example"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or (
    "/usr/bin/systemd-analyze" if Path("/usr/bin/systemd-analyze").exists() else None
)

EXPECTED_TREE = {
    "etc/systemd/system/scannerd.service": 0o644,
    "etc/sysusers.d/scannerd.conf": 0o644,
    "etc/modules-load.d/scannerd.conf": 0o644,
    "etc/udev/rules.d/70-scannerd.rules": 0o644,
    "etc/scannerd/config.toml.example": 0o644,
    "etc/scannerd/config.toml": 0o640,
}


def files_under(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
        for p in root.rglob("*") if p.is_file()
    }


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "scannerd", "install", *args],
                          capture_output=True, text=True, env=env, timeout=60)


def call_run(prefix: Path, *, dry_run: bool = False, exec_path: str | None = None) -> int:
    return inst.run(argparse.Namespace(prefix=prefix, dry_run=dry_run, exec_path=exec_path))


def test_install_lays_out_the_tree(tmp_path: Path) -> None:
    r = run_cli("--prefix", str(tmp_path), "--exec", "/opt/scannerd/bin/scannerd")
    assert r.returncode == 0, r.stderr
    assert files_under(tmp_path) == EXPECTED_TREE
    assert (tmp_path / "etc/udev/rules.d/70-scannerd.rules").read_bytes() == \
        (REPO / "udev/70-scannerd.rules").read_bytes()
    assert (tmp_path / "etc/sysusers.d/scannerd.conf").read_bytes() == \
        (REPO / "systemd/scannerd.sysusers").read_bytes()
    assert (tmp_path / "etc/scannerd/config.toml").read_bytes() == EXAMPLE.read_bytes()
    unit = (tmp_path / "etc/systemd/system/scannerd.service").read_text()
    assert "\nExecStart=/opt/scannerd/bin/scannerd run -c /etc/scannerd/config.toml\n" in unit
    # only ExecStart differs from the shipped unit
    shipped = (REPO / "systemd/scannerd.service").read_text()
    assert unit.replace("/opt/scannerd/bin/scannerd", inst.DEFAULT_EXEC) == shipped
    # the printed commands, in an order that works: user before udev (GROUP=) before start
    out = r.stdout
    order = ["systemd-sysusers", "chgrp scannerd /etc/scannerd/config.toml", "systemctl restart systemd-modules-load.service",
             "udevadm control --reload", "udevadm trigger", "systemctl daemon-reload",
             "systemctl enable --now scannerd.service"]
    positions = [out.index(c) for c in order]
    assert positions == sorted(positions), out


def test_existing_config_is_never_overwritten(tmp_path: Path) -> None:
    cfg = tmp_path / "etc/scannerd/config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('[site]\narea = "emergency"\n')
    os.chmod(cfg, 0o600)
    # a stale unit from an older version is replaced
    unit = tmp_path / "etc/systemd/system/scannerd.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/old\n")
    for _ in range(2):
        assert call_run(tmp_path, exec_path="/usr/local/bin/scannerd") == 0
        assert cfg.read_text() == '[site]\narea = "emergency"\n'
        assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert unit.read_text() == (REPO / "systemd/scannerd.service").read_text()
    r = run_cli("--prefix", str(tmp_path), "--exec", "/usr/local/bin/scannerd")
    assert "keep" in r.stdout and "never overwritten" in r.stdout
    assert "unchanged" in r.stdout


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    r = run_cli("--prefix", str(tmp_path), "--dry-run", "--exec", "/usr/local/bin/scannerd")
    assert r.returncode == 0, r.stderr
    assert list(tmp_path.iterdir()) == []
    for dest in EXPECTED_TREE:
        assert f"would create    {tmp_path / dest}" in r.stdout
    assert "systemctl enable --now scannerd.service" in r.stdout


def test_default_exec_is_the_running_scannerd(tmp_path: Path) -> None:
    assert call_run(tmp_path) == 0
    unit = (tmp_path / "etc/systemd/system/scannerd.service").read_text()
    line = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    exe = line.removeprefix("ExecStart=").split()[0]
    assert exe == inst.default_exec()
    assert os.path.isabs(exe)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/opt/scannerd/bin/scannerd", "/opt/scannerd/bin/scannerd"),
        ("/opt/100%/bin/scannerd", "/opt/100%%/bin/scannerd"),
        ("/opt/my venv/bin/scannerd", '"/opt/my venv/bin/scannerd"'),
    ],
)
def test_exec_path_is_escaped_for_systemd(path: str, expected: str) -> None:
    assert inst.unit_exec_arg(path) == expected


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")
def test_installed_unit_verifies(tmp_path: Path) -> None:
    """The unit as install writes it, pointing at a real executable, passes systemd-analyze."""
    assert SYSTEMD_ANALYZE is not None
    exe = str(Path(sys.executable).parent / "scannerd")
    if not os.access(exe, os.X_OK):
        exe = sys.executable
    assert call_run(tmp_path, exec_path=exe) == 0
    r = subprocess.run([SYSTEMD_ANALYZE, "verify", str(tmp_path / "etc/systemd/system/scannerd.service")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_hidden_exec_path_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert call_run(tmp_path, exec_path="/home/it/venv/bin/scannerd") == 0
    assert "cannot see" in capsys.readouterr().err


def test_relative_exec_path_refused(tmp_path: Path) -> None:
    assert call_run(tmp_path, exec_path="venv/bin/scannerd") == 2
    assert list(tmp_path.iterdir()) == []


def test_missing_data_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(inst, "data_roots", lambda: [tmp_path / "nowhere"])
    assert call_run(tmp_path / "root", exec_path="/usr/local/bin/scannerd") == 1
    assert "systemd/scannerd.service not found" in capsys.readouterr().err
    assert not (tmp_path / "root").exists()


def test_data_found_under_share_like_a_wheel_install(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """A non-editable install finds the files in <prefix>/share/scannerd (data-files)."""
    share = tmp_path / "venv/share/scannerd"
    for asset in inst.ASSETS:
        (share / asset.source).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / asset.source, share / asset.source)
    monkeypatch.setattr(inst, "data_roots", lambda: [tmp_path / "site-packages", share])
    assert inst.find_data("udev/70-scannerd.rules") == share / "udev/70-scannerd.rules"
    assert call_run(tmp_path / "root", exec_path="/usr/local/bin/scannerd") == 0
    assert files_under(tmp_path / "root") == EXPECTED_TREE


def test_data_roots_cover_checkout_and_prefix() -> None:
    roots = inst.data_roots()
    assert REPO in roots
    assert Path(sys.prefix) / "share" / "scannerd" in roots


# --- config.toml.example ---------------------------------------------------------------------

_OPTION_LINE = re.compile(r"^#(\[\[?[a-z_]+\]\]?\s*$|[a-z_]+ = )")


def uncommented(text: str) -> str:
    """The example with every option line switched on ('#key = …' / '#[table]' → active)."""
    return "\n".join(line[1:] if _OPTION_LINE.match(line) else line for line in text.splitlines())


def test_example_is_all_comments() -> None:
    assert tomllib.loads(EXAMPLE.read_text()) == {}
    assert "EXAMPLE" in EXAMPLE.read_text().splitlines()[0]


def test_example_tables_in_technician_order() -> None:
    data = tomllib.loads(uncommented(EXAMPLE.read_text()))
    order = ["site", "scanner", "discovery", "control", "policy", "rule", "classify", "socket", "mqtt", "metrics",
             "websocket", "acceptance"]
    assert list(data) == order


def test_example_documents_every_option() -> None:
    config = pytest.importorskip("scannerd.config")
    classify = pytest.importorskip("scannerd.classify")
    data = tomllib.loads(uncommented(EXAMPLE.read_text()))
    tables = {
        "site": config.SiteConfig, "socket": config.SocketConfig, "policy": config.PolicyConfig,
        "mqtt": config.MqttConfig, "metrics": config.MetricsConfig,
        "discovery": config.DiscoveryConfig, "control": config.ControlConfig,
    }
    for name, cls in tables.items():
        # [control].profiles are the [[control.profile]] tables, shown as a commented example.
        missing = {f.name for f in dataclasses.fields(cls)} - set(data[name]) - {"profiles"}
        assert not missing, f"[{name}] lacks {sorted(missing)}"
    scanner_keys = set().union(*(s.keys() for s in data["scanner"]))
    # `settings` holds the keys of one transport (registry), documented with that transport.
    missing = {f.name for f in dataclasses.fields(config.ScannerConfig)} - scanner_keys - {"settings"}
    assert not missing, f"[[scanner]] lacks {sorted(missing)}"
    assert not set(classify.OPTION_DEFAULTS) - set(data["classify"])
    assert not set(classify._RULE_KEYS) - set().union(*(r.keys() for r in data["rule"]))


def test_example_with_everything_switched_on_is_a_valid_config(tmp_path: Path) -> None:
    config = pytest.importorskip("scannerd.config")
    text = uncommented(EXAMPLE.read_text())
    # The files the example names must exist (and the password file be private) to validate.
    for name in ("mqtt.password", "ca.pem"):
        f = tmp_path / name
        f.write_text("x\n")
        os.chmod(f, 0o640)
        text = text.replace(f"/etc/scannerd/{name}", str(f))
    # The socket group must exist to validate: stand in one this machine has.
    assert 'group = "scannerd-clients"' in text
    own_group = grp.getgrgid(os.getgid()).gr_name
    text = text.replace('group = "scannerd-clients"', f'group = "{own_group}"')
    cfg_file = tmp_path / "config.toml"
    cfg_file.write_text(text)
    cfg = config.load_config(cfg_file)
    assert [s.transport for s in cfg.scanners] == ["serial", "evdev"]
    assert cfg.site.hospital == "H37020201175"
    assert cfg.mqtt is not None and cfg.mqtt.host == "mqtt.hospital.local"
    assert cfg.metrics.listen == "127.0.0.1:9464"
    assert cfg.socket.group == own_group
    assert [r["id"] for r in cfg.rules] == ["site.patient_card", "site.staff_badge"]
    assert cfg.acceptance.ledger == "/var/lib/scannerd/ledger.sqlite" and cfg.acceptance.result_ids_max == 20000
    # [acceptance] documents every option (`kind` tables are shown in prose: they are per site).
    documented = set(tomllib.loads(text)["acceptance"]) | {"kinds"}
    assert {f.name for f in dataclasses.fields(config.AcceptanceConfig)} <= documented


def test_example_rules_classify_their_examples() -> None:
    classify = pytest.importorskip("scannerd.classify")
    data = tomllib.loads(uncommented(EXAMPLE.read_text()))
    c = classify.Classifier.build(tuple(data["rule"]), data["classify"])
    assert c.classify("990012345676").rule == "site.patient_card"
    assert c.classify("990012345675").rule != "site.patient_card"  # Luhn check digit wrong
    badge = c.classify("STAFF:123456")
    assert (badge.rule, badge.reject_reason) == ("site.staff_badge", "staff_badge")


def test_write_atomic_never_clobbers_when_told(tmp_path: Path) -> None:
    """The config is created with link(): one that appeared after planning is still kept."""
    dest = tmp_path / "etc/scannerd/config.toml"
    dest.parent.mkdir(parents=True)
    dest.write_text("admin's\n")
    assert inst.write_atomic(dest, b"example\n", 0o644, overwrite=False) is False
    assert dest.read_text() == "admin's\n"
    assert inst.write_atomic(dest, b"unit\n", 0o644, overwrite=True) is True
    assert dest.read_text() == "unit\n"
    new = tmp_path / "etc/scannerd/other.toml"
    assert inst.write_atomic(new, b"x\n", 0o600, overwrite=False) is True
    assert stat.S_IMODE(new.stat().st_mode) == 0o600
    assert sorted(p.name for p in dest.parent.iterdir()) == ["config.toml", "other.toml"]  # no temp left


def test_config_is_0640_and_given_the_daemons_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config.toml soon holds an MQTT password or the hospital's number ranges: 0640, group
    scannerd (the daemon's), not world-readable (issue 11 item 16)."""
    other = next((g for g in grp.getgrall() if g.gr_gid != os.getgid()), None)
    if os.geteuid() != 0 or other is None:
        pytest.skip("giving a file another group needs root and a second group")
    monkeypatch.setattr(inst, "CONFIG_GROUP", other.gr_name)
    monkeypatch.setattr(inst, "ASSETS", tuple(dataclasses.replace(a, group=other.gr_name) if a.group else a for a in inst.ASSETS))
    assert call_run(tmp_path, exec_path="/usr/local/bin/scannerd") == 0
    st = (tmp_path / "etc/scannerd/config.toml").stat()
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_gid == other.gr_gid
    assert not st.st_mode & stat.S_IROTH


def test_config_group_missing_yet_is_said_and_fixed_by_the_printed_chgrp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inst, "ASSETS", tuple(dataclasses.replace(a, group="scannerd-not-yet") if a.group else a for a in inst.ASSETS))
    out: list[str] = []
    assert inst.install(tmp_path, "/usr/local/bin/scannerd", False, out) == 0
    text = "\n".join(out)
    assert "group scannerd-not-yet does not exist yet: the chgrp below gives it the file" in text
    assert stat.S_IMODE((tmp_path / "etc/scannerd/config.toml").stat().st_mode) == 0o640
    assert "chgrp scannerd /etc/scannerd/config.toml" in text
