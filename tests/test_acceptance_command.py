"""`result` through the real command table onto a real ledger, as the socket and MQTT send it."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from acceptance_data import medical_scan

from scannerd.acceptance import Ledger
from scannerd.acceptance.command import RESULT_COMMAND
from scannerd.command_table import COMMANDS, CommandContext, CommandTable
from scannerd.config import AcceptanceConfig, SiteConfig


class _Daemon:
    """The one service the result command needs, over a real ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def result(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.ledger.result_command(args)


async def test_result_over_the_command_table(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    clock = [1_800_000_000.0]
    ledger = Ledger(str(path), station="s", site=SiteConfig(), acceptance=AcceptanceConfig(ledger=str(path), result_retention_h=1), clock=lambda: clock[0])
    table = CommandTable(_Daemon(ledger), (*COMMANDS, RESULT_COMMAND))  # type: ignore[arg-type]
    assert "result" in table.allowed("socket") and "result" in table.allowed("mqtt")
    scan = medical_scan(random.Random(3))
    ledger.on_scan(scan)
    cmd = {"cmd": "result", "req": "r1", "id": scan.id, "status": "paid", "channel": "unionpay", "medical_insurance": True, "amount_fen": 1234}
    for transport in ("socket", "mqtt"):
        ctx = CommandContext(transport)
        answer = await table.dispatch(ctx, cmd)
        if transport == "socket":
            assert answer == {"type": "reply", "cmd": "result", "ok": True, "req": "r1"}
        else:
            assert answer["ok"] is False and answer["error"].startswith("repeated: ")
    unknown = await table.dispatch(CommandContext("socket"), {**cmd, "id": "01JNOSUCHSCAN0000000000000"})
    assert unknown["ok"] is False and unknown["error"].startswith("unknown: ")
    old = medical_scan(random.Random(4))
    ledger.on_scan(old)
    clock[0] += 7200
    expired = await table.dispatch(CommandContext("mqtt"), {**cmd, "id": old.id})
    assert expired["ok"] is False and expired["error"].startswith("expired: ")
    bad = await table.dispatch(CommandContext("socket"), {**cmd, "status": "settled"})
    assert bad["ok"] is False and '"status" must be one of "paid" | "refunded" | "failed"' in bad["error"]
    extra = await table.dispatch(CommandContext("socket"), {**cmd, "code": "6212345678901234567"})
    assert extra["ok"] is False and "unknown argument 'code'" in extra["error"]
    assert ledger.status()["results"] == 1
