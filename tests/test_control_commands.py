"""The `display` command in the command table: its arguments are validated before a handler runs."""

from __future__ import annotations

from scannerd.command_table import CommandContext, CommandTable
from scannerd.delivery.hub import Hub
from scannerd.delivery.outcomes import Outcomes

from delivery_parts import KIOSK, Services


async def test_display_arguments_are_validated_and_reach_the_daemon() -> None:
    services = Services(Hub(Outcomes()))
    table = CommandTable(services)  # type: ignore[arg-type]
    ctx = CommandContext("mqtt")
    ok = await table.dispatch(ctx, {"cmd": "display", "device": KIOSK.name, "amount_fen": 1250, "voice": "请扫码", "req": "r1"})
    assert ok["ok"] and ok["req"] == "r1" and services.displayed == [(KIOSK.name, 1250, "请扫码")]
    for bad, message in [
        ({"amount_fen": "12.50"}, '"amount_fen" must be an integer'),
        ({"amount_fen": 12.5}, '"amount_fen" must be an integer'),
        ({"voice": "x" * 101}, '"voice" must be a string of at most 100 characters'),
        ({}, 'display needs "amount_fen" and/or "voice"'),
        ({"bytes": "16 4D 0D"}, "unknown argument 'bytes' for display"),
    ]:
        answer = await table.dispatch(ctx, {"cmd": "display", "device": KIOSK.name, **bad})
        assert not answer["ok"] and message in answer["error"], (bad, answer)
    unknown = await table.dispatch(ctx, {"cmd": "display", "device": "nope", "voice": "x"})
    assert not unknown["ok"] and "unknown device 'nope'" in unknown["error"]
    assert len(services.displayed) == 1
    assert "display" in table.allowed("mqtt") and "display" in table.allowed("socket")
