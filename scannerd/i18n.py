"""Technician-facing text in the reader's language: Chinese when the locale is zh_CN, else English.

    from .i18n import _
    print(_("scans today: {count}").format(count=n))

The English text is the message id. Catalogs are gettext `.po` files shipped in the package
(`scannerd/locale/<lang>/LC_MESSAGES/scannerd.po`) and read with the standard library on first
use: there is no compiled `.mo` to fall out of step with its source and no build step, and a
catalog of a few hundred lines parses in about a millisecond. Codes, field names, JSON output
and the protocol are never translated.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Mapping
from functools import cache
from pathlib import Path

__all__ = ["DOMAIN", "LOCALE_DIR", "_", "catalog", "display_width", "language", "ljust", "parse_po", "rjust"]

DOMAIN = "scannerd"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"

# Locales that read simplified Chinese. zh_TW / zh_HK read traditional: English is kinder to them
# than a script they do not use.
_SIMPLIFIED = ("zh_CN", "zh_SG", "zh_Hans", "zh")


def language(environ: Mapping[str, str] | None = None) -> str:
    """"zh_CN" or "en", from the variables gettext reads, in its order of precedence."""
    env = os.environ if environ is None else environ
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(var, "")
        if not value:
            continue
        # LANGUAGE may list several ("zh_CN:en"); the first one we have a catalog for wins.
        for item in value.split(":") if var == "LANGUAGE" else [value]:
            name = item.split(".")[0].split("@")[0].replace("-", "_")
            if name in _SIMPLIFIED:
                return "zh_CN"
            if name in ("C", "POSIX", "") or name.startswith("en"):
                return "en"
        if var != "LANGUAGE":
            return "en"  # the first set LC_* / LANG decides, as in gettext
    return "en"


class PoError(ValueError):
    """A catalog line that is not valid .po syntax (file and line number in the message)."""


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"'}
_ESCAPE = re.compile(r'\\(.)')


def _unquote(token: str, where: str) -> str:
    if len(token) < 2 or token[0] != '"' or token[-1] != '"':
        raise PoError(f"{where}: expected a quoted string, got {token!r}")
    body = token[1:-1]
    if re.search(r'(?<!\\)(\\\\)*"', body):
        raise PoError(f"{where}: unescaped quote in {token!r}")

    def unescape(m: re.Match[str]) -> str:
        if m.group(1) not in _ESCAPES:
            raise PoError(f"{where}: unsupported escape \\{m.group(1)} in {token!r}")
        return _ESCAPES[m.group(1)]

    return _ESCAPE.sub(unescape, body)


def parse_po(text: str, name: str = "<po>") -> dict[str, str]:
    """msgid → msgstr for every translated, non-fuzzy entry (the header entry is left out)."""
    entries: dict[str, str] = {}
    msgid: list[str] | None = None
    msgstr: list[str] | None = None
    current: list[str] | None = None
    fuzzy = False

    def finish() -> None:
        nonlocal msgid, msgstr, current, fuzzy
        if msgid is not None and msgstr is not None:
            key, value = "".join(msgid), "".join(msgstr)
            if key and value and not fuzzy:
                entries[key] = value
        msgid = msgstr = current = None
        fuzzy = False

    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = f"{name}:{number}"
        if not line:
            finish()
        elif line.startswith("#,"):
            if msgstr is not None:
                finish()
            fuzzy = "fuzzy" in line
        elif line.startswith("#"):
            continue
        elif line.startswith("msgid "):
            if msgstr is not None:
                finish()
            msgid = [_unquote(line[6:].strip(), where)]
            current = msgid
        elif line.startswith("msgstr "):
            if msgid is None:
                raise PoError(f"{where}: msgstr without msgid")
            msgstr = [_unquote(line[7:].strip(), where)]
            current = msgstr
        elif line.startswith('"'):
            if current is None:
                raise PoError(f"{where}: string continuation outside an entry")
            current.append(_unquote(line, where))
        else:
            raise PoError(f"{where}: unsupported .po line {line!r} (plural forms and contexts are not used here)")
    finish()
    return entries


@cache
def catalog(lang: str) -> dict[str, str]:
    """The translations for `lang` ({} for English, the message ids themselves)."""
    path = LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    if lang == "en" or not path.exists():
        return {}
    return parse_po(path.read_text(encoding="utf-8"), str(path))


def _(message: str) -> str:
    """`message` in the reader's language (the locale is read on every call: cheap, and a test
    or a long-running command sees a changed environment)."""
    lang = language()
    if lang == "en":
        return message
    return catalog(lang).get(message, message)


def display_width(text: str) -> int:
    """Columns `text` takes in a terminal: CJK characters are two wide, combining marks none."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def ljust(text: str, width: int) -> str:
    """`str.ljust` by terminal columns, so tables with Chinese headings line up."""
    return text + " " * max(0, width - display_width(text))


def rjust(text: str, width: int) -> str:
    return " " * max(0, width - display_width(text)) + text
