"""Classifier faults → a counter per rule and one log line per rule, the code masked.

The classifier stays pure: it calls a hook (`Classifier.classify(…, on_error=hook)`) when a rule
raises, and this is that hook. Every fault is counted (`scannerd_classify_errors_total{rule}`);
only the first of each rule is logged, so a rule that breaks on every scan cannot flood the
journal, and the log line carries the masked code, never the code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from .model import mask

__all__ = ["METRIC", "ClassifyFaults"]

METRIC = "scannerd_classify_errors_total"
HELP = "Rules that raised while classifying a code (the rule then counts as not matching), by rule"


class ClassifyFaults:
    """The `on_error` hook for Classifier.classify. `count(rule_id)` adds one to the metric."""

    def __init__(self, count: Callable[[str], None], logger: Any = None) -> None:
        self._count = count
        self._log = logger or structlog.get_logger("scannerd.classify")
        self.logged: set[str] = set()

    def __call__(self, rule_id: str, text: str, error: Exception) -> None:
        self._count(rule_id)
        if rule_id in self.logged:
            return
        self.logged.add(rule_id)
        # The exception's text may quote the code (a KeyError of it, a ValueError with it): only
        # its type is logged.
        self._log.error(
            "classify_rule_failed", rule=rule_id, error=type(error).__name__, masked=mask(text) if isinstance(text, str) else "?",
            hint="the rule counts as not matching; later failures of this rule are only counted",
        )
