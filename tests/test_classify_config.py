"""Who compiles the rules, and how strictly: the daemon cheaply, check-config strictly, the socket
tools not at all (a broken site rule must not lock a technician out of `status`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scannerd.client import resolve_socket_path
from scannerd.config import ConfigError, load_config

from helpers import REPO, Daemon

BROKEN_RULE = "[[rule]]\nid = 'site.bad'\nchannel = 'his'\nkind = 'other'\nregex = 'RX(?=1)'\n"
OVERLAPPING = (
    "[[rule]]\nid = 'his.a'\nchannel = 'his'\nkind = 'other'\nregex = 'RX\\d{10}'\n\n"
    "[[rule]]\nid = 'his.b'\nchannel = 'his'\nkind = 'other'\nregex = 'RX[0-9]+'\n"
)


def write(path: Path, socket_path: Path, rules: str = "") -> Path:
    path.write_text(f'[socket]\npath = "{socket_path}"\n[discovery]\nauto = false\n\n{rules}', encoding="utf-8")
    return path


def scannerd(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scannerd", *argv], check=False, capture_output=True, text=True, cwd=REPO, timeout=60)


def test_reading_a_config_without_its_rules_leaves_a_broken_rule_for_later(tmp_path: Path) -> None:
    cfg = write(tmp_path / "config.toml", tmp_path / "s.sock", BROKEN_RULE)
    with pytest.raises(ConfigError, match=r"rule\[1\]\.regex"):
        load_config(cfg)
    config = load_config(cfg, compile_rules=False)
    assert config.socket.path == str(tmp_path / "s.sock")
    (tmp_path / "s.sock").touch()  # present, so no fallback to a system daemon's socket
    assert resolve_socket_path(None, str(cfg)) == str(tmp_path / "s.sock")
    with pytest.raises(ConfigError) as e:
        config.classifier()
    assert str(e.value).startswith(f"{cfg}: rule[1].regex: bad regex ")


def test_the_rest_of_the_config_is_still_checked_without_the_rules(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[socket]\nmode = 'rw'\n" + BROKEN_RULE, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"socket\.mode"):
        load_config(cfg, compile_rules=False)


def test_overlapping_rules_run_in_the_daemon_but_check_config_refuses_them(tmp_path: Path) -> None:
    cfg = write(tmp_path / "config.toml", tmp_path / "s.sock", OVERLAPPING)
    assert load_config(cfg).classifier().classify("RX0123456789").rule == "his.a"
    done = scannerd("check-config", "-c", str(cfg))
    assert done.returncode == 2
    assert '"his.a"' in done.stderr and '"his.b"' in done.stderr and "overlap at priority 100" in done.stderr


def test_status_with_a_broken_rule_in_the_config_still_reaches_the_running_daemon(tmp_path: Path) -> None:
    sock = tmp_path / "scannerd.sock"
    daemon = Daemon(write(tmp_path / "running.toml", sock), sock)
    try:
        daemon.wait_ready()
        # The technician's copy of the config now holds a rule that does not compile.
        broken = write(tmp_path / "config.toml", sock, BROKEN_RULE)
        done = scannerd("status", "-c", str(broken))
        assert done.returncode == 0, done.stderr
        assert "rule[1]" not in done.stderr
        assert scannerd("check-config", "-c", str(broken)).returncode == 2  # and check-config says why
    finally:
        daemon.stop()


def test_check_config_says_the_rules_passed_the_overlap_search(tmp_path: Path) -> None:
    cfg = write(tmp_path / "config.toml", tmp_path / "s.sock", "[[rule]]\nid = 'his.rx'\nchannel = 'his'\nkind = 'other'\nregex = 'RX\\d{10}'\n")
    done = scannerd("check-config", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "site rules: 1;" in done.stdout and "no two at one priority overlap" in done.stdout
