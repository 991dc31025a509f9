"""Control profiles: data (TOML, one package file per protocol family) naming a family, the
verbs the device has as whitelisted parts, its charset and limits, its reply timeout and the
spacing it needs between commands. Sites add profiles in config (`[[control.profile]]`).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from ..config import ConfigError
from .families import FAMILIES, Family

VERBS = ("enable", "disable", "amount", "amount_off", "voice", "good", "bad", "lock_setup_codes")
# Which placeholder a verb may carry: the amount in yuan, the prompt text.
_VERB_PLACEHOLDER = {"amount": "amount", "voice": "voice"}
_KEYS = {"name", "family", "base", "source", "description", "charset", "text_limit_bytes", "amount_max_chars",
         "timeout_ms", "min_spacing_ms", "verbs"}


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    family: str
    source: str
    charset: str = "ascii"
    text_limit_bytes: int = 0  # 0: the device plays no text
    amount_max_chars: int = 0  # 0: the device shows no amount
    timeout_ms: int = 1000
    min_spacing_ms: int = 50
    verbs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def codec(self) -> Family:
        return FAMILIES[self.family]

    def has(self, verb: str) -> bool:
        return bool(self.verbs.get(verb))


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def parse_profile(data: Any, file: str, key: str, base: Profile | None = None) -> Profile:
    """One profile table → Profile; errors name the file, the key and what was expected."""
    if not isinstance(data, dict):
        raise ConfigError(file, key, "expected a table")

    def err(name: str, message: str) -> ConfigError:
        return ConfigError(file, f"{key}.{name}" if key else name, message)

    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise err(unknown[0], f"unknown key (known keys here: {', '.join(sorted(_KEYS))})")

    def text(name: str, default: str) -> str:
        value = data.get(name, default)
        if not isinstance(value, str):
            raise err(name, f"expected a string, got {_show(value)}")
        return value

    def number(name: str, default: int, lo: int, hi: int) -> int:
        value = data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise err(name, f"expected an integer from {lo} to {hi}, got {_show(value)}")
        return value

    name = text("name", "")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", name):
        raise err("name", f"expected a profile name of lowercase letters, digits, '-', '_' or '.', got {_show(name)}")
    family = text("family", base.family if base else "")
    if family not in FAMILIES:
        raise err("family", f"expected one of {' | '.join(FAMILIES)}, got {_show(family)}")
    if base is not None and family != base.family:
        raise err("family", f'expected the family of base "{base.name}" ({base.family}), got {_show(family)}')
    source = text("source", base.source if base else "")
    if not source.strip():
        raise err("source", "expected where the commands come from (manual, SDK, driver)")
    charset = text("charset", base.charset if base else "ascii")
    try:
        "".encode(charset)
    except LookupError:
        raise err("charset", f'expected a text encoding such as "gbk" or "ascii", got {_show(charset)}') from None
    verbs = _verbs(data.get("verbs", {}), FAMILIES[family], err, dict(base.verbs) if base else {})
    profile = Profile(
        name=name,
        family=family,
        source=source,
        charset=charset,
        text_limit_bytes=number("text_limit_bytes", base.text_limit_bytes if base else 0, 0, 4096),
        amount_max_chars=number("amount_max_chars", base.amount_max_chars if base else 0, 0, 16),
        timeout_ms=number("timeout_ms", base.timeout_ms if base else 1000, 10, 30_000),
        min_spacing_ms=number("min_spacing_ms", base.min_spacing_ms if base else 50, 0, 10_000),
        verbs=verbs,
    )
    if profile.has("voice") and not profile.text_limit_bytes:
        raise err("text_limit_bytes", "expected the device's prompt limit in bytes (the profile has a voice verb)")
    if profile.has("amount") and profile.amount_max_chars < 4:
        raise err("amount_max_chars", "expected at least 4 (the profile has an amount verb; 0.00 is 4 characters)")
    return profile


def _verbs(raw: Any, family: Family, err: Any, inherited: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        raise err("verbs", "expected a table of verb = [parts]")
    verbs = dict(inherited)
    for verb, parts in raw.items():
        where = f"verbs.{verb}"
        if verb not in VERBS:
            raise err(where, f"expected a verb, one of {', '.join(VERBS)}")
        if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
            raise err(where, "expected a list of strings (an empty list: the device has no such verb)")
        for i, part in enumerate(parts):
            if not family.part.fullmatch(part):
                raise err(f"{where}[{i + 1}]", f"expected {family.part_help}, got {_show(part)}")
            for placeholder in re.findall(r"\{(\w+)\}", part):
                if placeholder != _VERB_PLACEHOLDER.get(verb) or placeholder not in family.placeholders:
                    raise err(f"{where}[{i + 1}]", f"expected {{{placeholder}}} only in the {placeholder} verb of a family that carries it, got {_show(part)}")
        verbs[verb] = tuple(parts)
    return verbs


def builtin_profiles() -> dict[str, Profile]:
    """The profiles shipped as package data, one TOML file per protocol family."""
    out: dict[str, Profile] = {}
    folder = resources.files(__package__).joinpath("profiles")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        file = f"scannerd/control/profiles/{entry.name}"
        try:
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(file, "", f"not valid TOML: {e}") from None
        profile = parse_profile(data, file, "")
        out[profile.name] = profile
    return out


def site_profiles(raw: Any, file: str, builtin: Mapping[str, Profile]) -> dict[str, Profile]:
    """`[[control.profile]]` tables: new profiles, optionally derived from a named `base`."""
    if not isinstance(raw, list):
        raise ConfigError(file, "control.profile", "expected [[control.profile]] tables (an array of tables)")
    known = dict(builtin)
    for i, table in enumerate(raw):
        key = f"control.profile[{i + 1}]"
        if not isinstance(table, dict):
            raise ConfigError(file, key, "expected a table")
        base = None
        if "base" in table:
            base = known.get(table["base"]) if isinstance(table["base"], str) else None
            if base is None:
                raise ConfigError(file, f"{key}.base", f"expected a known profile ({', '.join(sorted(known))}), got {_show(table['base'])}")
        profile = parse_profile(table, file, key, base)
        if profile.name in known:
            raise ConfigError(file, f"{key}.name", f'expected a new name, "{profile.name}" is already a profile (derive with base = "{profile.name}")')
        known[profile.name] = profile
    return known
