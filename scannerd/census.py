"""Code-shape census: counts the *shape* of codes no rule knows, never the codes themselves.

A technician writes a site rule from evidence ("40 QR codes a day, 28 upper-case alphanumerics
starting NH, all going to candidate"), not from a guess. A shape is: length, character
classes, symbology, the first two characters only when the code is not all digits (a digit
prefix of a payment-shaped number narrows a secret; letters like "NH" name a format), and the
outcome (channel, kind, rule). The rule tells a candidate *rule* (the 医保码 generation rule,
nhsa.ec28.v1) from the generic fallback (nhsa.candidate): the evidence a site needs to confirm
it. Memory is bounded: past `max_shapes` distinct shapes, new ones are only counted as overflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .model import Classification

__all__ = ["Census", "shape_classes"]

# Fixed order so one shape always prints one way.
_CLASS_ORDER = ("digit", "upper", "lower", "punct", "space", "cjk", "other", "control")
_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def _char_class(ch: str) -> str:
    if "0" <= ch <= "9":
        return "digit"
    if "A" <= ch <= "Z":
        return "upper"
    if "a" <= ch <= "z":
        return "lower"
    if ch in _PUNCT:
        return "punct"
    if ch == " ":
        return "space"
    if "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf":
        return "cjk"
    if not ch.isprintable():
        return "control"
    return "other"


def shape_classes(text: str) -> str:
    """The character classes present, e.g. "digit+upper"; "" for the empty string."""
    present = {_char_class(ch) for ch in text}
    return "+".join(c for c in _CLASS_ORDER if c in present)


def _is_counted(c: Classification) -> bool:
    return c.channel == "unknown" or c.confidence == "candidate"


class Census:
    """Per-process counts of unknown/candidate shapes. One event loop: no locking needed."""

    def __init__(self, max_shapes: int = 1000) -> None:
        self.max_shapes = max_shapes
        self._counts: dict[tuple[int, str, str | None, str | None, str, str, str], int] = {}
        self.overflow = 0

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> Census:
        """From the raw [classify] table (already validated by Classifier.build)."""
        return cls(max_shapes=int((options or {}).get("census_max_shapes", 1000)))

    def observe(self, text: str, symbology: str | None, c: Classification) -> None:
        if not _is_counted(c):
            return
        classes = shape_classes(text)
        head = text[:2] if classes != "digit" and text else None
        key = (len(text), classes, symbology, head, c.channel, c.kind, c.rule)
        if key in self._counts:
            self._counts[key] += 1
        elif len(self._counts) < self.max_shapes:
            self._counts[key] = 1
        else:
            self.overflow += 1

    def snapshot(self) -> list[dict[str, Any]]:
        """Shapes by count, most frequent first (ties: shorter, then by fields, for stable output)."""
        rows = sorted(self._counts.items(), key=lambda kv: (-kv[1], kv[0][0], repr(kv[0][1:])))
        out: list[dict[str, Any]] = [
            {
                "length": length,
                "classes": classes,
                "symbology": symbology,
                "head": head,
                "count": count,
                "channel": channel,
                "kind": kind,
                "rule": rule,
            }
            for (length, classes, symbology, head, channel, kind, rule), count in rows
        ]
        return out

    def clear(self) -> None:
        self._counts.clear()
        self.overflow = 0

    def __len__(self) -> int:
        return len(self._counts)
