"""[websocket] in the config: every refusal names the key and what was expected; and the one
mechanism that opens an opt-in command to a transport."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scannerd.command_table import COMMANDS, CommandTable
from scannerd.config import ConfigError, WebSocketConfig, load_config, with_secrets

TOKEN = "0123456789abcdef0123"


def parse(tmp_path: Path, body: str) -> WebSocketConfig:
    path = tmp_path / "config.toml"
    path.write_text("[websocket]\n" + body)
    cfg = load_config(path).websocket
    assert cfg is not None
    return cfg


@pytest.mark.parametrize("body, expected", [
    (f'token = "{TOKEN}"\nlisten = "0.0.0.0:8765"\n', "websocket.listen: expected a loopback address"),
    (f'token = "{TOKEN}"\nlisten = "192.168.1.5:8765"\n', "websocket.listen: expected a loopback address"),
    (f'token = "{TOKEN}"\nlisten = "8765"\n', "websocket.listen: expected host:port"),
    (f'token = "{TOKEN}"\nlisten = "127.0.0.1:70000"\n', "websocket.listen: expected a port from 1 to 65535"),
    (f'token = "{TOKEN}"\nallowed_origins = ["*"]\n', "websocket.allowed_origins[1]: expected an origin"),
    (f'token = "{TOKEN}"\nallowed_origins = ["https://*.example.cn"]\n', "no wildcards"),
    (f'token = "{TOKEN}"\nallowed_origins = ["https://his.example.cn/"]\n', "no path"),
    (f'token = "{TOKEN}"\nallowed_origins = [3]\n', "websocket.allowed_origins[1]: expected an origin"),
    ('', "websocket.token: expected token or token_file"),
    ('token = "short"\n', "websocket.token: expected at least 16 printable characters"),
    (f'token = "{TOKEN}"\ntoken_file = "/x"\n', "websocket.token_file: expected either token or token_file"),
    ('token_file = "/nonexistent/token"\n', "websocket.token_file: expected an existing file"),
    (f'token = "{TOKEN}"\nallow_remote = "yes"\n', "websocket.allow_remote: expected true or false"),
    (f'token = "{TOKEN}"\norigins = []\n', "websocket.origins: unknown key"),
])
def test_bad_websocket_settings_are_named(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(tmp_path, body)
    assert expected in str(e.value)
    assert TOKEN not in str(e.value)


def test_a_token_file_must_not_be_readable_by_others(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    for mode in (0o644, 0o660, 0o604):
        os.chmod(token_file, mode)
        with pytest.raises(ConfigError, match=r"websocket.token_file: expected mode 0600 or 0640"):
            parse(tmp_path, f'token_file = "{token_file}"\n')
    for mode in (0o600, 0o640, 0o400):
        os.chmod(token_file, mode)
        path = tmp_path / "config.toml"
        path.write_text(f'[websocket]\ntoken_file = "{token_file}"\n')
        assert load_config(path).websocket.token == ""  # tools (status, listen) never read it  # type: ignore[union-attr]
        cfg = with_secrets(load_config(path)).websocket
        assert cfg is not None and cfg.token == TOKEN  # the newline is not part of it
        assert TOKEN not in repr(cfg)
    token_file.write_text("short\n")
    with pytest.raises(ConfigError, match="websocket.token_file: expected at least 16 printable characters"):
        with_secrets(load_config(path))
    os.chmod(token_file, 0o000)
    if os.geteuid() != 0:  # root reads any file
        with pytest.raises(ConfigError, match="websocket.token_file: cannot read"):
            with_secrets(load_config(path))


def test_remote_needs_allow_remote_and_defaults_are_loopback(tmp_path: Path) -> None:
    cfg = parse(tmp_path, f'token = "{TOKEN}"\n')
    assert cfg.listen == "127.0.0.1:8765" and cfg.allow_inject is False
    remote = parse(tmp_path, f'token = "{TOKEN}"\nlisten = "0.0.0.0:8765"\nallow_remote = true\n')
    assert remote.host == "0.0.0.0" and remote.port == 8765
    assert parse(tmp_path, f'token = "{TOKEN}"\nlisten = "[::1]:9000"\n').host == "::1"


def test_only_opt_in_commands_can_be_opened_to_a_transport() -> None:
    table = CommandTable(services=None, commands=COMMANDS)  # type: ignore[arg-type]
    assert "inject" not in table.allowed("websocket")
    table.grant("websocket", {"inject"})
    assert "inject" in table.allowed("websocket") and "inject" not in table.allowed("mqtt")
    table.grant("websocket", set())
    assert "inject" not in table.allowed("websocket")
    with pytest.raises(ValueError, match="cannot be opened to mqtt"):
        table.grant("mqtt", {"inject"})
    with pytest.raises(ValueError, match="cannot be opened"):
        table.grant("websocket", {"no-such-command"})


def test_metrics_listen_on_the_websocket_address_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[metrics]\nlisten = "127.0.0.1:8765"\n[websocket]\ntoken = "{TOKEN}"\n')
    with pytest.raises(ConfigError, match=r"metrics.listen: expected another address than \[websocket\] listen"):
        load_config(path)
    path.write_text(f'[metrics]\nlisten = "127.0.0.1:9464"\n[websocket]\ntoken = "{TOKEN}"\n')
    assert load_config(path).metrics.listen == "127.0.0.1:9464"
