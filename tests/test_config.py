"""Config: embedded default, every kind of bad value named by file, key and expectation, exit 2."""

from __future__ import annotations

import grp
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scannerd.config import ConfigError, load_config, parse_config

from helpers import REPO


def test_no_file_is_the_embedded_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("scannerd.config.DEFAULT_CONFIG_PATH", Path("/nonexistent/config.toml"))
    config = load_config(None)
    assert config.scanners == () and config.mqtt is None
    assert config.policy.payment_ttl_s == 60 and config.policy.duplicate_window_ms == 1500
    assert config.socket.mode == 0o660
    assert config.socket.path.endswith("scannerd.sock")


def test_idle_gap_default_depends_on_transport() -> None:
    # Keyboard-wedge scanners pause up to ~80 ms between keys (some Zebra models): the safety
    # net must not cut their scans; a 9600-baud serial scanner sends a character every ~1 ms.
    config = parse_config({"scanner": [{"name": "s", "path": "/dev/ttyACM0"}, {"name": "k", "transport": "evdev", "usb": "0c2e:0b61"}]})
    assert [s.idle_gap_ms for s in config.scanners] == [50, 200]


def test_full_example_parses() -> None:
    his = grp.getgrgid(os.getgid()).gr_name  # the socket group must exist (a group "his" here)
    config = parse_config(
        {
            "site": {"hospital": "H37020201175", "hospital_name": "青岛市市立医院", "area": "inpatient"},
            "socket": {"path": "/run/x.sock", "mode": "0640", "group": his},
            "policy": {"payment_ttl_s": 45, "duplicate_window_ms": 800},
            "scanner": [
                {"name": "window-1", "path": "/dev/ttyACM0", "baudrate": 115200, "terminator": "CRLF", "prefix": "<", "area": "emergency"},
                {"name": "kiosk-1", "transport": "evdev", "usb": "0C2E:0B61", "role": "kiosk", "layout": "fr"},
            ],
        }
    )
    assert config.site.area == "inpatient" and config.socket.mode == 0o640
    w, k = config.scanners
    assert config.scanner_area(w) == "emergency" and config.scanner_area(k) == "inpatient"
    assert k.usb == "0c2e:0b61" and k.layout == "fr" and w.baudrate == 115200
    assert config.policy.payment_ttl_s == 45.0


BAD = [
    ('[[scanner]]\nname = "w1"\npath = "/dev/ttyACM0"\nbaudrate = "fast"\n', 'scanner[1].baudrate: expected one of 1200…921600, got "fast"'),
    ('[[scanner]]\nname = "w1"\npath = "/dev/ttyACM0"\nbaudrate = 9601\n', "scanner[1].baudrate: expected one of 1200…921600, got 9601"),
    ('[[scanner]]\nname = "w1"\n', "scanner[1].path: expected the serial device path"),
    ('[[scanner]]\nname = "w 1"\npath = "/dev/x"\n', "scanner[1].name: expected letters, digits"),
    ('[[scanner]]\nname = "w1"\npath = "/dev/x"\n[[scanner]]\nname = "w1"\npath = "/dev/y"\n', 'scanner[2].name: expected a unique name, "w1" is also scanner[1]'),
    ('[[scanner]]\nname = "w1"\npath = "/dev/x"\nterminator = "ENTER"\n', 'scanner[1].terminator: expected one of auto | CR | LF | CRLF | TAB | none, got "ENTER"'),
    ('[[scanner]]\nname = "w1"\npath = "/dev/x"\nrole = "cashier"\n', 'scanner[1].role: expected one of window | kiosk, got "cashier"'),
    ('[[scanner]]\nname = "k1"\ntransport = "evdev"\nusb = "honeywell"\n', 'scanner[1].usb: expected a USB id "vid:pid" in hex'),
    ('[[scanner]]\nname = "k1"\ntransport = "bluetooth"\n', 'scanner[1].transport: expected one of serial | evdev | hidpos, got "bluetooth"'),
    ('[[scanner]]\nname = "k1"\ntransport = "hidpos"\nusb = "05e0:1300"\nbackend = "usbfs"\n', 'scanner[1].backend: expected one of hidraw | pyusb, got "usbfs"'),
    ('[[scanner]]\nname = "k1"\ntransport = "hidpos"\nusb = "0c2e:0967"\nport_path = "usb1/4"\n', 'scanner[1].port_path: expected a USB port path as in /sys/bus/usb/devices, e.g. "1-1.4", got "usb1/4"'),
    ('[[scanner]]\nname = "k1"\ntransport = "hidpos"\nusb = "0c2e:0967"\nbeep_on_reject = "yes"\n', 'scanner[1].beep_on_reject: expected true or false, got "yes"'),
    ('[[scanner]]\nname = "k1"\ntransport = "serial"\npath = "/dev/ttyS0"\nbackend = "pyusb"\n', 'scanner[1].backend: unknown key'),
    ('[[scanner]]\nname = "w1"\npath = "/dev/x"\nencoding = "klingon"\n', 'scanner[1].encoding: expected a text encoding'),
    ('[[scanner]]\nname = "w1"\npath = "/dev/x"\nidle_gap_ms = 0\n', "scanner[1].idle_gap_ms: expected a number from 5 to 5000, got 0"),
    ('[[scanner]]\nname = "w1"\npath = "/dev/x"\ngrab = "yes"\n', 'scanner[1].grab: expected true or false, got "yes"'),
    ('[site]\nhospital = "37020201175"\n', 'site.hospital: expected H followed by 11 digits'),
    ('[site]\narea = "icu"\n', 'site.area: expected one of outpatient | emergency | inpatient | international, got "icu"'),
    ('[socket]\nmode = "rw"\n', 'socket.mode: expected an octal mode like "0660", got "rw"'),
    ("[policy]\npayment_ttl_s = 0\n", "policy.payment_ttl_s: expected a number from 1 to 600, got 0"),
    ("[policy]\npayment_ttl_s = true\n", "policy.payment_ttl_s: expected a number, got true"),
    ("[policy]\nduplicate_window = 10\n", "policy.duplicate_window: unknown key"),
    ("[mqtt]\nport = 1883\n", "mqtt.host: expected the broker host name or address"),
    ('[mqtt]\nhost = "b"\nca_file = "/nonexistent/ca.pem"\n', 'mqtt.ca_file: expected an existing file, got "/nonexistent/ca.pem" (not found)'),
    ('[metrics]\nlisten = "9464"\n', 'metrics.listen: expected host:port'),
    ('[mqtt]\nhost = "b"\ntopic_prefix = "scannerd/+/x"\n', 'mqtt.topic_prefix: expected a topic prefix without the wildcards + and #'),
    ("colour = 1\n", "colour: unknown key"),
    ("scanner = 1\n", "scanner: expected [[scanner]] tables"),
    ("[site\n", "not valid TOML"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_bad_values_name_file_key_and_expectation(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: ")
    assert message in str(e.value)


def test_world_readable_password_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt.pass"
    secret.write_text("s3cret")
    os.chmod(secret, 0o644)
    path = tmp_path / "config.toml"
    path.write_text(f'[mqtt]\nhost = "b"\nusername = "u"\npassword_file = "{secret}"\n')
    with pytest.raises(ConfigError, match=r"mqtt.password_file: expected a file others cannot read, got mode 0o644"):
        load_config(path)
    os.chmod(secret, 0o640)
    assert load_config(path).mqtt is not None


def test_missing_file_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "gbk.toml"
    bad.write_bytes('[site]\nhospital_name = "青岛"\n'.encode("gbk"))
    with pytest.raises(ConfigError, match="expected UTF-8"):
        load_config(bad)


@pytest.mark.parametrize("command", [["check-config"], ["run"]])
def test_cli_exit_code_2_with_the_message(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[[scanner]]\nname = "w1"\npath = "/dev/ttyACM0"\nbaudrate = "fast"\n')
    out = subprocess.run([sys.executable, "-m", "scannerd", *command, "-c", str(path)], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert out.returncode == 2
    assert f'{path}: scanner[1].baudrate: expected one of 1200…921600, got \\"fast\\"' in out.stderr or (
        f'{path}: scanner[1].baudrate: expected one of 1200…921600, got "fast"' in out.stderr
    )


def test_check_config_ok(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[[scanner]]\nname = "w1"\npath = "/dev/ttyACM0"\n')
    out = subprocess.run([sys.executable, "-m", "scannerd", "check-config", "-c", str(path)], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert out.returncode == 0 and "scanner w1: serial /dev/ttyACM0" in out.stdout
