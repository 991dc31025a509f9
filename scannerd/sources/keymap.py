"""Linux key events → characters, per keyboard layout, with an explicit per-device key state.

A keyboard-wedge scanner "types" its code with the key codes a host with a given keyboard
layout needs to produce each character (the scanner's "keyboard country" setting). This module
is the host side of that contract, in pure functions:

    state, text = step(layout, state, code, value)

`state` is a frozen KeyState (modifiers, CapsLock as the scanner itself toggles it, a pending
dead key, Alt+keypad digits); each device has its own, so two scanners typing at once never
corrupt each other. `text` is "" for most events, one character for a key press, or two for a
dead key that does not combine. A key press that a scanner would never send as part of a code
(arrows, F-keys, Backspace, Alt+letter) yields U+FFFD: the framer then rejects the whole read as
"undecodable" instead of passing on a code with a character silently missing.

Decisions worth knowing:
- Key repeat (value 2) is ignored: a held key is a stuck scanner, not a repeated character.
- Keypad digits and the keypad decimal always give characters, whatever NumLock says: a scanner
  never means End/Down/PgDn, and "digits vanish when NumLock is off" is a classic wedge failure.
  NumLock presses are still tracked (KeyState.numlock) so `scannerd test` can report them.
- CapsLock starts off and toggles on each press (we grab the device, so no other program's
  lock state applies); it affects letters only, and Shift inverts it, as on xkb and Windows.
- Ctrl + key gives the C0 control character of that key's base character (Ctrl+] = GS 0x1D,
  the GS1 separator some scanners send in wedge mode).
- Alt+keypad (alt_numpad): decimal digits typed with Alt held become one character when Alt is
  released: without a leading 0 the number is a Unicode code point; with a leading 0 it is a
  character of the ANSI code page (cp936/GBK by default: one byte below 256, else two bytes).

Key codes are the Linux input ABI numbers (linux/input-event-codes.h); they never change, so
they are spelled out here rather than imported from python-evdev's C extension.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

# --- Linux input event numbers --------------------------------------------------------------

EV_SYN, EV_KEY, EV_MSC, EV_LED, EV_REP = 0x00, 0x01, 0x04, 0x11, 0x14
SYN_REPORT, SYN_DROPPED = 0, 3
MSC_SCAN = 4
KEY_RELEASE, KEY_PRESS, KEY_REPEAT = 0, 1, 2

KEY_ESC = 1
KEY_1, KEY_2, KEY_3, KEY_4, KEY_5, KEY_6, KEY_7, KEY_8, KEY_9, KEY_0 = range(2, 12)
KEY_MINUS, KEY_EQUAL, KEY_BACKSPACE, KEY_TAB = 12, 13, 14, 15
KEY_Q, KEY_W, KEY_E, KEY_R, KEY_T, KEY_Y, KEY_U, KEY_I, KEY_O, KEY_P = range(16, 26)
KEY_LEFTBRACE, KEY_RIGHTBRACE, KEY_ENTER, KEY_LEFTCTRL = 26, 27, 28, 29
KEY_A, KEY_S, KEY_D, KEY_F, KEY_G, KEY_H, KEY_J, KEY_K, KEY_L = range(30, 39)
KEY_SEMICOLON, KEY_APOSTROPHE, KEY_GRAVE, KEY_LEFTSHIFT, KEY_BACKSLASH = 39, 40, 41, 42, 43
KEY_Z, KEY_X, KEY_C, KEY_V, KEY_B, KEY_N, KEY_M = range(44, 51)
KEY_COMMA, KEY_DOT, KEY_SLASH, KEY_RIGHTSHIFT, KEY_KPASTERISK = 51, 52, 53, 54, 55
KEY_LEFTALT, KEY_SPACE, KEY_CAPSLOCK = 56, 57, 58
KEY_NUMLOCK, KEY_SCROLLLOCK = 69, 70
KEY_KP7, KEY_KP8, KEY_KP9, KEY_KPMINUS = 71, 72, 73, 74
KEY_KP4, KEY_KP5, KEY_KP6, KEY_KPPLUS = 75, 76, 77, 78
KEY_KP1, KEY_KP2, KEY_KP3, KEY_KP0, KEY_KPDOT = 79, 80, 81, 82, 83
KEY_102ND = 86
KEY_KPENTER, KEY_RIGHTCTRL, KEY_KPSLASH, KEY_RIGHTALT = 96, 97, 98, 100
KEY_KPEQUAL, KEY_KPCOMMA = 117, 121
KEY_LEFTMETA, KEY_RIGHTMETA = 125, 126

KEYPAD_DIGITS: Mapping[int, str] = MappingProxyType({
    KEY_KP0: "0", KEY_KP1: "1", KEY_KP2: "2", KEY_KP3: "3", KEY_KP4: "4",
    KEY_KP5: "5", KEY_KP6: "6", KEY_KP7: "7", KEY_KP8: "8", KEY_KP9: "9",
})
_KEYPAD_OPS: Mapping[int, str] = MappingProxyType({
    KEY_KPSLASH: "/", KEY_KPASTERISK: "*", KEY_KPMINUS: "-", KEY_KPPLUS: "+", KEY_KPEQUAL: "=",
    KEY_KPCOMMA: ",",
})
# Keys that end a scan: what the framer sees as its terminator.
_CONTROL_KEYS: Mapping[int, str] = MappingProxyType({KEY_ENTER: "\r", KEY_KPENTER: "\r", KEY_TAB: "\t"})
# Keys that change state and never type anything.
_SILENT = frozenset({KEY_LEFTSHIFT, KEY_RIGHTSHIFT, KEY_LEFTCTRL, KEY_RIGHTCTRL, KEY_LEFTALT,
                     KEY_RIGHTALT, KEY_LEFTMETA, KEY_RIGHTMETA, KEY_CAPSLOCK, KEY_NUMLOCK,
                     KEY_SCROLLLOCK})

UNDECODABLE = "\ufffd"

# Dead keys are stored in the tables as DEAD + the spacing character they stand for.
DEAD = "\x00dead:"
_COMBINING = {"´": "\u0301", "`": "\u0300", "^": "\u0302", "¨": "\u0308", "~": "\u0303"}


# --- layouts ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Layout:
    """One keyboard layout: key code → (base, shifted, AltGr) characters ("" = nothing)."""

    name: str
    keys: Mapping[int, tuple[str, str, str]]
    keypad_decimal: str = "."
    # Right Alt is AltGr on European layouts; on `us` it is a second Alt.
    has_altgr: bool = True


def _rows(base: str, shifted: str, codes: Iterable[int]) -> dict[int, tuple[str, str, str]]:
    return {c: (b, s, "") for c, b, s in zip(codes, base, shifted, strict=True)}


_DIGIT_ROW = (KEY_1, KEY_2, KEY_3, KEY_4, KEY_5, KEY_6, KEY_7, KEY_8, KEY_9, KEY_0)
_TOP_ROW = (KEY_Q, KEY_W, KEY_E, KEY_R, KEY_T, KEY_Y, KEY_U, KEY_I, KEY_O, KEY_P)
_HOME_ROW = (KEY_A, KEY_S, KEY_D, KEY_F, KEY_G, KEY_H, KEY_J, KEY_K, KEY_L)
_BOTTOM_ROW = (KEY_Z, KEY_X, KEY_C, KEY_V, KEY_B, KEY_N, KEY_M)


def _us() -> dict[int, tuple[str, str, str]]:
    keys = _rows("1234567890", "!@#$%^&*()", _DIGIT_ROW)
    keys |= _rows("qwertyuiop", "QWERTYUIOP", _TOP_ROW)
    keys |= _rows("asdfghjkl", "ASDFGHJKL", _HOME_ROW)
    keys |= _rows("zxcvbnm", "ZXCVBNM", _BOTTOM_ROW)
    keys |= _rows("-=[];'`\\,./ ", "_+{}:\"~|<>? ",
                  (KEY_MINUS, KEY_EQUAL, KEY_LEFTBRACE, KEY_RIGHTBRACE, KEY_SEMICOLON,
                   KEY_APOSTROPHE, KEY_GRAVE, KEY_BACKSLASH, KEY_COMMA, KEY_DOT, KEY_SLASH,
                   KEY_SPACE))
    # The ISO key left of Z: Windows' US layout types \ | there.
    keys[KEY_102ND] = ("\\", "|", "")
    return keys


def _uk() -> dict[int, tuple[str, str, str]]:
    keys = _us()
    keys[KEY_2] = ("2", '"', "")
    keys[KEY_3] = ("3", "£", "")
    keys[KEY_4] = ("4", "$", "€")
    keys[KEY_APOSTROPHE] = ("'", "@", "")
    keys[KEY_GRAVE] = ("`", "¬", "¦")
    keys[KEY_BACKSLASH] = ("#", "~", "")  # the ISO "#~" key reports KEY_BACKSLASH
    keys[KEY_102ND] = ("\\", "|", "")
    return keys


def _de() -> dict[int, tuple[str, str, str]]:
    keys = _us()
    keys |= _rows("1234567890", '!"§$%&/()=', _DIGIT_ROW)
    for code, altgr in ((KEY_2, "²"), (KEY_3, "³"), (KEY_7, "{"), (KEY_8, "["), (KEY_9, "]"),
                        (KEY_0, "}")):
        keys[code] = (keys[code][0], keys[code][1], altgr)
    keys[KEY_Y], keys[KEY_Z] = ("z", "Z", ""), ("y", "Y", "")
    keys[KEY_Q] = ("q", "Q", "@")
    keys[KEY_E] = ("e", "E", "€")
    keys[KEY_M] = ("m", "M", "µ")
    keys[KEY_MINUS] = ("ß", "?", "\\")
    keys[KEY_EQUAL] = (DEAD + "´", DEAD + "`", "")
    keys[KEY_LEFTBRACE] = ("ü", "Ü", "")
    keys[KEY_RIGHTBRACE] = ("+", "*", "~")
    keys[KEY_SEMICOLON] = ("ö", "Ö", "")
    keys[KEY_APOSTROPHE] = ("ä", "Ä", "")
    keys[KEY_GRAVE] = (DEAD + "^", "°", "")
    keys[KEY_BACKSLASH] = ("#", "'", "")
    keys[KEY_COMMA] = (",", ";", "")
    keys[KEY_DOT] = (".", ":", "")
    keys[KEY_SLASH] = ("-", "_", "")
    keys[KEY_102ND] = ("<", ">", "|")
    return keys


def _fr() -> dict[int, tuple[str, str, str]]:
    keys = _us()
    # AZERTY: the digit row types symbols; digits need Shift (the classic "&é\"'(" symptom).
    keys |= _rows("&é\"'(-è_çà", "1234567890", _DIGIT_ROW)
    for code, altgr in ((KEY_2, DEAD + "~"), (KEY_3, "#"), (KEY_4, "{"), (KEY_5, "["), (KEY_6, "|"),
                        (KEY_7, DEAD + "`"), (KEY_8, "\\"), (KEY_9, "^"), (KEY_0, "@")):
        keys[code] = (keys[code][0], keys[code][1], altgr)
    keys |= _rows("azertyuiop", "AZERTYUIOP", _TOP_ROW)
    keys |= _rows("qsdfghjkl", "QSDFGHJKL", _HOME_ROW)
    keys |= _rows("wxcvbn", "WXCVBN", _BOTTOM_ROW[:-1])
    keys[KEY_E] = ("e", "E", "€")
    keys[KEY_MINUS] = (")", "°", "]")
    keys[KEY_EQUAL] = ("=", "+", "}")
    keys[KEY_LEFTBRACE] = (DEAD + "^", DEAD + "¨", "")
    keys[KEY_RIGHTBRACE] = ("$", "£", "¤")
    keys[KEY_SEMICOLON] = ("m", "M", "")
    keys[KEY_APOSTROPHE] = ("ù", "%", "")
    keys[KEY_GRAVE] = ("²", "", "")
    keys[KEY_BACKSLASH] = ("*", "µ", "")
    keys[KEY_M] = (",", "?", "")
    keys[KEY_COMMA] = (";", ".", "")
    keys[KEY_DOT] = (":", "/", "")
    keys[KEY_SLASH] = ("!", "§", "")
    keys[KEY_102ND] = ("<", ">", "")
    return keys


LAYOUTS: Mapping[str, Layout] = MappingProxyType({
    "us": Layout("us", MappingProxyType(_us()), has_altgr=False),
    "uk": Layout("uk", MappingProxyType(_uk())),
    "de": Layout("de", MappingProxyType(_de()), keypad_decimal=","),
    "fr": Layout("fr", MappingProxyType(_fr())),
})


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown keyboard layout {name!r} (known: {', '.join(LAYOUTS)})") from None


# --- state and the decoding step ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class KeyState:
    """What the host remembers between key events of one device."""

    lshift: bool = False
    rshift: bool = False
    ctrl: int = 0  # bit 1 left, bit 2 right
    lalt: bool = False
    ralt: bool = False
    caps: bool = False
    numlock: bool = True
    dead: str = ""  # spacing character of a pending dead key
    alt_digits: str = ""  # Alt+keypad digits typed so far
    alt_numpad: bool = False  # config: decode Alt+keypad codes
    codepage: str = "cp936"  # ANSI code page for Alt+0nnn

    @property
    def shift(self) -> bool:
        return self.lshift or self.rshift

    def reset(self) -> KeyState:
        """Forget held keys (after SYN_DROPPED); lock states and settings stay."""
        return KeyState(caps=self.caps, numlock=self.numlock, alt_numpad=self.alt_numpad,
                        codepage=self.codepage)


def alt_code_char(digits: str, codepage: str = "cp936") -> str:
    """The character Windows types for Alt + `digits` on the keypad (see module docstring)."""
    if not digits:
        return ""
    n = int(digits)
    try:
        if digits.startswith("0"):
            raw = bytes([n]) if n < 256 else n.to_bytes(2, "big")
            return raw.decode(codepage)
        return chr(n)
    except (ValueError, OverflowError, UnicodeDecodeError):
        return UNDECODABLE


def _compose(dead: str, ch: str) -> str:
    """A pending dead key followed by `ch`: composed when possible, else both, as Windows does."""
    if ch == " ":
        return dead
    mark = _COMBINING.get(dead)
    if mark is not None and len(ch) == 1 and ch.isalpha():
        composed = unicodedata.normalize("NFC", ch + mark)
        if len(composed) == 1:
            return composed
    return dead + ch


def _ctrl_char(ch: str) -> str:
    c = ch.upper()
    if len(c) == 1 and "@" <= c <= "_":
        return chr(ord(c) & 0x1F)
    return UNDECODABLE


def _level_char(layout: Layout, state: KeyState, code: int) -> str:
    """The character (or DEAD-prefixed dead key) `code` gives at the current level, or ""."""
    entry = layout.keys.get(code)
    if entry is None:
        return ""
    base, shifted, altgr = entry
    if state.ralt and layout.has_altgr:
        return altgr
    upper = state.shift
    # CapsLock flips letters only (keys whose shifted form is the upper case of the base).
    if state.caps and base.isalpha() and len(base) == 1 and shifted == base.upper():
        upper = not upper
    return shifted if upper else base


def step(layout: Layout, state: KeyState, code: int, value: int) -> tuple[KeyState, str]:
    """Apply one EV_KEY event; return the new state and the text it types (often "")."""
    if value == KEY_REPEAT:
        return state, ""
    down = value == KEY_PRESS
    # Modifiers: remember what is held.
    if code == KEY_LEFTSHIFT:
        return replace(state, lshift=down), ""
    if code == KEY_RIGHTSHIFT:
        return replace(state, rshift=down), ""
    if code in (KEY_LEFTCTRL, KEY_RIGHTCTRL):
        bit = 1 if code == KEY_LEFTCTRL else 2
        return replace(state, ctrl=(state.ctrl | bit) if down else (state.ctrl & ~bit)), ""
    alt_key = code == KEY_LEFTALT or (code == KEY_RIGHTALT and not layout.has_altgr)
    if alt_key:
        if down:
            return replace(state, lalt=True, alt_digits=""), ""
        # Alt released: an Alt+keypad code is complete.
        text = alt_code_char(state.alt_digits, state.codepage) if state.alt_numpad else ""
        return replace(state, lalt=False, alt_digits=""), text
    if code == KEY_RIGHTALT:
        return replace(state, ralt=down), ""
    if not down:
        return state, ""
    if code == KEY_CAPSLOCK:
        return replace(state, caps=not state.caps), ""
    if code == KEY_NUMLOCK:
        return replace(state, numlock=not state.numlock), ""
    if code in _SILENT:
        return state, ""
    if state.lalt:
        if code in KEYPAD_DIGITS and state.alt_numpad:
            return replace(state, alt_digits=state.alt_digits + KEYPAD_DIGITS[code]), ""
        # Alt+anything else is a shortcut, never part of a code.
        return state, UNDECODABLE
    return _type(layout, state, code)


def _type(layout: Layout, state: KeyState, code: int) -> tuple[KeyState, str]:
    if code in _CONTROL_KEYS:
        ch = _CONTROL_KEYS[code]
    elif code in KEYPAD_DIGITS:
        ch = KEYPAD_DIGITS[code]
    elif code == KEY_KPDOT:
        ch = layout.keypad_decimal
    elif code in _KEYPAD_OPS:
        ch = _KEYPAD_OPS[code]
    else:
        ch = _level_char(layout, state, code)
        if state.ctrl:
            base = layout.keys.get(code, ("", "", ""))[0]
            return state, _ctrl_char(base.removeprefix(DEAD))
        if not ch:
            return replace(state, dead=""), UNDECODABLE
        if ch.startswith(DEAD):
            spacing = ch[len(DEAD):]
            if state.dead:  # two dead keys: the first one types itself
                return replace(state, dead=spacing), state.dead
            return replace(state, dead=spacing), ""
    if state.dead:
        return replace(state, dead=""), _compose(state.dead, ch)
    return state, ch


def decode_keys(layout: Layout, events: Iterable[tuple[int, int]], state: KeyState | None = None) -> str:
    """Decode a sequence of (code, value) EV_KEY events from a fresh (or given) state."""
    state = state or KeyState()
    out: list[str] = []
    for code, value in events:
        state, text = step(layout, state, code, value)
        out.append(text)
    return "".join(out)


# --- encoding: text → key events (tests, fixtures, and layout diagnosis) ----------------------

Stroke = tuple[tuple[int, ...], int]  # (modifier key codes held, key code)


def _stroke_table(layout: Layout) -> dict[str, list[Stroke]]:
    """Every character the layout types directly, with the strokes that type it (first = plainest)."""
    table: dict[str, list[Stroke]] = {}

    def add(ch: str, stroke: Stroke) -> None:
        if ch and not ch.startswith(DEAD):
            table.setdefault(ch, []).append(stroke)

    for code, (base, shifted, altgr) in sorted(layout.keys.items()):
        add(base, ((), code))
        add(shifted, ((KEY_LEFTSHIFT,), code))
        if layout.has_altgr:
            add(altgr, ((KEY_RIGHTALT,), code))
    for code, ch in sorted(_CONTROL_KEYS.items()):
        add(ch, ((), code))
    return table


def _dead_table(layout: Layout) -> dict[str, Stroke]:
    dead: dict[str, Stroke] = {}
    for code, levels in sorted(layout.keys.items()):
        # A key may have fewer levels than the three modifiers.
        for mods, ch in zip(((), (KEY_LEFTSHIFT,), (KEY_RIGHTALT,)), levels, strict=False):
            if ch.startswith(DEAD) and (mods != (KEY_RIGHTALT,) or layout.has_altgr):
                dead.setdefault(ch[len(DEAD):], (mods, code))
    return dead


def typeable(layout: Layout) -> frozenset[str]:
    """Characters `encode` can type in this layout (directly or through a dead key + space)."""
    return frozenset(_stroke_table(layout)) | frozenset(_dead_table(layout))


def encode(text: str, layout: Layout) -> list[tuple[int, int]]:
    """Key events (code, value) a scanner set to `layout` sends to type `text`.

    The inverse of decode_keys for every character in typeable(layout); raises ValueError for
    others. Used by the round-trip property tests and to build fixtures.
    """
    strokes = _stroke_table(layout)
    dead = _dead_table(layout)
    out: list[tuple[int, int]] = []
    for ch in text:
        if ch in strokes:
            out.extend(_press(strokes[ch][0]))
        elif ch in dead:
            out.extend(_press(dead[ch]))
            out.extend(_press(((), KEY_SPACE)))
        else:
            raise ValueError(f"{ch!r} cannot be typed in layout {layout.name!r}")
    return out


def _press(stroke: Stroke) -> Iterator[tuple[int, int]]:
    mods, code = stroke
    for m in mods:
        yield m, KEY_PRESS
    yield code, KEY_PRESS
    yield code, KEY_RELEASE
    for m in reversed(mods):
        yield m, KEY_RELEASE
