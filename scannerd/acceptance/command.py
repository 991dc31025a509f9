"""The `result` command as an entry for the command table (scannerd/command_table.py).

The table checks the argument types; `parse_result_command` (through the ledger) checks the
rest and the recent-id registry decides. A refused result becomes the table's `ok: false` with
an error that starts with the reason word: `unknown: …`, `expired: …`, `repeated: …`, `invalid: …`.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..command_table import EVERYWHERE, Arg, Command, CommandContext, CommandError
from ..config import RESULT_STATUSES
from ..model import Channel
from .results import MAX_AMOUNT_FEN


class ResultServices(Protocol):
    """What the handler needs of the daemon: its ledger's `result_command`."""

    def result(self, args: dict[str, Any]) -> dict[str, Any]: ...


async def _result(s: Any, ctx: CommandContext, a: dict[str, Any]) -> dict[str, Any]:
    services: ResultServices = s
    answer = services.result({"cmd": "result", **a})
    if not answer.get("ok"):
        raise CommandError(f"{answer.get('reason', 'refused')}: {answer.get('error', '')}")
    return {}


RESULT_COMMAND = Command(
    "result",
    "a HIS transaction outcome for a scan (the acceptance ledger counts it; ids only, no codes)",
    _result,
    {
        "id": Arg("str", required=True, max_len=64, doc="the scan event's id"),
        "status": Arg("choice", required=True, choices=RESULT_STATUSES),
        "channel": Arg("choice", required=True, choices=tuple(c.value for c in Channel), doc="who settled it, e.g. unionpay"),
        "medical_insurance": Arg("bool", doc="settled through medical insurance (一码付)"),
        "amount_fen": Arg("int", lo=0, hi=MAX_AMOUNT_FEN),
    },
    read_only=False,
    transports=EVERYWHERE,
)
