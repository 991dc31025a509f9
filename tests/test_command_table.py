"""The command table: every command's arguments validated in one place, every transport's allow-list."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scannerd.command_table import COMMANDS, MQTT, SOCKET, WEBSOCKET, CommandContext, CommandTable
from scannerd.protocol import ProtocolError, decode_command

from delivery_parts import Rig


@pytest.fixture
async def table(tmp_path: Path) -> CommandTable:
    return Rig(tmp_path / "s.sock").table


async def run(table: CommandTable, obj: dict[str, Any], transport: str = SOCKET) -> dict[str, Any]:
    return await table.dispatch(CommandContext(transport), obj)


def test_every_command_names_its_transports_and_has_a_summary() -> None:
    names = [c.name for c in COMMANDS]
    assert len(names) == len(set(names))
    for c in COMMANDS:
        assert c.summary and c.transports <= {SOCKET, WEBSOCKET, MQTT}, c.name
    # `result` appears when the acceptance ledger implements it, not before.
    assert "result" not in names


async def test_allow_lists_per_transport(table: CommandTable) -> None:
    assert table.allowed(SOCKET) == ["ack", "arm", "devices", "disarm", "display", "inject", "metrics", "shapes", "status", "subscribe"]
    assert table.allowed(WEBSOCKET) == ["ack", "arm", "devices", "disarm", "display", "metrics", "shapes", "status", "subscribe"]
    assert table.allowed(MQTT) == ["arm", "devices", "disarm", "display", "status"]
    refused = await run(table, {"cmd": "inject", "device": "window-1", "code": "1"}, MQTT)
    assert refused["ok"] is False and "not allowed over mqtt" in refused["error"] and "allowed here: arm" in refused["error"]
    refused = await run(table, {"cmd": "inject", "device": "window-1", "code": "1"}, WEBSOCKET)
    assert refused["ok"] is False and "not allowed over websocket" in refused["error"]
    # subscribe needs a connection; over MQTT it does not exist at all.
    assert "not allowed" in (await run(table, {"cmd": "subscribe", "role": "his"}, MQTT))["error"]


async def test_unknown_command_and_unknown_argument(table: CommandTable) -> None:
    answer = await run(table, {"cmd": "format-disk"})
    assert answer["ok"] is False and answer["cmd"] == "format-disk" and "unknown cmd" in answer["error"]
    answer = await run(table, {"cmd": "status", "verbose": True})
    assert answer["ok"] is False and "unknown argument 'verbose' for status" in answer["error"]


async def test_req_is_echoed_and_checked(table: CommandTable) -> None:
    assert (await run(table, {"cmd": "status", "req": "r-1"}))["req"] == "r-1"
    bad = await run(table, {"cmd": "status", "req": "x" * 65})
    assert bad["ok"] is False and '"req" must be a string of at most 64' in bad["error"]


HOSTILE = [1, -1, 0.5, True, False, None, "", "x" * 70000, [], ["a"] * 300, {}, 10**30, 1e308, [1, 2]]


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.args], ids=lambda c: c.name)
async def test_every_argument_refuses_wrong_types_and_bounds_with_a_clear_reason(table: CommandTable, command: Any) -> None:
    base = {k: _valid(a) for k, a in command.args.items() if a.required}
    for key, arg in command.args.items():
        for value in HOSTILE:
            obj = {"cmd": command.name, **base, key: value}
            try:
                arg.check(key, value)
            except ValueError:
                pass
            else:
                continue  # a valid value for this argument
            if value is None and not arg.required:
                continue  # null means absent
            answer = await run(table, obj, next(iter(command.transports)))
            assert answer["ok"] is False, (command.name, key, value)
            assert f'"{key}"' in answer["error"] and "internal error" not in answer["error"], answer


def _valid(arg: Any) -> Any:
    if arg.kind == "str":
        return "window-1"
    if arg.kind == "choice":
        return arg.choices[0]
    if arg.kind in ("int", "number"):
        return max(arg.lo, 1)
    if arg.kind == "bool":
        return True
    return ["window-1"]


@pytest.mark.parametrize("line", [
    b'{"cmd":"arm","device":"window-1","ttl_s":NaN}',
    b'{"cmd":"arm","device":"window-1","ttl_s":Infinity}',
    b'{"cmd":"arm","device":"window-1","ttl_s":-Infinity}',
    b'{"cmd":"arm","device":"window-1","ttl_s":1e999}',
    b'{"cmd":"arm","device":"window-1","amount_fen":' + b"9" * 5000 + b"}",
    b"[" * 100000 + b"]" * 100000,
    b"\xff\xfe",
    b'"status"',
])
def test_the_decoder_refuses_what_is_not_a_sane_json_object(line: bytes) -> None:
    with pytest.raises(ProtocolError) as e:
        decode_command(line)
    assert len(str(e.value)) < 300


async def test_out_of_range_numbers_are_refused_by_name(table: CommandTable) -> None:
    answer = await run(table, {"cmd": "arm", "device": "window-1", "ttl_s": 0})
    assert answer["ok"] is False and '"ttl_s" must be a number from 0.1 to 3600, got 0' in answer["error"]
    answer = await run(table, {"cmd": "arm", "device": "window-1", "amount_fen": -5})
    assert answer["ok"] is False and '"amount_fen" must be an integer from 0 to 10000000000' in answer["error"]
    answer = await run(table, {"cmd": "arm", "device": "window-1", "amount_fen": 12.5})
    assert answer["ok"] is False and "amount_fen" in answer["error"]


async def test_inject_only_to_a_known_device(table: CommandTable) -> None:
    answer = await run(table, {"cmd": "inject", "device": "invented-1", "code": "134567890123456789"})
    assert answer["ok"] is False and "unknown device 'invented-1'; known: window-1, kiosk-2" in answer["error"]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=12), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=10),
    max_size=6), st.sampled_from([c.name for c in COMMANDS] + ["nope"]), st.sampled_from([SOCKET, WEBSOCKET, MQTT]))
def test_any_object_gets_a_reply_never_an_internal_error(tmp_path_factory: pytest.TempPathFactory, obj: dict[str, Any],
                                                       name: str, transport: str) -> None:
    import asyncio

    table = Rig(tmp_path_factory.mktemp("t") / "s.sock").table
    obj = {**obj, "cmd": name}
    line = json.dumps(obj).encode()
    try:
        decoded = decode_command(line)
    except ProtocolError as e:  # refused before any handler: the transport replies ok:false with it
        assert "out of range" in str(e) or "not a number this protocol accepts" in str(e)
        return
    answer = asyncio.run(table.dispatch(CommandContext(transport), decoded))
    assert answer["type"] == "reply" and isinstance(answer["ok"], bool)
    assert "internal error" not in answer.get("error", "")
