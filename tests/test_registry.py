"""The source transport registry: config, discovery and the daemon ask it, not a hard-coded list."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

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
    def parse(table: Any) -> Mapping[str, Any]:
        return {"channel": table.number("channel", 1, 1, 16)}

    def make(req: registry.SourceRequest) -> Any:
        raise AssertionError("not started in this test")

    t = registry.Transport("fake", "a transport for this test", ("fakebus",), make, parse)
    registry.register(t)
    try:
        yield t
    finally:
        registry._TRANSPORTS.pop("fake")


def test_one_registration_adds_a_transport_with_its_own_keys(fake_transport: registry.Transport) -> None:
    cfg = parse_config({"scanner": [{"name": "a", "transport": "fake", "path": "/dev/fake0", "channel": 3}]})
    assert cfg.scanners[0].settings == {"channel": 3}
    assert "fakebus" in registry.udev_subsystems()
    with pytest.raises(ConfigError, match=r"scanner\[1\]\.channel: expected a number from 1 to 16, got 99"):
        parse_config({"scanner": [{"name": "a", "transport": "fake", "path": "/dev/fake0", "channel": 99}]})
    with pytest.raises(ValueError, match="already registered"):
        registry.register(fake_transport)


def test_keys_of_another_transport_are_unknown_keys() -> None:
    with pytest.raises(ConfigError, match=r"scanner\[1\]\.channel: unknown key"):
        parse_config({"scanner": [{"name": "a", "transport": "serial", "path": "/dev/ttyS0", "channel": 3}]})
