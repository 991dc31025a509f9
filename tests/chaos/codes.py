"""Codes of every kind a cashier scanner sees, made up from a seeded RNG (never a person's data)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    text: str
    kind: str  # what the default rules classify it as
    sensitive: bool  # a bearer token or personal data: must never appear in full in a log or file

    @property
    def multibyte(self) -> bool:
        return any(ord(c) > 127 for c in self.text)


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def wechat(rng: random.Random) -> Code:
    # Month 13 at positions 11–12 keeps it from being a valid ID number (which is not WeChat).
    code = f"1{rng.randint(0, 4)}" + _digits(rng, 8) + "13" + _digits(rng, 6)
    return Code(code, "payment", True)


def alipay(rng: random.Random) -> Code:
    return Code(str(rng.randint(25, 30)) + _digits(rng, rng.randint(14, 22)), "payment", True)


def unionpay(rng: random.Random) -> Code:
    return Code("62" + _digits(rng, 17), "payment", True)


def nhsa(rng: random.Random) -> Code:
    return Code("424" + _digits(rng, 19) + rng.choice(["11", "31", "33", "37", "44"]) + "0000", "medical_insurance", True)


def health_card(rng: random.Random) -> Code:
    return Code("".join(rng.choice("0123456789ABCDEF") for _ in range(64)) + ":1", "health_card", False)


def ean13(rng: random.Random) -> Code:
    body = "69" + _digits(rng, 10)
    check = (10 - sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body)) % 10) % 10
    return Code(body + str(check), "other", False)


def prescription(rng: random.Random) -> Code:
    # A slip with Chinese text: the multibyte characters are what a read boundary may split.
    return Code(rng.choice(["处方", "挂号", "住院", "检验"]) + ":RX" + _digits(rng, 10), "other", False)


KINDS: dict[str, Callable[[random.Random], Code]] = {
    "wechat": wechat,
    "alipay": alipay,
    "unionpay": unionpay,
    "nhsa": nhsa,
    "health_card": health_card,
    "ean13": ean13,
    "prescription": prescription,
}


def garbage(rng: random.Random) -> tuple[bytes, str]:
    """A burst a broken scanner or a noisy line sends, and the reject reason family it must get."""
    choice = rng.randrange(3)
    if choice == 0:  # not UTF-8 at all
        return bytes([0xFF, 0xFE]) + bytes(rng.randrange(0x80, 0x100) for _ in range(rng.randint(2, 30))), "undecodable"
    if choice == 1:  # control characters
        return bytes(rng.choice([1, 2, 7, 8, 27]) for _ in range(rng.randint(3, 20))), "non_printable"
    return b"A" * rng.randint(600, 2000), "too_long"  # past max_length (512)
