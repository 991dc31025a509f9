"""Code text → Classification, driven by rules kept as data (rules/default.toml + site [[rule]]).

Pure and table-driven: `Classifier.build` validates and compiles every rule once and indexes
them by the first characters they can start with; `classify` is a dict lookup plus a few cheap
tests per candidate rule and never raises. A rule matches when every matcher it declares
passes, in this order (cheapest first): length, prefix, charset, check, regex (a full match,
run by RE2 in time linear in the text: rules/regex.py).
The highest `priority` wins; two enabled rules at the same priority that can match the same
string are a configuration error for `check-config` and the tests (rules/overlap.py generates
strings from each rule); the daemon's cheap build skips that search and lets the first written win.

Codes that no rule matches are `unknown`, except printable codes from a 2D symbology (or long
enough when the scanner gives no symbology): those are medical-insurance *candidates*
(docs/codes.md: the national 医保码 text is not public, so the HIS hands such codes to the
platform). One generation rule has surfaced publicly (nhsa.ec28.v1): a rule of its own, of
confidence "candidate", so the census tells how many 医保码 it explains and how many fall through.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from typing import Any

from .model import TWO_D_SYMBOLOGIES, Classification, Confidence, Kind, mask
from .rules.regex import LinearPattern, RegexRefused, compile_linear

__all__ = [
    "CANDIDATE_RULE_ID",
    "CHECKS",
    "CODES_DOC",
    "INDEX_FAULT_ID",
    "OPTION_DEFAULTS",
    "UNKNOWN_RULE_ID",
    "Classifier",
    "FaultHook",
    "Rule",
    "RuleError",
]

UNKNOWN_RULE_ID = "unknown"
CANDIDATE_RULE_ID = "nhsa.candidate"
INDEX_FAULT_ID = "index"  # a fault in the classifier's own lookup, not in one rule
_RESERVED_IDS = frozenset({UNKNOWN_RULE_ID, CANDIDATE_RULE_ID, INDEX_FAULT_ID})
DEFAULT_PRIORITY = 100
# In the repository (and beside the README in a source tarball): the sources behind every rule.
CODES_DOC = "docs/codes.md"
_CANDIDATE_SOURCE = (
    "docs/codes.md: the national 医保码 text is not publicly specified; an unmatched printable 2D code "
    "is handed to the medical-insurance platform as a candidate"
)

UNKNOWN = Classification(
    channel="unknown", kind=Kind.OTHER.value, rule=UNKNOWN_RULE_ID, confidence=Confidence.NONE.value
)
CANDIDATE = Classification(
    channel="nhsa",
    kind=Kind.MEDICAL_INSURANCE.value,
    rule=CANDIDATE_RULE_ID,
    confidence=Confidence.CANDIDATE.value,
    source=_CANDIDATE_SOURCE,
)


class RuleError(ValueError):
    """An invalid rule or [classify] option. `key` is the path, e.g. `rule[2].regex`."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


# --- checks: named validators a rule may require --------------------------------------------


def _digits(s: str) -> bool:
    # str.isdigit() alone accepts "١" and "²"; scanners send ASCII.
    return s.isascii() and s.isdigit()


def _mod10_weighted_ok(s: str) -> bool:
    """GS1 mod-10 (EAN-13, EAN-8, GTIN): weights 3/1 from the right, excluding the check digit."""
    if len(s) < 2 or not _digits(s):
        return False
    return _gs1_digit(s[:-1]) == s[-1]


def _gs1_digit(body: str) -> str:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return str((10 - total % 10) % 10)


def _luhn_digit(body: str) -> str:
    total = 0
    for i, d in enumerate(reversed(body)):
        n = int(d)
        if i % 2 == 0:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return str((10 - total % 10) % 10)


def _luhn_ok(s: str) -> bool:
    return len(s) >= 2 and _digits(s) and _luhn_digit(s[:-1]) == s[-1]


_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"  # ISO 7064 MOD 11-2 as GB 11643 writes it


def _id_check_char(body17: str) -> str:
    return _ID_CHECK[sum(int(d) * w for d, w in zip(body17, _ID_WEIGHTS, strict=True)) % 11]


def _id_number_ok(s: str, today: date | None = None) -> bool:
    """GB 11643 citizen number: 17 digits + MOD 11-2 check, birth date YYYYMMDD at 7–14, not in the future."""
    if len(s) != 18 or not _digits(s[:17]):
        return False
    # The date first: it rejects ~99 % of payment codes for less than the checksum costs.
    y, m, d = int(s[6:10]), int(s[10:12]), int(s[12:14])
    if y < 1900 or not 1 <= m <= 12 or not 1 <= d <= 31:
        return False
    try:
        born = date(y, m, d)
    except ValueError:
        return False
    if born > (today or date.today()):
        return False
    return _id_check_char(s[:17]) == s[17].upper()


# Fixers turn a generated string into one that passes the check (for the overlap search only).
def _fix_gs1(s: str) -> str:
    return s[:-1] + _gs1_digit(s[:-1]) if len(s) >= 2 and _digits(s[:-1]) else s


def _fix_luhn(s: str) -> str:
    return s[:-1] + _luhn_digit(s[:-1]) if len(s) >= 2 and _digits(s[:-1]) else s


def _fix_id_number(s: str) -> str:
    if len(s) != 18 or not _digits(s[:17]):
        return s
    body = s[:6] + "19900101" + s[14:17]
    return body + _id_check_char(body)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: Callable[[str], bool]
    fix: Callable[[str], str]
    describe: str


CHECKS: dict[str, Check] = {
    "ean13": Check("ean13", lambda s: len(s) == 13 and _mod10_weighted_ok(s), _fix_gs1, "EAN-13 mod-10 check digit"),
    "ean8": Check("ean8", lambda s: len(s) == 8 and _mod10_weighted_ok(s), _fix_gs1, "EAN-8 mod-10 check digit"),
    "gs1": Check("gs1", _mod10_weighted_ok, _fix_gs1, "GS1 mod-10 check digit (any length)"),
    "luhn": Check("luhn", _luhn_ok, _fix_luhn, "Luhn mod-10 check digit"),
    "id_number": Check(
        "id_number", _id_number_ok, _fix_id_number, "身份证 MOD 11-2 check and a valid past birth date"
    ),
}

# --- character sets ---------------------------------------------------------------------------

_CHARSET_RES: dict[str, re.Pattern[str]] = {
    "hex": re.compile(r"[0-9A-Fa-f]+"),
    "hex_upper": re.compile(r"[0-9A-F]+"),
    "alnum": re.compile(r"[0-9A-Za-z]+"),
    "alnum_upper": re.compile(r"[0-9A-Z]+"),
    "base64": re.compile(r"[A-Za-z0-9+/]+={0,2}"),
}


def _full_matcher(pattern: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda s: pattern.fullmatch(s) is not None


CHARSETS: dict[str, Callable[[str], bool]] = {
    "digits": _digits,
    "printable": lambda s: s.isprintable() and s != "",
    **{name: _full_matcher(p) for name, p in _CHARSET_RES.items()},
}
# --- options ([classify] table) ---------------------------------------------------------------

OPTION_DEFAULTS: dict[str, Any] = {
    # Unmatched printable 2D codes become nhsa/medical_insurance candidates (docs/codes.md).
    "candidates": True,
    "candidate_min_length": 16,
    "candidate_max_length": 512,
    # With no symbology from the scanner, only codes at least this long look 2D: longer than
    # every 1D payment code (Alipay ≤ 24) and typical HIS slip numbers.
    "candidate_min_length_without_symbology": 25,
    "candidate_symbologies": sorted(TWO_D_SYMBOLOGIES),
    # Shapes kept by the census before new shapes are only counted as overflow.
    "census_max_shapes": 1000,
}

# --- rules ------------------------------------------------------------------------------------

_RULE_KEYS = frozenset(
    {
        "id", "channel", "kind", "confidence", "source", "note", "priority", "enabled",
        "prefix", "length", "charset", "regex", "ignore_case", "check", "reject", "examples",
    }
)
_ID_RE = re.compile(r"[a-z0-9][a-z0-9_.\-]*")
_CHANNEL_RE = re.compile(r"[a-z][a-z0-9_]*")
_REJECT_RE = re.compile(r"[a-z][a-z0-9_]*")
_KINDS = frozenset(k.value for k in Kind)
# "candidate": a rule from thin evidence (nhsa.ec28.v1), counted by the census until confirmed.
_CONFIDENCES = frozenset(c.value for c in Confidence) - {Confidence.NONE.value}


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule. `where` is how errors name it: `rule[2]` (site) or `default.toml rule[5]`."""

    id: str
    channel: str
    kind: str
    confidence: str
    source: str
    priority: int
    where: str
    origin: str  # "default" | "site"
    order: int  # position in the merged list: tie-break only (same-priority overlaps are errors)
    prefixes: tuple[str, ...] = ()  # lower-cased when ignore_case
    lengths: frozenset[int] | None = None
    length_text: str = ""
    charset: str | None = None
    regex: LinearPattern | None = None
    ignore_case: bool = False
    check: str | None = None
    reject: str | None = None
    note: str = ""
    examples: tuple[str, ...] = ()
    enabled: bool = True
    result: Classification = field(default=UNKNOWN, compare=False)
    _charset_ok: Callable[[str], bool] | None = field(default=None, compare=False, repr=False)
    _check_ok: Callable[[str], bool] | None = field(default=None, compare=False, repr=False)

    def matches(self, text: str) -> bool:
        if self.lengths is not None and len(text) not in self.lengths:
            return False
        if self.prefixes and not (text.lower() if self.ignore_case else text).startswith(self.prefixes):
            return False
        if self._charset_ok is not None and not self._charset_ok(text):
            return False
        # The check before the regex: both are pure, and a check (a few int operations, the
        # 身份证 date test first) is cheaper than a call into RE2.
        if self._check_ok is not None and not self._check_ok(text):
            return False
        return self.regex is None or self.regex.fullmatch(text)

    def evaluate(self, text: str) -> list[tuple[str, bool, str]]:
        """Each declared matcher as (name, passed, detail) — for explain; never shows the code."""
        out: list[tuple[str, bool, str]] = []
        if self.prefixes:
            ok = (text.lower() if self.ignore_case else text).startswith(self.prefixes)
            shown = ", ".join(self.prefixes[:8]) + (", …" if len(self.prefixes) > 8 else "")
            out.append(("prefix", ok, "prefix ok" if ok else f"prefix not in {shown}"))
        if self.lengths is not None:
            ok = len(text) in self.lengths
            out.append(("length", ok, f"length {len(text)} ok" if ok else f"length {len(text)} not in {self.length_text}"))
        if self._charset_ok is not None:
            ok = self._charset_ok(text)
            out.append(("charset", ok, f"charset {self.charset} ok" if ok else f"not all {self.charset}"))
        if self.regex is not None:
            ok = self.regex.fullmatch(text)
            out.append(("regex", ok, "regex ok" if ok else "regex does not match"))
        if self._check_ok is not None:
            ok = self._check_ok(text)
            out.append(("check", ok, f"check {self.check} ok" if ok else f"check {self.check} fails"))
        return out

    def describe(self) -> str:
        parts = []
        if self.prefixes:
            parts.append("prefix " + "|".join(self.prefixes) + (" (any case)" if self.ignore_case else ""))
        if self.lengths is not None:
            parts.append(f"length {self.length_text}")
        if self.charset:
            parts.append(self.charset)
        if self.regex is not None:
            parts.append(f"regex {self.regex.pattern}")
        if self.check:
            parts.append(f"check {self.check}")
        return ", ".join(parts)


def _parse_lengths(key: str, value: Any) -> tuple[frozenset[int], str]:
    """`18`, `"16-24"`, or a list of those → the set of allowed lengths and how to print it."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise RuleError(key, "expected a length, a range \"16-24\" or a list of those, got []")
    out: set[int] = set()
    shown: list[str] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            lo = hi = item
        elif isinstance(item, str) and re.fullmatch(r"\s*\d+\s*[-–]\s*\d+\s*", item):
            a, b = re.split(r"[-–]", item)
            lo, hi = int(a), int(b)
        else:
            raise RuleError(key, f'expected a length, a range "16-24" or a list of those, got {item!r}')
        if lo < 1 or hi < lo or hi > 4096:
            raise RuleError(key, f"expected lengths between 1 and 4096 with min ≤ max, got {item!r}")
        out.update(range(lo, hi + 1))
        shown.append(str(lo) if lo == hi else f"{lo}–{hi}")
    return frozenset(out), ", ".join(shown)


def _need_str(key: str, v: Any, *, empty: bool = False) -> str:
    if not isinstance(v, str) or (not empty and not v):
        raise RuleError(key, f"expected a {'string' if empty else 'non-empty string'}, got {v!r}")
    return v


def _compile_rule(
    raw: Mapping[str, Any], where: str, origin: str, order: int, checks: Mapping[str, Check]
) -> Rule:
    if not isinstance(raw, Mapping):
        raise RuleError(where, f"expected a table, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise RuleError(f"{where}.{unknown[0]}", f"unknown key; known keys: {', '.join(sorted(_RULE_KEYS))}")
    rid = _need_str(f"{where}.id", raw.get("id"))
    if not _ID_RE.fullmatch(rid):
        raise RuleError(f"{where}.id", f"expected lowercase letters, digits, '.', '_' or '-', got {rid!r}")
    if rid in _RESERVED_IDS:
        raise RuleError(f"{where}.id", f"{rid!r} is reserved for the classifier's own outcome")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RuleError(f"{where}.enabled", f"expected true or false, got {enabled!r}")
    for req in ("channel", "kind"):
        if req not in raw:
            raise RuleError(
                f"{where}.{req}",
                "required (a site rule with the id of a default rule replaces it whole; "
                "to only remove it, give id and enabled = false)",
            )
    channel = _need_str(f"{where}.channel", raw["channel"])
    if not _CHANNEL_RE.fullmatch(channel):
        raise RuleError(f"{where}.channel", f"expected a lowercase identifier like \"wechat\", got {channel!r}")
    kind = _need_str(f"{where}.kind", raw["kind"])
    if kind not in _KINDS:
        raise RuleError(f"{where}.kind", f"expected one of {', '.join(sorted(_KINDS))}, got {kind!r}")
    confidence = raw.get("confidence", Confidence.SITE.value if origin == "site" else None)
    if confidence not in _CONFIDENCES:
        raise RuleError(f"{where}.confidence", f"expected one of {', '.join(sorted(_CONFIDENCES))}, got {confidence!r}")
    if origin == "default" and not raw.get("source"):
        raise RuleError(f"{where}.source", "every default rule names its public source")
    source = _need_str(f"{where}.source", raw.get("source", "site config"), empty=True)
    note = _need_str(f"{where}.note", raw.get("note", ""), empty=True)
    priority = raw.get("priority", DEFAULT_PRIORITY)
    if not isinstance(priority, int) or isinstance(priority, bool) or not -10_000 <= priority <= 10_000:
        raise RuleError(f"{where}.priority", f"expected an integer from -10000 to 10000, got {priority!r}")
    ignore_case = raw.get("ignore_case", False)
    if not isinstance(ignore_case, bool):
        raise RuleError(f"{where}.ignore_case", f"expected true or false, got {ignore_case!r}")

    prefixes: tuple[str, ...] = ()
    if "prefix" in raw:
        p = raw["prefix"]
        plist = p if isinstance(p, list) else [p]
        if not plist or not all(isinstance(x, str) and x for x in plist):
            raise RuleError(f"{where}.prefix", f"expected a non-empty string or a list of them, got {p!r}")
        prefixes = tuple(dict.fromkeys(x.lower() if ignore_case else x for x in plist))
    lengths: frozenset[int] | None = None
    length_text = ""
    if "length" in raw:
        lengths, length_text = _parse_lengths(f"{where}.length", raw["length"])
    charset = raw.get("charset")
    if charset is not None and not isinstance(charset, str):  # a list or a table is not hashable
        raise RuleError(f"{where}.charset", f"expected a charset name (one of {', '.join(sorted(CHARSETS))}), got {type(charset).__name__}")
    if charset is not None and charset not in CHARSETS:
        raise RuleError(f"{where}.charset", f"unknown charset {charset!r}; known: {', '.join(sorted(CHARSETS))}")
    regex: LinearPattern | None = None
    if "regex" in raw:
        pattern = _need_str(f"{where}.regex", raw["regex"])
        try:
            # RE2, never `re`: linear time whatever the code, and \d means 0-9 (rules/regex.py).
            regex = compile_linear(pattern, ignore_case)
        except RegexRefused as e:
            shown = pattern if len(pattern) <= 80 else pattern[:77] + "…"
            raise RuleError(f"{where}.regex", f'bad regex "{shown}": {e}') from None
    check = raw.get("check")
    if check is not None and check not in checks:
        raise RuleError(f"{where}.check", f"unknown check {check!r}; known: {', '.join(sorted(checks))}")
    reject = raw.get("reject")
    if reject is not None:
        reject = _need_str(f"{where}.reject", reject)
        if not _REJECT_RE.fullmatch(reject):
            # The reason is a metric label and a protocol field: a short token; prose goes in `note`.
            raise RuleError(f"{where}.reject", f'expected a short token like "merchant_receive_code", got {reject!r}')
    if not prefixes and regex is None and lengths is None and charset is None:
        raise RuleError(where, "matches everything: give at least one of prefix, length, charset, regex")
    examples = raw.get("examples", [])
    if not isinstance(examples, list) or not all(isinstance(x, str) for x in examples):
        raise RuleError(f"{where}.examples", "expected a list of strings")

    result = Classification(
        channel=channel, kind=kind, rule=rid, confidence=confidence, source=source, reject_reason=reject
    )
    return Rule(
        id=rid, channel=channel, kind=kind, confidence=confidence, source=source, priority=priority,
        where=where, origin=origin, order=order, prefixes=prefixes, lengths=lengths, length_text=length_text,
        charset=charset, regex=regex, ignore_case=ignore_case, check=check, reject=reject, note=note,
        examples=tuple(examples), enabled=enabled, result=result,
        _charset_ok=CHARSETS[charset] if charset else None,
        _check_ok=checks[check].ok if check else None,
    )


@functools.cache
def _default_tables() -> tuple[dict[str, Any], ...]:
    """rules/default.toml, read once per process (package data)."""
    text = resources.files("scannerd.rules").joinpath("default.toml").read_text(encoding="utf-8")
    return tuple(tomllib.loads(text).get("rule", []))


def _index_keys(rule: Rule) -> tuple[set[str], set[str]] | None:
    """The 2-character and 1-character starts a rule can match; None when it can start anywhere."""
    if not rule.prefixes:
        return None
    two: set[str] = set()
    one: set[str] = set()
    for p in rule.prefixes:
        variants = _case_variants(p[:2]) if rule.ignore_case else {p[:2]}
        (two if len(p) >= 2 else one).update(variants)
    return two, one


def _case_variants(s: str) -> set[str]:
    out = {""}
    for ch in s:
        out = {o + v for o in out for v in {ch.lower(), ch.upper()}}
    return out


def _parse_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    opts = dict(OPTION_DEFAULTS)
    for key, value in (options or {}).items():
        k = f"classify.{key}"
        if key not in OPTION_DEFAULTS:
            raise RuleError(k, f"unknown option; known: {', '.join(sorted(OPTION_DEFAULTS))}")
        default = OPTION_DEFAULTS[key]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise RuleError(k, f"expected true or false, got {value!r}")
        elif isinstance(default, int):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise RuleError(k, f"expected a non-negative integer, got {value!r}")
        elif isinstance(default, list) and (not isinstance(value, list) or not all(isinstance(x, str) for x in value)):
            raise RuleError(k, f"expected a list of symbology names like \"qr\", got {value!r}")
        opts[key] = value
    if opts["candidate_min_length"] > opts["candidate_max_length"]:
        raise RuleError("classify.candidate_min_length", "expected ≤ candidate_max_length")
    return opts


# --- the classifier ---------------------------------------------------------------------------

# Told of a rule that raised while matching: (rule id, the text, the exception). The text is a
# bearer token: a hook logs it masked (model.mask), never in full.
FaultHook = Callable[[str, str, Exception], None]


def _report(on_error: FaultHook | None, rule_id: str, text: str, error: Exception) -> None:
    if on_error is None:
        return
    try:
        on_error(rule_id, text, error)
    except Exception:
        pass


class Classifier:
    """Compiled rules + options. Build once (startup, SIGHUP); classify from the hot path."""

    def __init__(self, rules: Sequence[Rule], options: Mapping[str, Any], disabled: Sequence[Rule] = ()) -> None:
        # Highest priority first; definition order breaks ties (same-priority overlaps are refused).
        self.rules: tuple[Rule, ...] = tuple(sorted(rules, key=lambda r: (-r.priority, r.order)))
        self.disabled: tuple[Rule, ...] = tuple(disabled)
        self.options: dict[str, Any] = dict(options)
        self._cand = bool(options["candidates"])
        self._cand_min = int(options["candidate_min_length"])
        self._cand_max = int(options["candidate_max_length"])
        self._cand_min_nosym = int(options["candidate_min_length_without_symbology"])
        self._cand_syms = frozenset(options["candidate_symbologies"])
        wild: list[Rule] = []
        by2: dict[str, list[Rule]] = {}
        by1: dict[str, list[Rule]] = {}
        keyed: list[tuple[Rule, set[str], set[str]]] = []
        for r in self.rules:
            keys = _index_keys(r)
            if keys is None:
                wild.append(r)
            else:
                keyed.append((r, *keys))
        for _, two, one in keyed:
            for k in two:
                by2.setdefault(k, [])
            for k in one:
                by1.setdefault(k, [])
        for k in by2:
            by1.setdefault(k[0], [])
        # Each bucket holds every rule that could match a text starting so, in priority order.
        order = {r.id: i for i, r in enumerate(self.rules)}
        for k, bucket in by2.items():
            bucket.extend(r for r, two, one in keyed if k in two or k[0] in one)
        for k, bucket in by1.items():
            bucket.extend(r for r, two, one in keyed if k in one)
        self._wild: tuple[Rule, ...] = tuple(wild)
        self._by2 = {k: tuple(sorted((*v, *wild), key=lambda r: order[r.id])) for k, v in by2.items()}
        self._by1 = {k: tuple(sorted((*v, *wild), key=lambda r: order[r.id])) for k, v in by1.items()}

    @classmethod
    def build(
        cls,
        site_rules: Sequence[Mapping[str, Any]] = (),
        options: Mapping[str, Any] | None = None,
        *,
        search_overlaps: bool = False,
    ) -> Classifier:
        """Default rules + the site's [[rule]] tables → a classifier, or RuleError naming the key.

        Cheap (a few ms): what the daemon does at start and on SIGHUP. `search_overlaps` adds the
        search for two same-priority rules matching one string (rules/overlap.py): for
        `check-config` and the tests, never on the daemon's loop. Without it, such a pair is
        decided by the order the rules are written in.
        """
        opts = _parse_options(options)
        checks = dict(CHECKS)
        merged: dict[str, Rule] = {}
        for i, table in enumerate(_default_tables()):
            r = _compile_rule(table, f"default.toml rule[{i + 1}]", "default", i, checks)
            if r.id in merged:
                raise RuleError(r.where + ".id", f"duplicate default id {r.id!r}")
            merged[r.id] = r
        defaults = dict(merged)
        seen_site: dict[str, str] = {}
        for i, raw in enumerate(site_rules):
            where = f"rule[{i + 1}]"
            if not isinstance(raw, Mapping):
                raise RuleError(where, f"expected a table, got {type(raw).__name__}")
            rid = raw.get("id")
            if isinstance(rid, str) and rid in seen_site:
                raise RuleError(f"{where}.id", f"duplicate id {rid!r} (also {seen_site[rid]})")
            if isinstance(rid, str):
                seen_site[rid] = where
            # `{id = "x", enabled = false}` alone removes a default without restating it
            # (and `enabled = true` alone turns on a default shipped disabled, like jdpay.v1).
            if isinstance(raw.get("enabled"), bool) and set(raw) <= {"id", "enabled"}:
                _need_str(f"{where}.id", rid)
                if rid not in defaults:
                    raise RuleError(f"{where}.id", f"no default rule {rid!r} to switch; defaults: {', '.join(defaults)}")
                merged[rid] = _replace(defaults[rid], enabled=raw["enabled"])
                continue
            r = _compile_rule(raw, where, "site", len(defaults) + i, checks)
            # A replacement keeps the default's place in the tie-break order.
            if r.id in defaults:
                r = _with_order(r, defaults[r.id].order)
            merged[r.id] = r
        active = [r for r in merged.values() if r.enabled]
        disabled = [r for r in merged.values() if not r.enabled]
        if search_overlaps:
            from .rules.overlap import (
                check_overlaps,  # slow, and reads CPython's private re._parser
            )

            check_overlaps(active, checks)
        clf = cls(active, opts, disabled)
        clf._check_examples()
        return clf

    def _check_examples(self) -> None:
        """A site rule's examples must classify to it: a shadowed site rule is a config error.

        Default rules are checked by the tests instead: a site may shadow a default on purpose
        with a higher priority ("every 18-digit code here is a visit number").
        """
        for r in self.rules:
            if r.origin != "site":
                continue
            for j, ex in enumerate(r.examples):
                if not r.matches(ex):
                    bad = "; ".join(d for _, ok, d in r.evaluate(ex) if not ok)
                    raise RuleError(f"{r.where}.examples[{j + 1}]", f"{mask(ex)} does not match its own rule: {bad}")
                got = self.classify(ex)
                if got.rule != r.id:
                    raise RuleError(
                        f"{r.where}.examples[{j + 1}]",
                        f"{mask(ex)} classifies as {got.rule!r}, not {r.id!r}: raise this rule's priority or narrow the other",
                    )

    def classify(self, text: str, symbology: str | None = None, on_error: FaultHook | None = None) -> Classification:
        """The one hot-path call: pure, allocation-light, never raises.

        A rule whose matcher raises (a bug, never the code's fault) counts as not matching, so
        the other rules still decide; `on_error(rule_id, text, exception)` hears of it, for the
        caller to count and log (classify_faults.py). The classifier itself keeps no state.
        """
        try:
            rules = self._by2.get(text[:2]) or self._by1.get(text[:1]) or self._wild
        except Exception as e:
            _report(on_error, INDEX_FAULT_ID, text, e)
            return UNKNOWN
        for r in rules:
            try:
                if r.matches(text):
                    return r.result
            except Exception as e:
                _report(on_error, r.id, text, e)
        try:
            return CANDIDATE if self._is_candidate(text, symbology) else UNKNOWN
        except Exception as e:
            _report(on_error, CANDIDATE_RULE_ID, text, e)
            return UNKNOWN

    def _is_candidate(self, text: str, symbology: str | None) -> bool:
        if not self._cand or not (self._cand_min <= len(text) <= self._cand_max) or not text.isprintable():
            return False
        if symbology is None:
            return len(text) >= self._cand_min_nosym
        return symbology in self._cand_syms

    def explain(self, text: str, symbology: str | None = None) -> list[str]:
        """Why `text` classifies as it does: the winner, rules it beat, near misses. No code shown."""
        c = self.classify(text, symbology)
        lines: list[str] = []
        sym = symbology or "none given"
        head = f"→ {c.channel} / {c.kind} (rule {c.rule}, confidence {c.confidence})"
        if c.reject_reason:
            head += f", REJECTED: {c.reject_reason}"
        lines.append(head)
        winner = next((r for r in self.rules if r.id == c.rule), None)
        if winner is not None:
            lines.append(f"  winner {winner.id} (priority {winner.priority}, {winner.origin}): {winner.describe()}")
            if winner.note:
                lines.append(f"  note: {winner.note}")
            lines.append(f"  source: {winner.source}")
            if winner.origin == "default":
                lines.append(f'  more: {CODES_DOC}, section "{winner.id}"')
        elif c.rule == CANDIDATE_RULE_ID:
            why = f"symbology {symbology}" if symbology else f"no symbology and length {len(text)} ≥ {self._cand_min_nosym}"
            lines.append(f"  no rule matched; printable, length {len(text)}, {why}: medical-insurance candidate")
            lines.append(f"  source: {_CANDIDATE_SOURCE}")
            lines.append(f'  more: {CODES_DOC}, section "{CANDIDATE_RULE_ID}"')
        else:
            lines.append(f"  no rule matched and not a medical-insurance candidate ({self._candidate_refusal(text, symbology)})")
        lines.append(f"  symbology: {sym}, length {len(text)}")
        also = [r for r in self.rules if r is not winner and r.matches(text)]
        for r in also:
            lines.append(f"  also matches {r.id} (priority {r.priority}): lost to the higher-priority winner")
        for r in self.rules:
            if r is winner or r in also:
                continue
            ev = r.evaluate(text)
            failed = [d for _, ok, d in ev if not ok]
            prefix_ok = any(name == "prefix" and ok for name, ok, _ in ev)
            # Near: the prefix fits and at most two matchers fail, or a prefix-less rule misses by one.
            if (prefix_ok and len(failed) <= 2) or (not r.prefixes and len(failed) == 1 and len(ev) > 1):
                lines.append(f"  near miss {r.id}: " + ", ".join(d for _, _, d in ev))
        for r in self.disabled:
            if r.matches(text):
                lines.append(f"  disabled rule {r.id} would match ({r.where}, enabled = false)")
        return lines

    def _candidate_refusal(self, text: str, symbology: str | None) -> str:
        if not self._cand:
            return "candidates are turned off"
        if not text.isprintable():
            return "not printable"
        if not self._cand_min <= len(text) <= self._cand_max:
            return f"length {len(text)} outside {self._cand_min}–{self._cand_max}"
        if symbology is None:
            return f"no symbology and length {len(text)} < {self._cand_min_nosym}"
        return f"symbology {symbology} is not 2D"


def _with_order(r: Rule, order: int) -> Rule:
    return _replace(r, order=order)


def _replace(r: Rule, **changes: Any) -> Rule:
    return dataclasses.replace(r, **changes)

