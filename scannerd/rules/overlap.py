"""The overlap search: two enabled rules at one priority that both match some string.

Then the winner would depend on the order rules were written in, so `check-config` and the test
suite refuse such a pair, naming both and a string both match. It generates strings from each
rule (its examples, its prefixes and lengths, and its regex read with CPython's private
`re._parser`) and tries each on the other. That is slow (hundreds of ms for tens of site rules)
and leans on a private module, so the daemon never runs it: `Classifier.build` only calls it
with `search_overlaps=True`.
"""

from __future__ import annotations

import functools
import random
import re

# The stdlib regex parser (3.11+), to generate strings from a rule's regex.
import re._constants as _sre_c  # type: ignore[import-not-found]
import re._parser as _sre_p  # type: ignore[import-not-found]
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

# classify imports this module only inside Classifier.build, so this is no import cycle.
from ..classify import Check, Rule, RuleError
from ..model import mask
from .regex import LinearPattern

__all__ = ["check_overlaps", "clear_cache"]

# Characters used to fill generated strings, per charset (overlap search).
_FILL: dict[str, str] = {
    "digits": string.digits,
    "printable": string.digits + string.ascii_letters + ":/.-_",
    "hex": "0123456789ABCDEFabcdef",
    "hex_upper": "0123456789ABCDEF",
    "alnum": string.digits + string.ascii_letters,
    "alnum_upper": string.digits + string.ascii_uppercase,
    "base64": string.ascii_letters + string.digits + "+/",
}


class _Unsupported(Exception):
    pass


_GEN_MAX_PARTS = 4096
_GEN_PRINTABLE = string.digits + string.ascii_letters + string.punctuation + " "


def _in_chars(items: list[tuple[Any, Any]], rng: random.Random) -> str:
    chars: list[str] = []
    negate = False
    for op, av in items:
        if op is _sre_c.NEGATE:
            negate = True
        elif op is _sre_c.LITERAL:
            chars.append(chr(av))
        elif op is _sre_c.RANGE:
            lo, hi = av
            if hi - lo <= 128:
                chars.extend(chr(c) for c in range(lo, hi + 1))
            else:
                chars.extend(chr(rng.randint(lo, hi)) for _ in range(16))
        elif op is _sre_c.CATEGORY:
            chars.extend(_category_chars(av))
        else:
            raise _Unsupported
    if negate:
        banned = set(chars)
        return "".join(c for c in _GEN_PRINTABLE if c not in banned)
    return "".join(chars)


def _category_chars(cat: Any) -> str:
    c = _sre_c
    table = {
        c.CATEGORY_DIGIT: string.digits,
        c.CATEGORY_NOT_DIGIT: string.ascii_letters + "-_:",
        c.CATEGORY_WORD: string.ascii_letters + string.digits + "_",
        c.CATEGORY_NOT_WORD: " -.:/",
        c.CATEGORY_SPACE: " ",
        c.CATEGORY_NOT_SPACE: string.ascii_letters + string.digits,
    }
    if cat not in table:
        raise _Unsupported
    return table[cat]


def _gen(items: Iterable[tuple[Any, Any]], rng: random.Random, mode: int, groups: dict[int, str]) -> str:
    c = _sre_c
    out: list[str] = []
    for op, av in items:
        if op is c.LITERAL:
            out.append(chr(av))
        elif op is c.NOT_LITERAL:
            out.append(rng.choice([ch for ch in _GEN_PRINTABLE if ord(ch) != av]))
        elif op is c.ANY:
            out.append(rng.choice(string.ascii_letters + string.digits))
        elif op is c.IN:
            chars = _in_chars(av, rng)
            if not chars:
                raise _Unsupported
            out.append(rng.choice(chars))
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
            lo, hi, sub = av
            top = min(hi, lo + 40)
            n = lo if mode == 0 else top if mode == 1 else rng.randint(lo, min(top, lo + 12))
            for _ in range(n):
                out.append(_gen(sub, rng, mode, groups))
                if len(out) > _GEN_MAX_PARTS:
                    raise _Unsupported  # nested repeats: longer than any code a scanner sends
        elif op is c.SUBPATTERN:
            group, _add, _del, sub = av
            s = _gen(sub, rng, mode, groups)
            if group:
                groups[group] = s
            out.append(s)
        elif op is getattr(c, "ATOMIC_GROUP", None):
            out.append(_gen(av, rng, mode, groups))
        elif op is c.BRANCH:
            _, alts = av
            out.append(_gen(rng.choice(alts), rng, mode, groups))
        elif op is c.GROUPREF:
            out.append(groups.get(av, ""))
        elif op in (c.AT, c.ASSERT, c.ASSERT_NOT):
            continue  # anchors and lookarounds: the fullmatch filter decides
        else:
            raise _Unsupported
    return "".join(out)


def _regex_samples(pattern: LinearPattern, n: int, seed: int) -> list[str]:
    # The stdlib parser reads RE2's syntax for everything rules use; what it cannot read yields
    # no samples (the search is best effort, and RE2 has already accepted the pattern).
    flags = re.ASCII | (re.IGNORECASE if pattern.ignore_case else 0)
    try:
        parsed = _sre_p.parse(pattern.pattern, flags)
    except Exception:
        return []
    rng = random.Random(seed)
    out: list[str] = []
    for i in range(n):
        try:
            out.append(_gen(parsed, rng, i, {}))
        except (_Unsupported, RecursionError, ValueError, IndexError, OverflowError):
            break
    return out


@functools.lru_cache(maxsize=1024)
def _rule_samples(rule: Rule, seed: int = 0) -> tuple[str, ...]:
    """Strings this rule should match: its examples plus strings generated from its matchers."""
    rng = random.Random(f"{rule.id}:{seed}")
    fill = _FILL.get(rule.charset or "", string.digits)
    raw: list[str] = list(rule.examples)
    if rule.lengths is not None:
        ls = sorted(rule.lengths)
        lengths = ls if len(ls) <= 12 else [ls[0], ls[-1], *rng.sample(ls, 8)]
    else:
        lengths = []
    prefixes = list(rule.prefixes[:24]) or [""]
    for p in prefixes:
        for n in lengths or [len(p) + k for k in (0, 1, 8, 24, 40)]:
            if n < len(p):
                continue
            for _ in range(3):
                raw.append(p + "".join(rng.choice(fill) for _ in range(n - len(p))))
    if rule.regex is not None:
        for s in _regex_samples(rule.regex, 24, rng.randint(0, 1 << 30)):
            raw.append(s)
            # A regex may not spell out the prefix the rule also requires: graft it on.
            start = s.lower() if rule.ignore_case else s
            raw.extend(p + s[len(p):] for p in rule.prefixes[:8] if not start.startswith(p))
    return tuple(raw)


# Rules are frozen and hashable, and the search is deterministic (seeded by rule id), so a pair
# is searched once per process: the default rules' pairs, the bulk of the work, are not
# searched again for every config the tests (or a long check-config run) build.
@functools.lru_cache(maxsize=4096)
def _find_overlap(a: Rule, b: Rule, fixes: tuple[Callable[[str], str], ...]) -> str | None:
    for s in (*_rule_samples(a), *_rule_samples(b)):
        for t in (s, *(f(s) for f in fixes)):
            if a.matches(t) and b.matches(t):
                return t
    return None

def clear_cache() -> None:
    """Forget searched pairs (a benchmark measuring a first, cold search)."""
    _rule_samples.cache_clear()
    _find_overlap.cache_clear()


def check_overlaps(rules: Sequence[Rule], checks: Mapping[str, Check]) -> None:
    """Two rules at one priority that both match some string make the winner depend on order."""
    by_priority: dict[int, list[Rule]] = {}
    for r in rules:
        by_priority.setdefault(r.priority, []).append(r)
    for group in by_priority.values():
        group.sort(key=lambda r: r.order)
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                if not _may_overlap(a, b):
                    continue
                fixes = tuple(sorted((checks[c].fix for c in {a.check, b.check} if c), key=id))
                example = _find_overlap(a, b, fixes)
                if example is not None:
                    # Name the site rule when there is one: that is what the reader can change.
                    first = b if b.origin == "site" and a.origin == "default" else a
                    if example in a.examples or example in b.examples:
                        example = mask(example)  # a site's example may be a real code: never in full
                    raise RuleError(
                        first.where,
                        f'rules "{a.id}" ({a.where}) and "{b.id}" ({b.where}) overlap at priority {a.priority}: '
                        f'both match "{example}"; give one a higher priority or narrow it',
                    )


def _may_overlap(a: Rule, b: Rule) -> bool:
    """Cheap exclusions before generating strings: disjoint lengths or prefixes cannot overlap."""
    if a.lengths is not None and b.lengths is not None and not (a.lengths & b.lengths):
        return False
    if a.prefixes and b.prefixes:
        pa = a.prefixes if not b.ignore_case else tuple(p.lower() for p in a.prefixes)
        pb = b.prefixes if not a.ignore_case else tuple(p.lower() for p in b.prefixes)
        if not any(x.startswith(y) or y.startswith(x) for x in pa for y in pb):
            return False
    return True
