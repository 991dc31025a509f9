"""The no-scanner hint: once at start, again every few minutes while still none, reset by a scanner."""

from __future__ import annotations

from pathlib import Path

import pytest

from scannerd.hints import REPEAT_S, NoScannerHint

from helpers import Client, Daemon, PtyScanner, wait_for


def test_hint_at_start_then_every_few_minutes_while_still_none() -> None:
    hint = NoScannerHint()
    first = hint.tick(0, now=1000.0)
    assert first is not None
    for part in ("Plug one in", "scannerd devices", "scannerd demo"):
        assert part in first
    # The status loop ticks every 10 s: silent until the repeat interval has passed.
    assert [hint.tick(0, now=1000.0 + t) for t in range(10, int(REPEAT_S), 10)] == [None] * (int(REPEAT_S) // 10 - 1)
    assert hint.tick(0, now=1000.0 + REPEAT_S) == first
    assert hint.tick(0, now=1000.0 + REPEAT_S + 10) is None
    assert REPEAT_S >= 120  # "every few minutes", not a log flood


def test_a_scanner_silences_it_and_losing_all_scanners_hints_again_at_once() -> None:
    hint = NoScannerHint(repeat_s=300)
    assert hint.tick(0, now=0.0) is not None
    assert hint.tick(1, now=5.0) is None
    assert hint.tick(2, now=400.0) is None
    assert hint.tick(0, now=401.0) is not None  # all unplugged: say so now, not in five minutes
    assert hint.tick(0, now=402.0) is None


def test_hint_in_chinese_under_a_zh_cn_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    mp = monkeypatch
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        mp.delenv(var, raising=False)
    mp.setenv("LANG", "zh_CN.UTF-8")
    text = NoScannerHint().tick(0, now=0.0)
    assert text is not None and "扫码" in text and "scannerd devices" in text and "scannerd demo" in text


def daemon_log(tmp_path: Path, scanners: str) -> list[dict[str, object]]:
    sock = tmp_path / "scannerd.sock"
    config = tmp_path / "config.toml"
    config.write_text(f'[socket]\npath = "{sock}"\n[discovery]\nauto = false\n{scanners}')
    daemon = Daemon(config, sock)
    try:
        daemon.wait_ready()
        wait_for(lambda: any(e.get("event") == "ready" for e in daemon.log_events()), 20)
        Client(sock, role=None).close()  # the daemon is past its start-up hint by now
    finally:
        daemon.stop()
    return daemon.log_events()


def test_the_daemon_with_nothing_to_read_says_what_to_do(tmp_path: Path) -> None:
    events = daemon_log(tmp_path, "")
    hints = [e for e in events if e.get("event") == "no_scanner"]
    assert len(hints) == 1 and hints[0]["level"] == "warning"
    assert "scannerd devices" in str(hints[0]["hint"]) and "scannerd demo" in str(hints[0]["hint"])
    names = [e.get("event") for e in events]
    assert names.index("ready") < names.index("no_scanner")


def test_the_daemon_with_a_scanner_gives_no_hint(tmp_path: Path) -> None:
    pty = PtyScanner(tmp_path)
    try:
        events = daemon_log(tmp_path, f'[[scanner]]\nname = "window-1"\npath = "{pty.link}"\n')
    finally:
        pty.close()
    assert [e for e in events if e.get("event") == "ready"]
    assert not [e for e in events if e.get("event") == "no_scanner"]
