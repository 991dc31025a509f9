"""The source transport registry: config, discovery and the daemon ask it, not a hard-coded list."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scannerd.config import ConfigError, parse_config
from scannerd.sources import discovery, registry


def test_builtin_transports_and_their_subsystems() -> None:
    assert {"serial", "evdev"} <= set(registry.names())
    assert registry.get("serial").polls_own_path
    assert not registry.get("evdev").polls_own_path
    assert {"tty", "input"} <= set(registry.udev_subsystems())
    tty = registry.for_subsystem("tty")
    assert tty is not None and tty.name == "serial"
    assert registry.for_subsystem("sound") is None
    assert discovery._transport_for("input") == "evdev"


def test_unknown_transport_is_refused_with_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known: serial, evdev"):
        registry.get("carrier-pigeon")
    with pytest.raises(ConfigError) as e:
        parse_config({"scanner": [{"name": "a", "transport": "carrier-pigeon", "path": "/dev/x"}]}, "site.toml")
    assert str(e.value).startswith("site.toml: scanner[1].transport: expected one of serial | evdev")


@pytest.fixture
def fake_transport() -> Iterator[registry.Transport]:
    t = registry.Transport("fake", "a transport for this test", ("fakebus",), "scannerd.sources.serial:SerialSource",
                           settings=(registry.Setting("mode", "fast", ("fast", "slow")), registry.Setting("beep", False)))
    registry.register(t)
    try:
        yield t
    finally:
        registry._TRANSPORTS.pop("fake")


def test_one_registration_adds_a_transport_with_its_own_keys(fake_transport: registry.Transport) -> None:
    cfg = parse_config({"scanner": [{"name": "a", "transport": "fake", "path": "/dev/fake0", "mode": "slow"}]})
    assert cfg.scanners[0].settings == {"mode": "slow", "beep": False}
    assert "fakebus" in registry.udev_subsystems()
    with pytest.raises(ConfigError, match=r'scanner\[1\]\.mode: expected one of fast \| slow, got "warp"'):
        parse_config({"scanner": [{"name": "a", "transport": "fake", "path": "/dev/fake0", "mode": "warp"}]})
    with pytest.raises(ConfigError, match=r"scanner\[1\]\.beep: expected true or false, got 1"):
        parse_config({"scanner": [{"name": "a", "transport": "fake", "path": "/dev/fake0", "beep": 1}]})
    with pytest.raises(ValueError, match="already registered"):
        registry.register(fake_transport)
    from scannerd.sources.serial import SerialSource

    assert fake_transport.source_class() is SerialSource


def test_keys_of_another_transport_are_unknown_keys() -> None:
    with pytest.raises(ConfigError, match=r"scanner\[1\]\.channel: unknown key"):
        parse_config({"scanner": [{"name": "a", "transport": "serial", "path": "/dev/ttyS0", "channel": 3}]})


def test_registry_imports_neither_config_nor_a_source() -> None:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(registry))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported <= {"__future__", "importlib", "dataclasses", "typing"}, imported
