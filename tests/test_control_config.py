"""The [control] section and the control keys of [[scanner]]: profiles by name (built-in and
site), prompts that must fit the device in GBK, amounts, and check-config's messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scannerd.config import ConfigError, parse_config

from helpers import REPO

KIOSK = {"name": "kiosk-1", "path": "/dev/ttyACM0", "role": "kiosk", "control": "newland-box"}


def test_control_profile_on_a_scanner_and_role_prompts() -> None:
    config = parse_config({
        "control": {"kiosk_voice": "请出示医保码或付款码", "window_voice": "请扫码", "max_amount_fen": 500_000},
        "scanner": [KIOSK, {"name": "w1", "path": "/dev/ttyACM1", "control": "newland-ucs", "lock_setup_codes": True}],
    })
    k, w = config.scanners
    assert k.control == "newland-box" and not k.lock_setup_codes
    assert w.control == "newland-ucs" and w.lock_setup_codes
    assert config.control.voice_for("kiosk") == "请出示医保码或付款码" and config.control.voice_for("window") == "请扫码"
    assert config.control.profiles["newland-box"].family == "newland-box"
    assert config.control.max_amount_fen == 500_000


def test_no_control_section_still_knows_the_builtin_profiles() -> None:
    config = parse_config({"scanner": [KIOSK]})
    assert set(config.control.profiles) >= {"newland-box", "newland-ucs", "newland-legacy", "honeywell", "zebra-ssi"}
    assert config.control.voice_for("kiosk") == ""


def test_site_profile_in_config_is_usable_by_a_scanner() -> None:
    config = parse_config({
        "control": {"profile": [{"name": "box-quiet", "base": "newland-box", "verbs": {"good": [], "bad": []}}]},
        "scanner": [{**KIOSK, "control": "box-quiet"}],
    })
    quiet = config.control.profiles["box-quiet"]
    assert not quiet.has("good") and quiet.has("amount")


BAD = [
    ({"scanner": [{**KIOSK, "control": "newland"}]}, 'scanner[1].control: expected a control profile, one of honeywell | newland-box | newland-legacy | newland-ucs | zebra-ssi, got "newland"'),
    ({"scanner": [{**KIOSK, "control": 3}]}, "scanner[1].control: expected a string, got 3"),
    ({"scanner": [{"name": "k", "transport": "evdev", "usb": "0c2e:0b61", "control": "honeywell"}]}, "scanner[1].control: expected control only on a serial scanner"),
    ({"scanner": [{"name": "w", "path": "/dev/x", "lock_setup_codes": True}]}, "scanner[1].lock_setup_codes: expected a control profile on this scanner"),
    ({"scanner": [{**KIOSK, "control": "zebra-ssi", "lock_setup_codes": True}]}, "scanner[1].lock_setup_codes: expected a profile that can lock setup codes; zebra-ssi has no lock_setup_codes verb"),
    ({"control": {"kiosk_voice": "请" * 51}, "scanner": [KIOSK]}, "control.kiosk_voice: expected at most 100 bytes in gbk, got 102 (for kiosk-1, profile newland-box)"),
    ({"control": {"kiosk_voice": "请扫码😀"}, "scanner": [KIOSK]}, "control.kiosk_voice: expected text that newland-box can speak (gbk)"),
    ({"control": {"kiosk_voice": "请<扫码>"}, "scanner": [KIOSK]}, "control.kiosk_voice: expected printable text without '<' or '>'"),
    ({"control": {"max_amount_fen": 1_000_000}, "scanner": [KIOSK]}, "control.max_amount_fen: expected at most 999999 (what newland-box on kiosk-1 can show), got 1000000"),
    ({"control": {"max_amount_fen": -5}}, "control.max_amount_fen: expected a number from 0 to 99999999, got -5"),
    ({"control": {"voice": "x"}}, "control.voice: unknown key"),
    ({"control": {"profile": {"name": "x"}}}, "control.profile: expected [[control.profile]] tables"),
    ({"control": {"profile": [{"name": "x", "family": "honeywell", "source": "s", "verbs": {"enable": ["REVINF"]}}]}}, "control.profile[1].verbs.enable[1]: expected a menu command"),
]


@pytest.mark.parametrize(("data", "message"), BAD)
def test_bad_control_config_names_file_key_and_expectation(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(data, "site.toml")
    assert str(e.value).startswith("site.toml: ") and message in str(e.value), str(e.value)


def test_a_window_prompt_is_not_checked_against_a_kiosk_only_profile() -> None:
    # The window prompt only matters for window scanners; an engine without voice ignores it.
    parse_config({"control": {"window_voice": "请" * 60}, "scanner": [KIOSK, {"name": "w", "path": "/dev/y", "control": "honeywell"}]})


def test_check_config_shows_the_profile_and_refuses_a_long_prompt(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[control]\nkiosk_voice = "请出示医保码或付款码"\n\n[[scanner]]\nname = "kiosk-1"\npath = "/dev/ttyACM0"\n'
                    'role = "kiosk"\ncontrol = "newland-ucs"\nlock_setup_codes = true\n', encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "scannerd", "check-config", "-c", str(good)], check=False, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "control=newland-ucs (setup codes locked)" in out.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[control]\nkiosk_voice = "{"请" * 51}"\n\n[[scanner]]\nname = "kiosk-1"\npath = "/dev/ttyACM0"\nrole = "kiosk"\ncontrol = "newland-box"\n', encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "scannerd", "check-config", "-c", str(bad)], check=False, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 2
    assert f"{bad}: control.kiosk_voice: expected at most 100 bytes in gbk" in out.stderr
