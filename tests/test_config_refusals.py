"""check-config refuses what `run` would refuse or mishandle (issue 11 item 10).

Each refusal names the file, the key and what was expected; `run` and `check-config` exit 2
with that message instead of a traceback.
"""

from __future__ import annotations

import grp
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scannerd.config import AF_UNIX_PATH_MAX, ConfigError, load_config

from helpers import REPO


def _unknown_group() -> str:
    name = "scannerd-no-such-group"
    with pytest.raises(KeyError):
        grp.getgrnam(name)
    return name


LONG_PATH = "/run/" + "s" * (AF_UNIX_PATH_MAX - len("/run/") - len(".sock")) + ".sock"  # 108 bytes: no room for the NUL

REFUSED = [
    ('[metrics]\nlisten = "127.0.0.1:99999"\n', "metrics.listen",
     'expected host:port, e.g. "127.0.0.1:9464" or "[::1]:9464" with a port from 1 to 65535, got "127.0.0.1:99999"'),
    ('[metrics]\nlisten = "127.0.0.1:0"\n', "metrics.listen", "with a port from 1 to 65535, got \"127.0.0.1:0\""),
    ('[metrics]\nlisten = "[::1:9464"\n', "metrics.listen", "expected host:port"),
    (f'[socket]\npath = "{LONG_PATH}"\n', "socket.path",
     f"expected a socket path of at most {AF_UNIX_PATH_MAX - 1} bytes (the AF_UNIX limit), got {AF_UNIX_PATH_MAX} bytes"),
    ('[socket]\npath = "/run/' + "医" * 40 + '.sock"\n', "socket.path", "bytes (the AF_UNIX limit), got 130 bytes"),
    (f'[socket]\ngroup = "{_unknown_group()}"\n', "socket.group", f'expected an existing group (getent group {_unknown_group()}), got "{_unknown_group()}"'),
    ('[socket]\nmode = "0777"\n', "socket.mode", 'expected a mode that gives others no access (e.g. "0660"), got "0777"'),
    ('[socket]\nmode = "0664"\n', "socket.mode", 'expected a mode that gives others no access (e.g. "0660"), got "0664"'),
    ('[socket]\nmode = "0661"\n', "socket.mode", "gives others no access"),
    ("a = " + "[" * 5000 + "]" * 5000 + "\n", "", "not valid TOML: expected arrays and inline tables nested a few levels deep"),
    ("a = " + "{b = " * 3000 + "1" + "}" * 3000 + "\n", "", "not valid TOML: expected arrays and inline tables nested"),
]


@pytest.mark.parametrize(("text", "key", "expected"), REFUSED)
def test_refused_with_file_key_and_expectation(tmp_path: Path, text: str, key: str, expected: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.file == str(path)
    assert e.value.key == key
    assert expected in e.value.message, e.value.message
    assert str(e.value).startswith(f"{path}: {key + ': ' if key else ''}")


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize("text", [REFUSED[0][0], REFUSED[9][0], REFUSED[5][0]])
def test_the_cli_exits_2_with_the_message_not_a_traceback(tmp_path: Path, command: str, text: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    out = subprocess.run([sys.executable, "-m", "scannerd", command, "-c", str(path)], check=False,
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 2, out.stderr
    assert str(path) in out.stderr and "expected" in out.stderr
    assert "Traceback" not in out.stderr


def test_accepted_neighbours(tmp_path: Path) -> None:
    """What the checks must not refuse: the limits themselves and the usual values."""
    own_group = grp.getgrgid(os.getgid()).gr_name
    fits = "/tmp/" + "s" * (AF_UNIX_PATH_MAX - 1 - len("/tmp/") - len(".sock")) + ".sock"
    assert len(fits) == AF_UNIX_PATH_MAX - 1
    path = tmp_path / "config.toml"
    path.write_text(f'[socket]\npath = "{fits}"\nmode = "0660"\ngroup = "{own_group}"\n[metrics]\nlisten = "[::1]:65535"\n')
    config = load_config(path)
    assert config.socket.path == fits and config.socket.group == own_group and config.metrics.listen == "[::1]:65535"
    path.write_text('[socket]\nmode = "0600"\n[metrics]\nlisten = "127.0.0.1:1"\n')
    assert load_config(path).socket.mode == 0o600


def test_inline_mqtt_password_in_a_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[mqtt]\nhost = "broker"\nusername = "kiosk"\npassword = "Sup3r-s3cret"\n')
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.key == "mqtt.password"
    assert f"expected password_file, or a config file others cannot read: {path} has mode 0o644" in e.value.message
    assert "Sup3r-s3cret" not in str(e.value)
    os.chmod(path, 0o640)
    config = load_config(path)
    assert config.mqtt is not None and config.mqtt.password == "Sup3r-s3cret"


def test_a_rule_charset_that_is_not_a_name_is_refused_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[[rule]]\nid = "site.x"\nchannel = "his"\nkind = "other"\ncharset = []\nlength = 8\nexamples = ["12345678"]\n')
    with pytest.raises(ConfigError, match=r"rule\[1\]\.charset: expected a charset name .*got list"):
        load_config(path)
