"""Validate a command's parameters against the device and fill them into verb parts.

Only two values ever come from a client: an amount in fen (an integer) and a prompt (text).
Both are checked here before a byte is written; nothing else a client sends reaches a device.
"""

from __future__ import annotations

import re
from typing import Any

from .encode import newland_box_text
from .profile import Profile


class ControlError(Exception):
    """Base of the control package's errors."""


class ControlParamError(ControlError, ValueError):
    """A parameter a device cannot take: `amount_fen: expected …, got …`."""

    def __init__(self, param: str, message: str) -> None:
        self.param, self.message = param, message
        super().__init__(f"{param}: {message}")


def yuan(amount_fen: int) -> str:
    return f"{amount_fen // 100}.{amount_fen % 100:02d}"


def max_amount_fen(profile: Profile) -> int:
    """The largest amount the display shows: 7 characters → 9999.99."""
    digits = profile.amount_max_chars - 3  # "." and two decimals
    return 10**digits * 100 - 1 if digits > 0 else 0


def check_amount(amount_fen: Any, profile: Profile, limit_fen: int = 0) -> int:
    if isinstance(amount_fen, bool) or not isinstance(amount_fen, int):
        raise ControlParamError("amount_fen", f"expected an integer number of fen (1250 for ¥12.50), got {amount_fen!r}")
    top = max_amount_fen(profile)
    if limit_fen:
        top = min(top, limit_fen)
    if not 0 <= amount_fen <= top:
        raise ControlParamError("amount_fen", f"expected 0 to {top} ({yuan(top)} yuan, what {profile.name} can show), got {amount_fen}")
    return amount_fen


# A prompt is spoken text: no control characters, and no '<' '>' (the box's frame brackets).
_BAD_PROMPT = re.compile(r"[<>\x00-\x1f\x7f-\x9f\u2028\u2029]")


def check_voice(voice: Any, profile: Profile) -> str:
    if not isinstance(voice, str):
        raise ControlParamError("voice", f"expected text, got {voice!r}")
    if not voice.strip():
        raise ControlParamError("voice", "expected a prompt to speak, got empty text")
    bad = _BAD_PROMPT.search(voice)
    if bad is not None or not voice.isprintable():
        raise ControlParamError("voice", f"expected printable text without '<' or '>', got a {repr(bad.group()) if bad else 'non-printable character'}")
    try:
        raw = voice.encode(profile.charset)
    except UnicodeEncodeError as e:
        raise ControlParamError("voice", f"expected text that {profile.name} can speak ({profile.charset}), got {voice[e.start:e.end]!r}") from None
    if len(raw) > profile.text_limit_bytes:
        raise ControlParamError("voice", f"expected at most {profile.text_limit_bytes} bytes in {profile.charset}, got {len(raw)}")
    return voice


def expand(part: str, profile: Profile, *, amount_fen: int | None = None, voice: str | None = None) -> bytes:
    """A verb part with its placeholder filled: `AMOUNT={amount}` → `AMOUNT=12.50`."""
    raw = part.encode("ascii")
    if b"{amount}" in raw:
        assert amount_fen is not None
        raw = raw.replace(b"{amount}", yuan(amount_fen).encode("ascii"))
    if b"{voice}" in raw:
        assert voice is not None
        raw = raw.replace(b"{voice}", newland_box_text(voice, profile.charset))
    return raw
