"""keymap: table tests of what each key event types, per layout and key state."""

from __future__ import annotations

import pytest

from scannerd.sources import keymap as k
from scannerd.sources.keymap import LAYOUTS, KeyState, decode_keys, step

US, UK, DE, FR = (LAYOUTS[n] for n in ("us", "uk", "de", "fr"))


def tap(code: int, *mods: int) -> list[tuple[int, int]]:
    return [(m, 1) for m in mods] + [(code, 1), (code, 0)] + [(m, 0) for m in reversed(mods)]


def keys(*taps: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [e for t in taps for e in t]


@pytest.mark.parametrize(
    ("layout", "events", "expected"),
    [
        (US, keys(tap(k.KEY_1), tap(k.KEY_0), tap(k.KEY_ENTER)), "10\r"),
        (US, keys(tap(k.KEY_A, k.KEY_LEFTSHIFT), tap(k.KEY_B), tap(k.KEY_C, k.KEY_RIGHTSHIFT)), "AbC"),
        (US, keys(tap(k.KEY_2, k.KEY_LEFTSHIFT), tap(k.KEY_SLASH), tap(k.KEY_SEMICOLON, k.KEY_LEFTSHIFT)), "@/:"),
        (US, keys(tap(k.KEY_TAB)), "\t"),
        (US, keys(tap(k.KEY_KPENTER)), "\r"),
        (UK, keys(tap(k.KEY_2, k.KEY_LEFTSHIFT), tap(k.KEY_3, k.KEY_LEFTSHIFT), tap(k.KEY_APOSTROPHE, k.KEY_LEFTSHIFT)), '"£@'),
        (UK, keys(tap(k.KEY_BACKSLASH), tap(k.KEY_102ND), tap(k.KEY_4, k.KEY_RIGHTALT)), "#\\€"),
        (DE, keys(tap(k.KEY_Y), tap(k.KEY_Z), tap(k.KEY_SLASH), tap(k.KEY_7, k.KEY_LEFTSHIFT)), "zy-/"),
        (DE, keys(tap(k.KEY_Q, k.KEY_RIGHTALT), tap(k.KEY_MINUS), tap(k.KEY_LEFTBRACE, k.KEY_LEFTSHIFT)), "@ßÜ"),
        (FR, keys(tap(k.KEY_1), tap(k.KEY_2), tap(k.KEY_1, k.KEY_LEFTSHIFT), tap(k.KEY_0, k.KEY_RIGHTALT)), "&é1@"),
        (FR, keys(tap(k.KEY_Q), tap(k.KEY_A), tap(k.KEY_M), tap(k.KEY_SEMICOLON), tap(k.KEY_W), tap(k.KEY_Z)), "aq,mzw"),
    ],
)
def test_layout_tables(layout: k.Layout, events: list[tuple[int, int]], expected: str) -> None:
    assert decode_keys(layout, events) == expected


def test_the_same_keys_differ_by_layout() -> None:
    # A German-configured scanner read as US: the classic wrong-character symptom, reproduced.
    events = keys(tap(k.KEY_Z, k.KEY_LEFTSHIFT), tap(k.KEY_SLASH), tap(k.KEY_2))
    assert decode_keys(DE, events) == "Y-2"
    assert decode_keys(US, events) == "Z/2"


def test_capslock_toggles_letters_only_and_shift_inverts_it() -> None:
    events = keys(tap(k.KEY_CAPSLOCK), tap(k.KEY_A), tap(k.KEY_1), tap(k.KEY_B, k.KEY_LEFTSHIFT),
                  tap(k.KEY_1, k.KEY_LEFTSHIFT), tap(k.KEY_CAPSLOCK), tap(k.KEY_C))
    assert decode_keys(US, events) == "A1b!c"


def test_capslock_applies_to_umlauts_but_not_to_the_azerty_digit_row() -> None:
    assert decode_keys(DE, keys(tap(k.KEY_CAPSLOCK), tap(k.KEY_SEMICOLON))) == "Ö"
    assert decode_keys(FR, keys(tap(k.KEY_CAPSLOCK), tap(k.KEY_2), tap(k.KEY_Q))) == "éA"


def test_key_repeat_and_releases_type_nothing() -> None:
    state, text = step(US, KeyState(), k.KEY_5, 1)
    assert text == "5"
    assert step(US, state, k.KEY_5, 2) == (state, "")
    assert step(US, state, k.KEY_5, 0)[1] == ""


@pytest.mark.parametrize("numlock", [True, False])
def test_keypad_digits_are_digits_whatever_numlock_says(numlock: bool) -> None:
    events = keys(*(tap(c) for c in (k.KEY_KP6, k.KEY_KP2, k.KEY_KP0, k.KEY_KP9, k.KEY_KPDOT, k.KEY_KPENTER)))
    assert decode_keys(US, events, KeyState(numlock=numlock)) == "6209.\r"


def test_numlock_presses_are_tracked() -> None:
    state, _ = step(US, KeyState(), k.KEY_NUMLOCK, 1)
    assert state.numlock is False
    state, _ = step(US, state, k.KEY_NUMLOCK, 0)
    assert state.numlock is False


def test_keypad_operators_and_german_decimal_comma() -> None:
    ops = keys(*(tap(c) for c in (k.KEY_KPSLASH, k.KEY_KPASTERISK, k.KEY_KPMINUS, k.KEY_KPPLUS)))
    assert decode_keys(US, ops) == "/*-+"
    assert decode_keys(DE, tap(k.KEY_KPDOT)) == ","


def test_ctrl_right_bracket_is_gs() -> None:
    # GS (0x1D) separates GS1 fields; wedge scanners send it as Ctrl+].
    assert decode_keys(US, tap(k.KEY_RIGHTBRACE, k.KEY_LEFTCTRL)) == "\x1d"
    assert decode_keys(US, tap(k.KEY_M, k.KEY_RIGHTCTRL)) == "\r"


def test_keys_no_code_contains_are_marked_undecodable() -> None:
    for code in (k.KEY_ESC, k.KEY_BACKSPACE, 103, 59):  # Esc, Backspace, Up, F1
        assert decode_keys(US, tap(code)) == k.UNDECODABLE
    # Alt+letter is a shortcut, not text.
    assert decode_keys(US, tap(k.KEY_F, k.KEY_LEFTALT)) == k.UNDECODABLE


def test_modifiers_and_locks_alone_type_nothing() -> None:
    for code in (k.KEY_LEFTSHIFT, k.KEY_RIGHTCTRL, k.KEY_LEFTMETA, k.KEY_CAPSLOCK, k.KEY_NUMLOCK, k.KEY_SCROLLLOCK):
        assert decode_keys(US, tap(code)) == ""


@pytest.mark.parametrize(
    ("digits", "expected"),
    # 0214 is a lone GBK lead byte; 01114112 is past the end of Unicode.
    [("65", "A"), ("20013", "中"), ("065", "A"), ("054992", "中"), ("0214", "\ufffd"), ("", ""), ("1114112", "\ufffd")],
)
def test_alt_code_char(digits: str, expected: str) -> None:
    # Without a leading 0: a Unicode code point; with one: the ANSI code page (cp936/GBK).
    assert k.alt_code_char(digits) == expected


def test_alt_numpad_types_one_character_on_alt_release() -> None:
    events = [(k.KEY_LEFTALT, 1), *keys(*(tap(c) for c in (k.KEY_KP0, k.KEY_KP5, k.KEY_KP4, k.KEY_KP9, k.KEY_KP9,
                                                         k.KEY_KP2))), (k.KEY_LEFTALT, 0)]
    assert decode_keys(US, events, KeyState(alt_numpad=True)) == "中"
    # Not enabled: the digits must not leak into the code as if they were data.
    assert decode_keys(US, events) == k.UNDECODABLE * 6


@pytest.mark.parametrize(
    ("layout", "events", "expected"),
    [
        (DE, keys(tap(k.KEY_GRAVE), tap(k.KEY_SPACE)), "^"),
        (DE, keys(tap(k.KEY_GRAVE), tap(k.KEY_E)), "ê"),
        (DE, keys(tap(k.KEY_EQUAL), tap(k.KEY_A, k.KEY_LEFTSHIFT)), "Á"),
        (DE, keys(tap(k.KEY_GRAVE), tap(k.KEY_1)), "^1"),
        (DE, keys(tap(k.KEY_GRAVE), tap(k.KEY_GRAVE)), "^"),  # second dead key still pending
        (FR, keys(tap(k.KEY_LEFTBRACE), tap(k.KEY_O)), "ô"),
        (FR, keys(tap(k.KEY_LEFTBRACE, k.KEY_LEFTSHIFT), tap(k.KEY_E)), "ë"),
        (FR, keys(tap(k.KEY_7, k.KEY_RIGHTALT), tap(k.KEY_SPACE)), "`"),
    ],
)
def test_dead_keys(layout: k.Layout, events: list[tuple[int, int]], expected: str) -> None:
    assert decode_keys(layout, events) == expected


def test_reset_forgets_held_keys_but_keeps_locks() -> None:
    state = KeyState(lshift=True, ctrl=1, lalt=True, caps=True, numlock=False, dead="^", alt_numpad=True)
    assert state.reset() == KeyState(caps=True, numlock=False, alt_numpad=True)


def test_encode_refuses_what_a_layout_cannot_type() -> None:
    with pytest.raises(ValueError, match="cannot be typed"):
        k.encode("ß", US)


def test_unknown_layout_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="known: us, uk, de, fr"):
        k.get_layout("jp")
