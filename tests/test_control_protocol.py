"""Control profiles, pure parts: encoders against the byte strings in SCANBOX.md, reply
demultiplexers (ACK / NAK / ENQ, reply frames, DATA= scans, garbage), parameter checks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scannerd.config import ConfigError
from scannerd.control import encode
from scannerd.control.controller import messages_for
from scannerd.control.families import SerialCounter
from scannerd.control.params import ControlParamError, check_amount, check_voice
from scannerd.control.profile import builtin_profiles, site_profiles
from scannerd.control.replies import (
    MAX_FRAME_BYTES,
    DataScan,
    Garbage,
    HoneywellDemux,
    LegacyDemux,
    NewlandBoxDemux,
    Reply,
    SsiDemux,
    UcsDemux,
)

PROFILES = builtin_profiles()
PROMPT = "请出示付款码"

# --- encoders: SCANBOX.md's byte strings ----------------------------------------------------


BOX_VECTORS = [
    (0, [b"SWITCH=ON", b"PACK=ON", b"INTERVAL=1500", b"AMOUNT=12.50"],
     b"<STX><0048><SET><04><00><AMOUNT=12.50><INTERVAL=1500><PACK=ON><SWITCH=ON><ETX><68>"),
    (1, [b"SWITCH=OFF"], b"<STX><0017><SET><01><01><SWITCH=OFF><ETX><30>"),
    (2, [b"AMOUNT=OFF"], b"<STX><0017><SET><01><02><AMOUNT=OFF><ETX><2D>"),
    (3, [b"VOICE=0012" + bytes.fromhex("c7ebb3f6cabeb8b6bfeec2eb")],
     b"<STX><0029><SET><01><03><VOICE=0012" + bytes.fromhex("c7ebb3f6cabeb8b6bfeec2eb") + b"><ETX><5C>"),
]


@pytest.mark.parametrize(("serial", "tags", "expected"), BOX_VECTORS)
def test_newland_box_frames_match_scanbox_md(serial: int, tags: list[bytes], expected: bytes) -> None:
    assert encode.newland_box_frame("SET", serial, tags) == expected


def test_newland_box_profile_verbs_give_the_sdk_frames() -> None:
    box = PROFILES["newland-box"]
    serials = SerialCounter()
    arm = messages_for(box, [("enable", {}), ("amount", {"amount_fen": 1250})], serials)
    off = messages_for(box, [("disable", {})], serials)
    amount_off = messages_for(box, [("amount_off", {})], serials)
    voice = messages_for(box, [("voice", {"voice": PROMPT})], serials)
    assert [m.data for m in arm + off + amount_off + voice] == [v[2] for v in BOX_VECTORS]
    assert [m.serial for m in arm + off + amount_off + voice] == [0, 1, 2, 3]
    assert arm[0].verbs == ("enable", "amount")


def test_newland_box_serial_wraps_after_99() -> None:
    serials = SerialCounter()
    taken = [serials.take() for _ in range(101)]
    assert taken[99] == 99 and taken[100] == 0


def test_ucs_uses_temporary_storage_only() -> None:
    ucs = PROFILES["newland-ucs"]
    [on] = messages_for(ucs, [("enable", {})], SerialCounter())
    # SCANBOX.md gives @SCNTRG1 (permanent): 7E 01 30 30 30 30 40 53 43 4E 54 52 47 31 3B 03.
    permanent = bytes.fromhex("7E 01 30 30 30 30 40 53 43 4E 54 52 47 31 3B 03")
    assert on.data == permanent.replace(b"@", b"#")
    [lock] = messages_for(ucs, [("lock_setup_codes", {})], SerialCounter())
    assert lock.data == b"~\x010000#SETUPE0;\x03"
    assert encode.ucs_command([b"SCNTRG1", b"SETUPE0"]) == b"~\x010000#SCNTRG1;SETUPE0;\x03"


def test_honeywell_volatile_menu_command() -> None:
    hw = PROFILES["honeywell"]
    [on] = messages_for(hw, [("enable", {})], SerialCounter())
    assert on.data == bytes.fromhex("16 4D 0D 54 52 47 4D 4F 44 33 21")  # SYN M CR TRGMOD3!
    [off] = messages_for(hw, [("disable", {})], SerialCounter())
    assert off.data == b"\x16M\rTRGMOD0!"


def test_legacy_open_and_close_are_the_yuanjingda_strings() -> None:
    legacy = PROFILES["newland-legacy"]
    on = messages_for(legacy, [("enable", {})], SerialCounter())
    off = messages_for(legacy, [("disable", {})], SerialCounter())
    assert b"".join(m.data for m in on) == b"$$$$#99900116;%%%%$$$$#99900035;%%%%"
    assert b"".join(m.data for m in off) == b"$$$$#99900116;%%%%$$$$#99900036;%%%%"
    assert len(on) == 2  # one reply per command


SSI_VECTORS = [
    ("START_DECODE", "04 E4 04 00 FF 14"),
    ("STOP_DECODE", "04 E5 04 00 FF 13"),
    ("SCAN_ENABLE", "04 E9 04 00 FF 0F"),
    ("SCAN_DISABLE", "04 EA 04 00 FF 0E"),
    ("LED_ON", "05 E7 04 00 01 FF 0F"),
    ("LED_OFF", "05 E8 04 00 01 FF 0E"),
]


@pytest.mark.parametrize(("name", "hexbytes"), SSI_VECTORS)
def test_ssi_packets_match_scanbox_md(name: str, hexbytes: str) -> None:
    opcode, data = encode.SSI_OPCODES[name]
    assert encode.ssi_packet(opcode, data) == bytes.fromhex(hexbytes)


def test_ssi_profile_enable_sends_scan_enable_then_start_decode() -> None:
    msgs = messages_for(PROFILES["zebra-ssi"], [("enable", {})], SerialCounter())
    assert [m.data.hex(" ").upper() for m in msgs] == ["04 E9 04 00 FF 0F", "04 E4 04 00 FF 14"]


def test_every_builtin_profile_names_its_source_and_can_switch_reading() -> None:
    assert set(PROFILES) >= {"newland-box", "newland-ucs", "newland-legacy", "honeywell", "zebra-ssi"}
    for p in PROFILES.values():
        assert p.source.strip() and p.has("enable") and p.has("disable"), p.name


# --- Newland box replies and DATA= scans -----------------------------------------------------


def box_reply(serial: int, code: str = "00") -> bytes:
    return encode.newland_box_frame("SET", serial, [code.encode()])


def box_scan(code: str, serial: int = 7) -> bytes:
    return encode.newland_box_frame("SET", serial, [b"DATA=" + code.encode(), b"00"])


def test_box_reply_frame_is_consumed_and_read() -> None:
    d = NewlandBoxDemux()
    out = d.feed(box_reply(5))
    assert out.passthrough == b"" and out.items == [Reply("ack", 5, "00")]
    out = d.feed(box_reply(6, "01"))
    assert out.items == [Reply("error", 6, "01")] and not out.items[0].ok  # type: ignore[union-attr]


def test_box_data_frame_is_a_scan_not_a_reply() -> None:
    out = NewlandBoxDemux().feed(box_scan("134567890123456789"))
    assert out.items == [DataScan(b"134567890123456789")] and out.passthrough == b""


def test_box_data_value_with_a_bracket_survives() -> None:
    out = NewlandBoxDemux().feed(box_scan("RX>12<34"))
    assert out.items == [DataScan(b"RX>12<34")]


def test_box_bad_lrc_and_bad_length_are_garbage_not_scans() -> None:
    good = box_scan("134567890123456789")
    bad_lrc = good[:-3] + (b"00" if good[-3:-1] != b"00" else b"11") + b">"
    out = NewlandBoxDemux().feed(bad_lrc)
    assert [type(i) for i in out.items] == [Garbage] and out.items[0].reason == "control_frame_bad_lrc"  # type: ignore[union-attr]
    # A length field that disagrees with the content (LRC recomputed so only the length is wrong).
    body = good[:-4].replace(b"<0032>", b"<0033>", 1)
    assert body != good[:-4]
    out = NewlandBoxDemux().feed(body + b"<%02X>" % encode.xor_lrc(body))
    assert out.items[0].reason == "control_frame_bad_length"  # type: ignore[union-attr]
    assert out.passthrough == b""


def test_box_plain_scans_pass_even_with_angle_brackets() -> None:
    d = NewlandBoxDemux()
    out = d.feed(b"<ST12345\r\n")
    assert out.passthrough == b"<ST12345\r\n" and out.items == []
    out = d.feed(b"A<B\r\n")
    assert out.passthrough == b"A<B\r\n"


def test_box_partial_header_is_held_then_released() -> None:
    d = NewlandBoxDemux()
    out = d.feed(b"1234<ST")
    assert out.passthrough == b"1234" and d.holding
    assert d.release().passthrough == b"<ST" and not d.holding


def test_box_incomplete_frame_released_as_garbage_not_as_scan_bytes() -> None:
    d = NewlandBoxDemux()
    assert d.feed(box_scan("134567890123456789")[:20]).passthrough == b""
    out = d.release()
    assert out.passthrough == b"" and isinstance(out.items[0], Garbage)


def test_box_runaway_frame_is_bounded() -> None:
    d = NewlandBoxDemux()
    out = d.feed(b"<STX>" + b"x" * 5000)
    assert isinstance(out.items[0], Garbage) and out.items[0].reason == "control_frame_too_long"
    assert d.feed(b"134\r\n").passthrough == b"134\r\n"


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.one_of(st.from_regex(r"\A[0-9A-Z<>]{1,30}\Z").map(lambda c: ("plain", c)),
                       st.integers(0, 99).map(lambda n: ("reply", n)),
                       st.from_regex(r"\A[0-9]{18}\Z").map(lambda c: ("data", c))), max_size=12),
    st.data(),
)
def test_box_stream_property_every_scan_exactly_once_no_control_bytes(items: list[tuple[str, object]], data: st.DataObject) -> None:
    """Plain scans, replies and DATA= frames interleaved, cut at random points: the plain scans
    come through byte for byte, every DATA= code once, every reply once, nothing else."""
    stream = b""
    plain = b""
    for kind, value in items:
        if kind == "plain":
            chunk = str(value).replace("<STX>", "<STY>").encode() + b"\r\n"
            plain += chunk
        elif kind == "reply":
            chunk = box_reply(int(value))  # type: ignore[call-overload]
        else:
            chunk = box_scan(str(value))
        stream += chunk
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    d = NewlandBoxDemux()
    passthrough, got = b"", []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out = d.feed(stream[a:b])
        passthrough += out.passthrough
        got += out.items
    out = d.release()
    passthrough += out.passthrough
    got += out.items
    assert passthrough == plain
    assert [i.data.decode() for i in got if isinstance(i, DataScan)] == [str(v) for k, v in items if k == "data"]
    assert [i.serial for i in got if isinstance(i, Reply)] == [v for k, v in items if k == "reply"]
    assert not any(isinstance(i, Garbage) for i in got)


# --- UCS, Honeywell, legacy, SSI replies ------------------------------------------------------


def test_ucs_reply_ack_nak_enq_and_garbage() -> None:
    d = UcsDemux()
    out = d.feed(b"\x02\x010000#SCNTRG1\x06;\x03")
    assert out.items == [Reply("ack")] and out.passthrough == b""
    assert d.feed(b"\x15").items == [Reply("nak")]
    assert d.feed(b"\x05").items == [Reply("enq")]
    out = d.feed(b"\x02\x010000#SCNTRG9\x15;\x03")
    assert out.items == [Reply("nak")]
    out = d.feed(b"\x02\x010000#SCNTRG1;\x03")  # no status byte at all
    assert out.items == [Reply("error")]
    out = d.feed(b"\x02AB12\x03\r")  # an STX-prefixed scan is not a reply
    assert out.passthrough == b"\x02AB12\x03\r" and out.items == []
    out = d.feed(b"6912345678904\r")
    assert out.passthrough == b"6912345678904\r"


def test_honeywell_echo_consumed_with_status() -> None:
    d = HoneywellDemux()
    d.expect()
    out = d.feed(b"TRGMOD3\x06!")
    assert out.items == [Reply("ack")] and out.passthrough == b""
    d.expect()
    assert d.feed(b"TRGMOD3\x06;BADTAG\x05!").items == [Reply("enq")]
    d.expect()
    assert d.feed(b"TRGMOD3\x15!").items == [Reply("nak")]


def test_honeywell_scan_while_waiting_for_a_reply_is_given_back_whole() -> None:
    d = HoneywellDemux()
    d.expect()
    out = d.feed(b"134567890123456789")
    assert out.passthrough == b"" and d.holding
    out = d.feed(b"\rTRGMOD3\x06!")
    assert out.passthrough == b"134567890123456789\r" and out.items == [Reply("ack")]


def test_honeywell_stray_status_bytes_never_reach_the_framer() -> None:
    d = HoneywellDemux()
    out = d.feed(b"12\x0634\x155\r")
    assert out.passthrough == b"12345\r" and [i.status for i in out.items] == ["ack", "nak"]  # type: ignore[union-attr]


def test_legacy_replies() -> None:
    d = LegacyDemux()
    d.expect()
    assert d.feed(b"@@@@!99900035;^^^^").items == [Reply("ack")]
    d.expect()
    assert d.feed(b"@@@@?99900035;^^^^").items == [Reply("nak")]
    d.expect()
    out = d.feed(b"6912345678904\r")
    assert out.passthrough == b"6912345678904\r" and out.items == []


def test_ssi_ack_nak_and_bad_checksum() -> None:
    d = SsiDemux()
    ack = encode.ssi_packet(encode.SSI_ACK, source=encode.SSI_DECODER)
    nak = encode.ssi_packet(encode.SSI_NAK, b"\x01", source=encode.SSI_DECODER)
    out = d.feed(b"1234" + ack + b"56\r" + nak)
    assert out.passthrough == b"123456\r" and [i.status for i in out.items] == ["ack", "nak"]  # type: ignore[union-attr]
    out = d.feed(ack[:3])
    assert out.passthrough == b"" and d.holding
    out = d.feed(ack[3:])
    assert out.items == [Reply("ack", code="")]
    broken = ack[:-1] + bytes([ack[-1] ^ 1])
    out = d.feed(broken)
    assert out.items == [] and out.passthrough == broken


# --- parameters -----------------------------------------------------------------------------


@pytest.mark.parametrize(("amount", "message"), [
    (True, "expected an integer number of fen"),
    ("12.50", "expected an integer number of fen"),
    (12.5, "expected an integer number of fen"),
    (-1, "expected 0 to 999999"),
    (1_000_000, "expected 0 to 999999 (9999.99 yuan"),
])
def test_bad_amounts_are_refused_with_the_reason(amount: object, message: str) -> None:
    with pytest.raises(ControlParamError) as e:
        check_amount(amount, PROFILES["newland-box"])
    assert e.value.param == "amount_fen" and message in str(e.value)


def test_amount_limit_from_config_and_good_amounts() -> None:
    box = PROFILES["newland-box"]
    assert check_amount(999_999, box) == 999_999 and check_amount(0, box) == 0
    with pytest.raises(ControlParamError, match="expected 0 to 50000"):
        check_amount(50_001, box, limit_fen=50_000)


@pytest.mark.parametrize(("voice", "message"), [
    ("", "empty"),
    ("   ", "empty"),
    ("请出示\r付款码", "printable"),
    ("<ETX>", "without '<' or '>'"),
    ("请出示付款码😀", "can speak (gbk)"),
    ("请" * 51, "at most 100 bytes"),
    (12, "expected text"),
])
def test_bad_prompts_are_refused_with_the_reason(voice: object, message: str) -> None:
    with pytest.raises(ControlParamError) as e:
        check_voice(voice, PROFILES["newland-box"])
    assert e.value.param == "voice" and message in str(e.value)


def test_prompt_at_the_limit_is_taken() -> None:
    assert check_voice("请" * 50, PROFILES["newland-box"]) == "请" * 50


# --- site profiles ------------------------------------------------------------------------


def test_site_profile_derived_from_a_builtin() -> None:
    profiles = site_profiles([{"name": "box-blue", "base": "newland-box", "verbs": {"good": ["LED=ON_B"]}}], "c.toml", PROFILES)
    blue = profiles["box-blue"]
    assert blue.family == "newland-box" and blue.verbs["good"] == ("LED=ON_B",) and blue.verbs["enable"] == PROFILES["newland-box"].verbs["enable"]
    assert blue.text_limit_bytes == 100


@pytest.mark.parametrize(("table", "message"), [
    ({"name": "x", "family": "acme", "source": "s"}, 'control.profile[1].family: expected one of newland-box | newland-ucs | honeywell | newland-legacy | zebra-ssi, got "acme"'),
    ({"name": "x", "family": "newland-ucs", "source": "s", "verbs": {"enable": ["FACDEF"]}}, 'control.profile[1].verbs.enable[1]: expected a tag with its data'),
    ({"name": "x", "family": "honeywell", "source": "s", "verbs": {"enable": ["232BAD9"]}}, "control.profile[1].verbs.enable[1]: expected a menu command"),
    ({"name": "x", "family": "honeywell", "source": "s", "verbs": {"enable": ["TRGMOD3."]}}, "control.profile[1].verbs.enable[1]"),
    ({"name": "x", "family": "newland-box", "source": "s", "verbs": {"enable": ["PREFIX=0002AB"]}}, "control.profile[1].verbs.enable[1]: expected a tag TAG=VALUE"),
    ({"name": "x", "family": "newland-box", "source": "s", "verbs": {"enable": ["SWITCH={voice}"]}}, "expected {voice} only in the voice verb"),
    ({"name": "x", "family": "newland-ucs", "source": "s", "verbs": {"reboot": ["SCNTRG1"]}}, "control.profile[1].verbs.reboot: expected a verb"),
    ({"name": "x", "family": "newland-box", "source": "s", "verbs": {"voice": ["VOICE={voice}"]}}, "control.profile[1].text_limit_bytes: expected the device's prompt limit"),
    ({"name": "x", "family": "newland-box"}, "control.profile[1].source: expected where the commands come from"),
    ({"name": "newland-box", "base": "newland-box"}, 'control.profile[1].name: expected a new name, "newland-box" is already a profile'),
    ({"name": "x", "base": "nope"}, "control.profile[1].base: expected a known profile"),
    ({"name": "x", "family": "zebra-ssi", "source": "s", "timeout_ms": 0}, "control.profile[1].timeout_ms: expected an integer from 10 to 30000, got 0"),
    ({"name": "x", "family": "zebra-ssi", "source": "s", "colour": "red"}, "control.profile[1].colour: unknown key"),
])
def test_bad_site_profiles_name_file_key_and_expectation(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        site_profiles([table], "c.toml", PROFILES)
    assert str(e.value).startswith("c.toml: ") and message in str(e.value), str(e.value)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.from_regex(r"\A[0-9A-Z]{1,30}\Z").map(lambda c: ("plain", c)),
                          st.sampled_from(["ack", "nak", "enq"]).map(lambda s: ("reply", s))), max_size=12),
       st.data())
def test_ucs_and_ssi_streams_property_scans_exactly_once(items: list[tuple[str, str]], data: st.DataObject) -> None:
    """UCS reply frames / bare status bytes and SSI ACK/NAK packets between scans, cut anywhere:
    the scans come through byte for byte and every reply is read once."""
    ucs_reply = {"ack": b"\x02\x010000#SCNTRG1\x06;\x03", "nak": b"\x15", "enq": b"\x02\x010000#SCNTRG1\x05;\x03"}
    ssi_reply = {"ack": encode.ssi_packet(encode.SSI_ACK, source=encode.SSI_DECODER),
                 "nak": encode.ssi_packet(encode.SSI_NAK, b"\x02", source=encode.SSI_DECODER),
                 "enq": encode.ssi_packet(encode.SSI_NAK, b"\x06", source=encode.SSI_DECODER)}
    # UCS "nak" is a bare NAK byte; SSI has no ENQ (a NAK with another cause byte stands in).
    for make, replies, expected in [(UcsDemux, ucs_reply, lambda s: s), (SsiDemux, ssi_reply, lambda s: "ack" if s == "ack" else "nak")]:
        stream, plain = b"", b""
        for kind, value in items:
            chunk = value.encode() + b"\r\n" if kind == "plain" else replies[value]
            plain += chunk if kind == "plain" else b""
            stream += chunk
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
        d = make()
        passthrough, got = b"", []
        for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            out = d.feed(stream[a:b])
            passthrough += out.passthrough
            got += out.items
        out = d.release()
        passthrough += out.passthrough
        got += out.items
        assert passthrough == plain, make
        assert [i.status for i in got if isinstance(i, Reply)] == [expected(v) for k, v in items if k == "reply"]


@pytest.mark.parametrize(("make", "expecting", "hostile"), [
    (NewlandBoxDemux, False, b"<STX>" + b"<0001><SET>" * 6000),
    (NewlandBoxDemux, False, b"<ST<ST<S<" * 8000),
    (UcsDemux, False, b"\x02\x010000" + b"#SCNTRG1" * 8000),
    (HoneywellDemux, True, b"TRGMOD3" * 10000),
    (LegacyDemux, True, b"@@@@!999" * 10000),
    (SsiDemux, False, b"\x04\xd0\x00\x00\x00" * 12000),
])
def test_hostile_streams_are_bounded_and_nothing_is_lost(make: type, expecting: bool, hostile: bytes) -> None:
    """Bytes that keep looking like the start of a reply never pile up: at most one frame's worth
    is held, and every byte comes back as scan bytes or inside a garbage item, none dropped
    (status bytes aside, which are never scan data)."""
    d = make()
    if expecting:
        d.expect()
    out_bytes = 0
    for i in range(0, len(hostile), 512):
        out = d.feed(hostile[i : i + 512])
        out_bytes += len(out.passthrough) + sum(len(g.data) for g in out.items if isinstance(g, Garbage))
        assert not any(isinstance(item, (Reply, DataScan)) for item in out.items)
    last = d.release()
    held = len(last.passthrough) + sum(len(g.data) for g in last.items if isinstance(g, Garbage))
    assert held <= MAX_FRAME_BYTES + 512
    assert out_bytes + held == len(hostile)
