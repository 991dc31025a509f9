"""keymap properties: every layout round-trips text → key events → text, also when the scanner
uses CapsLock instead of Shift, interleaves key repeats, or another device decodes in parallel."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scannerd.sources import keymap as k
from scannerd.sources.keymap import LAYOUTS, KeyState, decode_keys, encode, step, typeable


def alphabet(name: str) -> list[str]:
    return sorted(typeable(LAYOUTS[name]))


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_round_trip(name: str, data: st.DataObject) -> None:
    layout = LAYOUTS[name]
    text = data.draw(st.text(alphabet=alphabet(name), max_size=60))
    assert decode_keys(layout, encode(text, layout)) == text


def _caps_encode(text: str, layout: k.Layout) -> list[tuple[int, int]]:
    """A scanner in 'CapsLock on' mode: capitals typed without Shift, lower case with Shift."""
    out: list[tuple[int, int]] = [(k.KEY_CAPSLOCK, 1), (k.KEY_CAPSLOCK, 0)]
    for ch in text:
        ev = encode(ch, layout)
        entry = layout.keys.get(ev[-1][0] if ev[-1][0] != k.KEY_LEFTSHIFT else ev[-2][0])
        is_letter = entry is not None and entry[0].isalpha() and len(entry[0]) == 1 and entry[1] == entry[0].upper()
        if is_letter and ch.isalpha() and len(ev) in (2, 4):
            code = ev[1][0] if len(ev) == 4 else ev[0][0]
            shift = ch == entry[0]  # lower case needs Shift while Caps is on
            ev = ([(k.KEY_LEFTSHIFT, 1)] if shift else []) + [(code, 1), (code, 0)] + ([(k.KEY_LEFTSHIFT, 0)] if shift else [])
        out.extend(ev)
    out += [(k.KEY_CAPSLOCK, 1), (k.KEY_CAPSLOCK, 0)]
    return out


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_round_trip_with_capslock_mode(name: str, data: st.DataObject) -> None:
    layout = LAYOUTS[name]
    text = data.draw(st.text(alphabet=alphabet(name), max_size=40))
    assert decode_keys(layout, _caps_encode(text, layout)) == text


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet="0123456789ABCDEFGHJKLMNPQRSTUVWXYZabc", max_size=40), data=st.data())
def test_repeats_do_not_add_characters(text: str, data: st.DataObject) -> None:
    events = encode(text, LAYOUTS["us"])
    noisy: list[tuple[int, int]] = []
    for code, value in events:
        noisy.append((code, value))
        if value == 1 and data.draw(st.booleans()):
            noisy.append((code, 2))
    assert decode_keys(LAYOUTS["us"], noisy) == text


@settings(max_examples=100, deadline=None)
@given(a=st.text(alphabet="0123456789ABCDEF", max_size=20), b=st.text(alphabet="0123456789abcdef", max_size=20),
       data=st.data())
def test_two_devices_interleaved_keep_their_own_state(a: str, b: str, data: st.DataObject) -> None:
    # One KeyState per device: a Shift held on scanner A never capitalises scanner B's letters.
    us = LAYOUTS["us"]
    ea, eb = encode(a, us), encode(b, us)
    states = [KeyState(), KeyState()]
    out = ["", ""]
    ia = ib = 0
    while ia < len(ea) or ib < len(eb):
        pick_a = ib >= len(eb) or (ia < len(ea) and data.draw(st.booleans()))
        dev, (code, value) = (0, ea[ia]) if pick_a else (1, eb[ib])
        if pick_a:
            ia += 1
        else:
            ib += 1
        states[dev], text = step(us, states[dev], code, value)
        out[dev] += text
    assert out == [a, b]


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@settings(max_examples=200, deadline=None)
@given(events=st.lists(st.tuples(st.integers(0, 255), st.sampled_from([0, 1, 2])), max_size=80))
def test_any_event_stream_decodes_without_error(name: str, events: list[tuple[int, int]]) -> None:
    # Fuzz: random codes and values never raise, and never type control characters other than
    # the terminators and C0 codes Ctrl produces.
    text = decode_keys(LAYOUTS[name], events)
    assert isinstance(text, str)
    assert k.DEAD not in text
