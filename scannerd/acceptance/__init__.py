"""Acceptance evidence: a ledger of counts per station, HIS results, the report, the fleet view.

Counts only: no code, masked code or fragment of one is ever kept or sent from here.
"""

from .counts import ResultKey, ScanKey, StationCounts, Tally
from .ledger import Ledger
from .results import (
    RecentScans,
    ResultError,
    ResultOutcome,
    ResultRequest,
    parse_result_command,
)
from .store import LedgerFileError, read_ledger_file

__all__ = [
    "Ledger",
    "LedgerFileError",
    "RecentScans",
    "ResultError",
    "ResultKey",
    "ResultOutcome",
    "ResultRequest",
    "ScanKey",
    "StationCounts",
    "Tally",
    "parse_result_command",
    "read_ledger_file",
]
