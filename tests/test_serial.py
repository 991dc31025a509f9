"""SerialSource on real pseudo-terminals: pacing, split reads, garbage, unplug, reopen."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from scannerd.config import ScannerConfig
from scannerd.framing import FramingSpec
from scannerd.model import DeviceInfo, DeviceStateEvent, Frame, Rejected
from scannerd.sources.serial import SerialSource

from helpers import PtyScanner, alipay_code, wechat_code


class Harness:
    def __init__(self, tmp_path: Path, spec: FramingSpec | None = None, **scanner: object) -> None:
        self.pty = PtyScanner(tmp_path)
        self.items: asyncio.Queue[Frame | Rejected] = asyncio.Queue()
        self.states: asyncio.Queue[DeviceStateEvent] = asyncio.Queue()
        cfg = ScannerConfig(name="w1", path=str(self.pty.link), **scanner)  # type: ignore[arg-type]
        device = DeviceInfo("w1", "serial", "outpatient", "window", str(self.pty.link))
        self.source = SerialSource(device, spec or FramingSpec(), self.items.put_nowait, self.states.put_nowait, cfg)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.source.run())
        state = await asyncio.wait_for(self.states.get(), 5)
        assert state.state == "present"
        self.pty.release_slave()

    async def write(self, data: bytes, baud: int | None = 9600) -> None:
        await asyncio.to_thread(self.pty.write, data, baud)

    async def item(self, timeout: float = 5) -> Frame | Rejected:
        return await asyncio.wait_for(self.items.get(), timeout)

    async def state(self, timeout: float = 5) -> DeviceStateEvent:
        return await asyncio.wait_for(self.states.get(), timeout)

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        self.pty.close()


@pytest.mark.parametrize("baud", [9600, 115200])
async def test_paced_scans_arrive_as_frames_with_scan_time(tmp_path: Path, baud: int) -> None:
    h = Harness(tmp_path, baudrate=baud)
    await h.start()
    codes = [wechat_code(), alipay_code(length=24)]
    for code in codes:
        await h.write(f"]Q1{code}\r".encode(), baud)
    frames = [await h.item(), await h.item()]
    assert [f.text for f in frames] == codes  # type: ignore[union-attr]
    assert all(isinstance(f, Frame) and f.symbology == "qr" for f in frames)
    # 22 characters at 9600 8N1 take ~21 ms on the wire; the frame's scan time must show it.
    if baud == 9600:
        assert frames[0].scan_ms > 10  # type: ignore[union-attr]
    await h.stop()


async def test_frame_split_across_reads_and_utf8_split_across_reads(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start()
    data = "01,10,青岛市,12345\r".encode()
    cut = data.index("青".encode()) + 1  # inside a multi-byte character
    await h.write(data[:cut], None)
    await asyncio.sleep(0.02)
    await h.write(data[cut:], None)
    f = await h.item()
    assert isinstance(f, Frame) and f.text == "01,10,青岛市,12345"
    await h.stop()


async def test_gbk_scanner(tmp_path: Path) -> None:
    h = Harness(tmp_path, encoding="gbk")
    await h.start()
    await h.write("市立医院\r".encode("gbk"), None)
    f = await h.item()
    assert isinstance(f, Frame) and f.text == "市立医院"
    await h.stop()


async def test_garbage_is_rejected_and_next_scan_is_fine(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start()
    await h.write(b"\x00\x01\x02\xff\xfe\r", None)
    r = await h.item()
    assert isinstance(r, Rejected) and r.reason in {"non_printable", "undecodable"}
    code = wechat_code()
    await h.write(f"{code}\r".encode())
    f = await h.item()
    assert isinstance(f, Frame) and f.text == code
    await h.stop()


async def test_unplug_after_frame_loses_nothing(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start()
    code = wechat_code()
    await h.write(f"{code}\r".encode())
    f = await h.item()
    assert isinstance(f, Frame) and f.text == code
    h.pty.unplug()
    state = await h.state()
    assert state.state == "absent"
    assert h.items.empty()
    await h.stop()


async def test_unplug_mid_frame_is_a_device_removed_reject(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start()
    await h.write(b"134567", None)
    await asyncio.sleep(0.02)  # let the daemon read the partial frame first
    h.pty.unplug()
    r = await h.item()
    assert isinstance(r, Rejected) and r.reason == "device_removed"
    assert (await h.state()).state == "absent"
    await h.stop()


async def test_reopens_when_the_by_id_link_comes_back(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start()
    h.pty.unplug()
    assert (await h.state()).state == "absent"
    h.pty.replug()  # a new pty behind the same link: a USB scanner coming back
    assert (await h.state()).state == "present"
    h.pty.release_slave()
    code = alipay_code()
    await h.write(f"{code}\r".encode())
    f = await h.item()
    assert isinstance(f, Frame) and f.text == code
    await h.stop()


async def test_missing_device_at_start_is_absent_then_present(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.pty.unplug()
    task = asyncio.create_task(h.source.run())
    assert (await h.state()).state == "absent"
    h.pty.replug()
    assert (await h.state()).state == "present"
    h.pty.release_slave()
    await h.write(b"RX0000000001\r")
    f = await h.item()
    assert isinstance(f, Frame) and f.text == "RX0000000001"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    h.pty.close()


async def test_idle_gap_frames_a_scanner_without_terminator(tmp_path: Path) -> None:
    h = Harness(tmp_path, spec=FramingSpec(terminator=None, idle_gap_ms=30))
    await h.start()
    code = wechat_code()
    await h.write(code.encode())
    f = await h.item()
    assert isinstance(f, Frame) and f.text == code and f.ended_by == "idle"
    await h.stop()


def _fill_fd_gaps() -> list[int]:
    """Open /dev/null into every free fd number below the highest open one, so the next fd
    closed is the lowest free one and the next fd opened gets exactly that number."""
    top = max(int(n) for n in os.listdir("/proc/self/fd"))
    fillers: list[int] = []
    while (fd := os.open(os.devnull, os.O_RDONLY)) < top:
        fillers.append(fd)
    os.close(fd)
    return fillers


async def test_a_scanner_reopening_on_the_fd_number_another_just_closed_keeps_scanning(tmp_path: Path) -> None:
    """11.6: the unplugged scanner's reader removal must not hit the new owner of its fd number."""
    (tmp_path / "a").mkdir()
    a = Harness(tmp_path / "a")
    b_dir = tmp_path / "b"
    b_dir.mkdir()
    b = Harness(b_dir)
    hidden = b.pty.link.with_suffix(".hidden")
    os.rename(b.pty.link, hidden)  # B's device is not there yet
    fillers: list[int] = []
    try:
        await a.start()
        assert a.source._port is not None
        a_fd = a.source._port.fileno()

        def on_a_state(ev: DeviceStateEvent) -> None:
            a.states.put_nowait(ev)
            if ev.state == "absent":
                # In the same loop turn as A's close, B's device appears and its source starts
                # (as discovery does on a device-added event): B opens on the fd number A gave back.
                os.rename(hidden, b.pty.link)
                b.task = asyncio.get_running_loop().create_task(b.source.run())

        a.source._state = on_a_state
        fillers += _fill_fd_gaps()
        a.pty.unplug()
        fillers.append(os.open(os.devnull, os.O_RDONLY))  # take back the number of A's pty master
        assert (await a.state()).state == "absent"
        assert (await b.state()).state == "present"
        assert b.source._port is not None
        assert b.source._port.fileno() == a_fd, "the test needs B on A's old fd number"
        b.pty.release_slave()
        code = wechat_code()
        await b.write(f"{code}\r".encode())
        f = await b.item(timeout=10)
        assert isinstance(f, Frame) and f.text == code
    finally:
        for fd in fillers:
            os.close(fd)
    await b.stop()
    await a.stop()


def default_spec(**scanner: object) -> FramingSpec:
    from scannerd.service import framing_spec

    return framing_spec(ScannerConfig(name="w1", path="/dev/null", **scanner))  # type: ignore[arg-type]


async def test_a_read_stalled_past_the_default_idle_gap_never_passes_its_tail_as_a_scan(tmp_path: Path) -> None:
    """11.3: the daemon's loop (or the line) stalls mid-code for longer than the idle gap."""
    h = Harness(tmp_path, spec=default_spec(terminator="CR"))
    await h.start()
    code = "A" + "0123456789ABCDEF" * 3  # 49 characters, 医保码-like
    await h.write(code[:12].encode(), None)
    head = await h.item()  # comes only once the idle gap has passed: the stall is real
    assert isinstance(head, Rejected) and head.reason == "no_terminator" and head.text == code[:12]
    await h.write(f"{code[12:]}\r".encode(), None)
    tail = await h.item()
    assert isinstance(tail, Rejected) and tail.reason == "partial_read" and tail.text == code[12:]
    good = wechat_code()
    await h.write(f"{good}\r".encode())
    f = await h.item()
    assert isinstance(f, Frame) and f.text == good  # nothing came out between the tail and this
    await h.stop()


@pytest.mark.parametrize("encoding", ["utf-8", "gbk"])
async def test_a_character_cut_by_the_idle_gap_is_a_reject_and_never_glued_to_the_next_read(
    tmp_path: Path, encoding: str
) -> None:
    """11.5: terminator none; the read stops inside a multibyte character."""
    h = Harness(tmp_path, spec=default_spec(terminator="none"), encoding=encoding)
    await h.start()
    data = "P张三医保".encode(encoding)
    cut = len("P张".encode(encoding)) + 1
    await h.write(data[:cut], None)
    r = await h.item()
    assert isinstance(r, Rejected) and r.reason == "partial_character" and r.text == "P张"
    await h.write(data[cut:], None)
    rest = await h.item()
    assert isinstance(rest, Rejected) and rest.reason == "undecodable"
    await h.write("P李四".encode(encoding), None)
    f = await h.item()
    assert isinstance(f, Frame) and f.text == "P李四" and f.ended_by == "idle"
    await h.stop()


@pytest.mark.parametrize("suffix", [b"\r", b"\n", b"\r\n", b"\t"])
async def test_terminator_auto_on_a_pty_frames_whichever_suffix_the_scanner_sends(tmp_path: Path, suffix: bytes) -> None:
    h = Harness(tmp_path, spec=default_spec())  # no terminator configured: auto
    await h.start()
    codes = [wechat_code(), alipay_code(), "RX0000000001"]
    await h.write(b"".join(c.encode() + suffix for c in codes), 115200)
    frames = [await h.item() for _ in codes]
    assert [(type(f).__name__, f.text, getattr(f, "ended_by", None)) for f in frames] == [
        ("Frame", c, "terminator") for c in codes]
    await h.stop()


def test_a_scan_read_in_one_piece_gets_its_wire_time_as_scan_ms() -> None:
    from scannerd.config import ScannerConfig
    from scannerd.model import Frame
    from scannerd.sources.serial import with_wire_time

    got: list[object] = []
    emit = with_wire_time(got.append, ScannerConfig(name="s", path="/dev/x", baudrate=9600))
    emit(Frame("s", "134567890123456789", None, 5_000_000_000, 5_000_000_000, 5_000_000_000))
    frame = got[0]
    assert isinstance(frame, Frame)
    # 17 character times of 10 bits at 9600 baud: 17.7 ms.
    assert round(frame.scan_ms, 1) == 17.7
