"""structlog setup: JSON lines when stderr is not a TTY (journald, files), key=value on a TTY.

A last-line-of-defence processor masks any long digit run that reaches a log line, in case a
future call site forgets to pass a code through model.mask().
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# 12+ digits in a row is shaped like a payment code, an ID number or a card number.
_LONG_DIGITS = re.compile(r"\d{12,}")


def _mask_digits(match: re.Match[str]) -> str:
    s = match.group(0)
    return s[:4] + "*" * (len(s) - 8) + s[-4:]


def mask_long_digit_runs(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if isinstance(value, str) and _LONG_DIGITS.search(value):
            event_dict[key] = _LONG_DIGITS.sub(_mask_digits, value)
    return event_dict


def configure(level: str = "info", json: bool | None = None) -> None:
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = structlog.processors.JSONRenderer(ensure_ascii=False) if json else structlog.processors.LogfmtRenderer(
        key_order=["timestamp", "level", "event"], drop_missing=True
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=False),
            structlog.processors.format_exc_info,
            mask_long_digit_runs,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
