"""Fuzzing the rooms hostile bytes reach first: framer, keymap, config loader, command decoder.

Each property says what every input, however hostile, must come to: a frame or a reject with a
reason (framer), some text and a sane state (keymap), a config or a ConfigError naming file and
key (config loader), a command or a ProtocolError/CommandError (decoder) — never another
exception, never a hang.

CI runs a few hundred examples per property; the nightly size is at least 10⁵:

    HYPOTHESIS_PROFILE=nightly .venv/bin/python -m pytest -q tests/test_fuzz.py
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scannerd.command_table import COMMANDS, CommandError, CommandTable
from scannerd.config import ConfigError, load_config, parse_config
from scannerd.framing import Framer, FramingSpec, rejection_reason
from scannerd.model import Frame, Rejected
from scannerd.protocol import ProtocolError, decode_command
from scannerd.sources.keymap import LAYOUTS, KeyState, alt_code_char, decode_keys, step

EXAMPLES = {"ci": 300, "nightly": 100_000}.get(os.environ.get("HYPOTHESIS_PROFILE", "ci"), 300)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# --- framer -----------------------------------------------------------------------------------

TERMINATORS = ["\r", "\n", "\t", None]
# Scanner-ish characters, controls, multibyte and the replacement character a decoder makes.
CHARS = st.one_of(
    st.sampled_from(list("0123456789ABCDEFabcdef]Qd1:,-/ \r\n\t\x1d\x00\x1b\x7f\ufffd处方挂号")),
    st.characters(),
)


@FUZZ
@given(
    terminator=st.sampled_from(TERMINATORS),
    max_length=st.integers(8, 80),
    prefix=st.sampled_from(["", "<", "STX"]),
    suffix=st.sampled_from(["", ">", "\x03"]),
    aim=st.booleans(),
    chunks=st.lists(st.tuples(st.text(CHARS, max_size=40), st.integers(0, 300_000_000)), max_size=30),
)
def test_framer_turns_any_stream_into_frames_or_reasoned_rejects(
    terminator: str | None, max_length: int, prefix: str, suffix: str, aim: bool, chunks: list[tuple[str, int]]
) -> None:
    spec = FramingSpec(terminator=terminator, idle_gap_ms=50, prefix=prefix, suffix=suffix, max_length=max_length, aim=aim)
    framer = Framer("fuzz", spec)
    now = 1_000_000_000
    fed = 0
    out: list[Frame | Rejected] = []
    for text, gap in chunks:
        now += gap
        deadline = framer.deadline_ns()
        if deadline is not None and now >= deadline:
            out += framer.flush(now)  # the idle gap passed, as the source's timer would see
        out += framer.feed(text, now)
        fed += len(text)
    out += framer.flush(now + spec.idle_gap_ns + 1)
    out += framer.abort("device_removed", now + spec.idle_gap_ns + 2)
    assert not framer.pending
    for item in out:
        if isinstance(item, Frame):
            assert item.text and len(item.text) <= max_length
            assert rejection_reason(item.text, max_length) is None
            assert terminator is None or terminator not in item.text
            assert item.first_ns <= item.last_ns <= item.completed_ns
        else:
            assert isinstance(item, Rejected) and item.reason
    assert sum(len(i.text) for i in out if isinstance(i, Frame)) <= fed


# --- keymap -----------------------------------------------------------------------------------


@FUZZ
@given(
    layout=st.sampled_from(sorted(LAYOUTS)),
    events=st.lists(st.tuples(st.integers(0, 600), st.integers(-1, 3)), max_size=200),
)
def test_keymap_decodes_any_key_stream(layout: str, events: list[tuple[int, int]]) -> None:
    keys = LAYOUTS[layout]
    state = KeyState()
    typed: list[str] = []
    for code, value in events:
        state, ch = step(keys, state, code, value)
        assert isinstance(state, KeyState) and isinstance(ch, str)
        typed.append(ch)
    # The batch decoder agrees with the step-by-step one.
    assert decode_keys(keys, events) == "".join(typed)


@FUZZ
@given(digits=st.text(st.sampled_from("0123456789"), min_size=0, max_size=8), codepage=st.sampled_from(["cp936", "cp437", "gbk"]))
def test_alt_numpad_codes_never_raise(digits: str, codepage: str) -> None:
    assert isinstance(alt_code_char(digits, codepage), str)


# --- config loader ----------------------------------------------------------------------------

SCALARS = st.one_of(
    st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=30),
    st.sampled_from(["0660", "0777", "/dev/ttyACM0", "127.0.0.1:99999", "evdev", "serial", "hidpos", "CR", "utf-8",
                     "klingon", "us", "[::1]:9464", "H37020201175", "0c2e:0b61", "(a+)+b"]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                      max_leaves=12)
SECTION_KEYS = {
    "site": ["hospital", "hospital_name", "area"],
    "socket": ["path", "mode", "group", "client_buffer_bytes", "max_clients"],
    "policy": ["payment_ttl_s", "duplicate_window_ms", "other_ttl_s", "queue_limit"],
    "mqtt": ["host", "port", "username", "password", "password_file", "tls", "ca_file", "topic_prefix", "qos", "keepalive_s"],
    "metrics": ["listen"],
    "discovery": ["auto", "extra_vendor_ids"],
}
SCANNER_KEYS = ["name", "transport", "path", "baudrate", "parity", "stopbits", "encoding", "role", "area", "terminator",
                "idle_gap_ms", "max_length", "usb", "match_name", "layout", "vendor_ids", "grab", "aim"]


def _table(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=8)), VALUES, max_size=6)


# Site [[rule]] tables are the classifier's to fuzz (tests/test_classify_props.py).
CONFIGS = st.fixed_dictionaries(
    {},
    optional={
        **{name: st.one_of(_table(keys), VALUES) for name, keys in SECTION_KEYS.items()},
        "scanner": st.one_of(st.lists(_table(SCANNER_KEYS), max_size=3), VALUES),
        "colour": VALUES,
    },
)


@FUZZ
@given(data=CONFIGS)
def test_config_loader_accepts_or_names_file_and_key(data: dict[str, Any]) -> None:
    try:
        parse_config(data, "fuzz.toml")
    except ConfigError as e:
        assert e.file == "fuzz.toml" and e.message
        assert str(e).startswith("fuzz.toml: ")


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "config.toml"


TOML_BITS = st.sampled_from(["[site]\n", "[socket]\n", "[[scanner]]\n", "[metrics]\n", "[mqtt]\n", "[[rule]]\n", "a = ", "= ",
                             '"', "'", "[", "]", "{", "}", ",", "\n", "1", "true", "0x1f", "1e999", "nan", "\\u0000",
                             "\xff", "处", "#", "name = \"w1\"\n", "path = \"/dev/x\"\n", 'mode = "0777"\n'])


@FUZZ
@given(pieces=st.lists(st.one_of(TOML_BITS, st.text(max_size=10)), max_size=40), raw=st.binary(max_size=20))
def test_config_files_of_any_bytes_load_or_are_refused_cleanly(config_file: Path, pieces: list[str], raw: bytes) -> None:
    text = "".join(pieces)
    try:
        data = tomllib.loads(text)
        if "rule" in data or "classify" in data:
            return  # the classifier's own fuzz covers site rules
    except (tomllib.TOMLDecodeError, RecursionError):
        pass
    config_file.write_bytes(text.encode("utf-8", "surrogatepass") + raw)
    try:
        load_config(config_file)
    except ConfigError as e:
        assert e.file == str(config_file) and e.message


# --- command decoder --------------------------------------------------------------------------

JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.floats(), st.text(max_size=20)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
COMMAND_NAMES = [c.name for c in COMMANDS]


@FUZZ
@given(line=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_any_line_decodes_or_is_a_protocol_error(line: bytes) -> None:
    try:
        obj = decode_command(line)
    except ProtocolError as e:
        assert str(e)
        return
    assert isinstance(obj, dict) and isinstance(obj["cmd"], str)


@FUZZ
@given(name=st.sampled_from(COMMAND_NAMES), args=st.dictionaries(st.text(max_size=12), JSONISH, max_size=6),
       known=st.dictionaries(st.sampled_from(sorted({a for c in COMMANDS for a in c.args})), JSONISH, max_size=4))
def test_any_arguments_validate_or_are_a_command_error(name: str, args: dict[str, Any], known: dict[str, Any]) -> None:
    command = next(c for c in COMMANDS if c.name == name)
    obj = {**args, **known, "cmd": name}
    try:
        checked = CommandTable._arguments(command, obj)
    except CommandError as e:
        assert str(e)
        return
    assert set(checked) <= set(command.args)
