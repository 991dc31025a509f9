"""`status` and `devices` as a technician reads them, in English and in Chinese (zh_CN locale):
the pure renderers on a full reply, and the real commands against a real daemon and real ptys."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scannerd.commands import status

from helpers import REPO, Client, Daemon, PtyScanner, wait_for, wechat_code

FULL_REPLY = {
    "version": "0.2.0", "host": "cashier-07", "uptime_s": 3725.4, "config": "/etc/scannerd/config.toml",
    "last_reload": {"ok": False, "at": "2026-12-01T09:15:02.1+08:00", "error": "scanner[1].baudrate: expected …"},
    "today": {"date": "2026-12-01", "scans": 57, "rejects": 3, "devices": {
        "window-1": {"scans": 40, "rejects": {"no_terminator": 2}},
        "kiosk-7": {"scans": 17, "rejects": {"not_armed": 1}},
    }},
    "latency": {"window-1": {"p50_ms": 0.41, "p99_ms": 1.2, "n": 40}},
    "devices": [
        {"name": "window-1", "transport": "serial", "path": "/dev/ttyACM0", "present": True, "area": "outpatient",
         "role": "window", "last_scan_s_ago": 3.2},
        {"name": "kiosk-7", "transport": "evdev", "path": "/dev/input/event5", "present": False, "area": "outpatient",
         "role": "kiosk", "last_scan_s_ago": None},
    ],
    "armed": {"kiosk-7": {"armed": True, "remaining_s": 41.6}},
    "sinks": {"socket": {"path": "/run/scannerd/scannerd.sock", "his": 1, "monitors": 2, "unsubscribed": 0, "queued": 0}},
}

EXPECTED_EN = """\
scannerd 0.2.0 on cashier-07, up 1 h 2 min, config /etc/scannerd/config.toml
last reload: REFUSED at 09:15:02, old config kept: scanner[1].baudrate: expected …
today (2026-12-01): 57 scans, 3 rejects
connections: 1 HIS, 2 monitor, 0 not subscribed

  window-1  serial  present  /dev/ttyACM0  outpatient/window
      today 40 scans, rejects: no_terminator 2; latency p50 0.41 ms, p99 1.2 ms; last scan 3 s ago
  kiosk-7   evdev   ABSENT   /dev/input/event5  outpatient/kiosk  armed, 42 s left
      today 17 scans, rejects: not_armed 1; last scan: never

  sink socket: path=/run/scannerd/scannerd.sock queued=0"""

EXPECTED_ZH = """\
scannerd 0.2.0，主机 cashier-07，已运行 1 小时 2 分，配置 /etc/scannerd/config.toml
上次重载：09:15:02 被拒绝，沿用原配置：scanner[1].baudrate: expected …
今日（2026-12-01）：扫码 57 次，拒绝 3 次
连接：HIS 1 个，监视 2 个，未订阅 0 个

  window-1  serial  在线     /dev/ttyACM0  outpatient/window
      今日扫码 40 次，拒绝：no_terminator 2；延迟 p50 0.41 毫秒，p99 1.2 毫秒；上次扫码：3 秒前
  kiosk-7   evdev   未连接   /dev/input/event5  outpatient/kiosk  已开启扫码，剩余 42 秒
      今日扫码 17 次，拒绝：not_armed 1；上次扫码：无

  输出 socket：path=/run/scannerd/scannerd.sock queued=0"""


def set_locale(monkeypatch: pytest.MonkeyPatch, lang: str) -> None:
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LANG", lang)


def test_status_render_in_english(monkeypatch: pytest.MonkeyPatch) -> None:
    set_locale(monkeypatch, "en_US.UTF-8")
    assert status.render(FULL_REPLY) == EXPECTED_EN


def test_status_render_in_chinese(monkeypatch: pytest.MonkeyPatch) -> None:
    set_locale(monkeypatch, "zh_CN.UTF-8")
    assert status.render(FULL_REPLY) == EXPECTED_ZH


def test_status_render_of_an_idle_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    set_locale(monkeypatch, "zh_CN.UTF-8")
    text = status.render({"version": "0.2.0", "host": "h", "uptime_s": 5, "config": "<embedded default>",
                          "scans_today": 0, "devices": [], "sinks": {"socket": {"his": 0, "monitors": 0, "unsubscribed": 0}}})
    assert "已运行 5 秒" in text and "上次重载：启动以来未重载" in text and "今日扫码：0 次" in text
    assert "连接：HIS 0 个，监视 0 个，未订阅 0 个" in text
    assert "`scannerd devices` 显示原因，`scannerd demo` 演示完整流程" in text


def env_for(lang: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "LANG": lang, "LC_ALL": "", "LANGUAGE": "", "LC_MESSAGES": ""}


def cli(*args: str, lang: str = "C.UTF-8") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scannerd", *args], capture_output=True, text=True, env=env_for(lang),
                          cwd=REPO, timeout=60, check=False)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Daemon, Path, Path, PtyScanner]]:
    window = PtyScanner(tmp_path, "window-by-id")
    kiosk = PtyScanner(tmp_path, "kiosk-by-id")
    sock = tmp_path / "scannerd.sock"
    config = tmp_path / "config.toml"
    config.write_text(f"""
[socket]
path = "{sock}"
[discovery]
auto = false
[[scanner]]
name = "window-1"
path = "{window.link}"
[[scanner]]
name = "kiosk-7"
path = "{kiosk.link}"
role = "kiosk"
[[scanner]]
name = "window-2"
path = "{tmp_path / 'unplugged-by-id'}"
""")
    daemon = Daemon(config, sock)
    try:
        daemon.wait_ready()
        yield daemon, sock, config, window
    finally:
        daemon.stop()
        window.close()
        kiosk.close()


def test_status_against_the_daemon_in_both_languages(site: tuple[Daemon, Path, Path, PtyScanner]) -> None:
    _daemon, sock, _config, window = site
    his = Client(sock)  # subscribed as role "his"
    watcher = Client(sock, role=None)  # connected, never subscribed
    wait_for(lambda: [d["present"] for d in his.command({"cmd": "status"})["devices"]] == [True, True, False], 20)
    assert his.command({"cmd": "arm", "device": "kiosk-7", "ttl_s": 300})["ok"]
    window.release_slave()
    window.write(f"]Q1{wechat_code()}\r".encode())
    assert his.next_of("scan", timeout=20)["device"] == "window-1"
    zh = cli("status", "--socket", str(sock), lang="zh_CN.UTF-8")
    assert zh.returncode == 0, zh.stderr
    lines = zh.stdout.splitlines()
    assert re.fullmatch(r"今日（\d{4}-\d\d-\d\d）：扫码 1 次，拒绝 0 次", lines[2]), zh.stdout
    assert "连接：HIS 1 个，监视 0 个，未订阅 1 个" in lines  # the two above, not this query itself
    assert any(ln.startswith("  kiosk-7") and "在线" in ln and "已开启扫码，剩余 " in ln for ln in lines), zh.stdout
    assert any(ln.startswith("  window-2") and "未连接" in ln for ln in lines), zh.stdout
    assert any("上次扫码：" in ln and "秒前" in ln for ln in lines), zh.stdout
    en = cli("status", "--socket", str(sock))
    assert re.search(r"^today \(\d{4}-\d\d-\d\d\): 1 scans, 0 rejects$", en.stdout, re.MULTILINE) and "connections: 1 HIS, 0 monitor, 1 not subscribed" in en.stdout
    assert any(ln.startswith("  kiosk-7") and "armed, " in ln and " s left" in ln for ln in en.stdout.splitlines()), en.stdout
    # Field names and JSON stay English whatever the locale.
    as_json = json.loads(cli("status", "--socket", str(sock), "--json", lang="zh_CN.UTF-8").stdout)
    assert as_json["scans_today"] == 1 and as_json["armed"]["kiosk-7"]["armed"] is True
    his.close()
    watcher.close()


def test_devices_lists_every_configured_scanner_present_or_missing_in_both_languages(site: tuple[Daemon, Path, Path, PtyScanner]) -> None:
    _daemon, _sock, config, window = site
    zh = cli("devices", "-c", str(config), lang="zh_CN.UTF-8")
    assert zh.returncode == 0, zh.stderr
    text = zh.stdout
    assert text.startswith("已配置的扫码器（[[scanner]] 条目）\n")
    section = text.split("\n\n")[0]
    assert "  window-1  (serial)\n      → 已找到: " in section and f"{window.link} 存在，但 udev 未列出" in section
    assert "  kiosk-7  (serial)\n      → 已找到: " in section
    assert f"  window-2  (serial)\n        未找到: {window.link.parent / 'unplugged-by-id'} 不存在：已拔出" in section
    for heading in ("输入设备（键盘模式：evdev）", "串口", "USB 设备"):
        assert f"\n{heading}\n" in text
    en = cli("devices", "-c", str(config))
    assert en.stdout.startswith("CONFIGURED SCANNERS ([[scanner]] entries)\n")
    assert "MISSING: " + str(window.link.parent / "unplugged-by-id") + " does not exist: unplugged" in en.stdout
    rows = [json.loads(ln) for ln in cli("devices", "-c", str(config), "--json", lang="zh_CN.UTF-8").stdout.splitlines()]
    configured = {r["scanner"]: r["action"] for r in rows if r["kind"] == "scanner"}
    assert configured == {"window-1": "found", "kiosk-7": "found", "window-2": "missing"}


def test_scans_today_survive_a_restart_and_status_shows_rejects_latency_and_reload(tmp_path: Path) -> None:
    window = PtyScanner(tmp_path, "window-by-id")
    sock = tmp_path / "scannerd.sock"
    config = tmp_path / "config.toml"
    config.write_text(f'[socket]\npath = "{sock}"\n[discovery]\nauto = false\n[[scanner]]\nname = "window-1"\npath = "{window.link}"\n')
    codes = [wechat_code() for _ in range(2)]
    try:
        daemon = Daemon(config, sock)
        daemon.wait_ready()
        his = Client(sock)
        his.wait_present(20)
        window.release_slave()
        for code in codes:
            window.write(f"]Q1{code}\r".encode())
            assert his.next_of("scan", timeout=20)["code"] == code
        window.write(b"\x02\x07\r")
        assert his.next_of("reject", timeout=20)["reason"] == "non_printable"
        first = his.status()
        assert first["today"]["devices"]["window-1"] == {"scans": 2, "rejects": {"non_printable": 1}}
        assert first["latency"]["window-1"]["n"] == 2 and first["latency"]["window-1"]["p99_ms"] > 0
        assert first["last_reload"] is None
        his.close()
        assert daemon.stop() == 0
        counts_file = config.with_suffix(".state") / "daycounts.json"  # the test daemon's STATE_DIRECTORY
        assert all(code not in counts_file.read_text() and code[-8:] not in counts_file.read_text() for code in codes)

        daemon = Daemon(config, sock)  # the same machine, a new daemon
        daemon.wait_ready()
        again = Client(sock, role=None)
        status_now = again.status()
        assert status_now["scans_today"] == 2
        assert status_now["today"]["devices"]["window-1"] == {"scans": 2, "rejects": {"non_printable": 1}}
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: again.status()["last_reload"] is not None, 20)
        assert again.status()["last_reload"]["ok"] is True
        text = cli("status", "--socket", str(sock)).stdout
        assert "last reload: applied at " in text and "today 2 scans, rejects: non_printable 1" in text, text
        again.close()
        daemon.stop()
    finally:
        window.close()
