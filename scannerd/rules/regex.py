"""Rule regexes compiled by RE2: matching in time linear in the text, compiling in bounded space.

A site [[rule]] regex is text a hospital's technician writes and a patient's QR code is text a
stranger chooses: with a backtracking engine (`re`) a rule like `(a+)+b` and the code
`"a"*32 + "!"` freeze the one event loop. RE2 has no backtracking, so no pattern and no input
can do that; it refuses what it cannot run in linear time (lookaround, backreferences).

Bounds, so that compiling a rule (at start, on SIGHUP, in `check-config`) is quick too:
- the pattern is at most MAX_PATTERN_CHARS characters;
- a counted repetition `{n}` / `{n,m}` is at most MAX_REPEAT (RE2's own limit — checked here
  as well, because RE2 reads a count too long to parse, `a{1000000000}`, as literal text);
- the compiled program and its DFA cache live in MAX_MEM bytes (RE2's `max_mem`): a pattern
  that needs more is refused ("pattern too large").

Syntax is RE2's (https://github.com/google/re2/wiki/Syntax): like Python's for what rules
need; `\\d`, `\\w` and `\\s` are ASCII, as with `re.ASCII`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import re2  # google-re2 ships no type information (ignored in pyproject mypy overrides)

__all__ = ["MAX_MEM", "MAX_PATTERN_CHARS", "MAX_REPEAT", "LinearPattern", "RegexRefused", "compile_linear"]

MAX_PATTERN_CHARS = 1024
MAX_REPEAT = 1000
MAX_MEM = 8 << 20  # RE2's default budget, said explicitly: it is the bound we promise


class RegexRefused(ValueError):
    """A pattern RE2 will not run, or one over the bounds; the message says which and why."""


@dataclass(frozen=True, slots=True)
class LinearPattern:
    """A compiled rule regex: `fullmatch(text)` tells whether the whole text matches."""

    pattern: str
    ignore_case: bool = False
    _compiled: Any = field(default=None, compare=False, repr=False)

    def fullmatch(self, text: str) -> bool:
        # Bytes, so RE2 skips the str offset bookkeeping (only yes/no is needed); a lone
        # surrogate (undecodable input let through) becomes invalid UTF-8 that matches nothing.
        return self._compiled.fullmatch(text.encode("utf-8", "surrogatepass")) is not None


def _counted_repeats(pattern: str) -> list[int]:
    """The numbers inside `{n}`, `{n,}` and `{n,m}` outside character classes and escapes."""
    counts: list[int] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
        elif ch == "[":
            in_class = True
            # A ']' right after '[' or '[^' is a literal member, not the end of the class.
            if pattern[i + 1 : i + 2] == "^":
                i += 1
            if pattern[i + 1 : i + 2] == "]":
                i += 1
        elif ch == "{":
            j = pattern.find("}", i)
            body = pattern[i + 1 : j] if j > i else ""
            parts = body.split(",")
            if j > i and 1 <= len(parts) <= 2 and parts[0].isdigit() and all(p == "" or p.isdigit() for p in parts[1:]):
                counts.extend(int(p) for p in parts if p)
                i = j
        i += 1
    return counts


def compile_linear(pattern: str, ignore_case: bool = False) -> LinearPattern:
    """Compile under RE2 within the bounds above, or raise RegexRefused saying why."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise RegexRefused(f"pattern of {len(pattern)} characters is longer than the {MAX_PATTERN_CHARS} allowed")
    too_big = [c for c in _counted_repeats(pattern) if c > MAX_REPEAT]
    if too_big:
        raise RegexRefused(f"repetition count {too_big[0]} is larger than the {MAX_REPEAT} allowed")
    options = re2.Options()
    options.max_mem = MAX_MEM
    options.log_errors = False  # the refusal is reported once, as a config error, not on stderr
    options.case_sensitive = not ignore_case
    try:
        compiled = re2.compile(pattern, options)
    except re2.error as e:
        reason = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        hint = " (RE2 syntax: no lookaround, no backreferences)" if "perl operator" in reason or "escape" in reason else ""
        raise RegexRefused(f"{reason}{hint}") from None
    return LinearPattern(pattern=pattern, ignore_case=ignore_case, _compiled=compiled)
