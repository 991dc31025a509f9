"""`scannerd demo` as a user runs it: a real process tree (demo → daemon), real ptys, a real socket.

Every test starts the demo in its own session, so its process group holds exactly what it
started; "nothing left behind" is checked in /proc by that group.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import REPO, wait_for

INJECTED = "134567890123456789"
SUMMARY = re.compile(r"^demo: (\d+) scans \((\d+) injected\), (\d+) rejects, latency p50 ([\d.]+) ms, p99 ([\d.]+) ms; daemon log: (\S+)$", re.MULTILINE)


def alive_in_group(pgid: int) -> list[int]:
    """Processes (not zombies) whose process group is `pgid`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


class Demo:
    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.out_path = tmp / "demo.out"
        self.err_path = tmp / "demo.err"
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "LANG": "C.UTF-8", "LC_ALL": "", "LANGUAGE": "", **(env or {})}
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "scannerd", "demo", *args], stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, env=self.env, cwd=tmp, start_new_session=True)

    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for_output(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        def seen() -> re.Match[str] | None:
            if self.proc.poll() is not None and not re.search(pattern, self.out(), re.MULTILINE):
                raise AssertionError(f"demo exited {self.proc.returncode}:\n{self.out()}\n{self.err()}")
            return re.search(pattern, self.out(), re.MULTILINE)

        return wait_for(seen, timeout)  # type: ignore[no-any-return]

    def daemon_pid(self) -> int:
        return int(self.wait_for_output(r"daemon:\s+pid (\d+)").group(1))

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        for pid in alive_in_group(self.proc.pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Path]:
    """A private XDG_RUNTIME_DIR, so the demo uses its default, well-known location here."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    yield run


def test_demo_runs_for_n_seconds_shows_events_and_a_summary_and_inject_finds_it(tmp_path: Path, runtime: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    demo = Demo(tmp_path, "--seconds", "6", "--interval", "0.4", "--seed", "7", env=env)
    try:
        demo.wait_for_output(r"^time\s+device\s+channel\s+kind\s+code \(masked\)\s+latency$")
        daemon = demo.daemon_pid()
        # A second terminal: no --socket, no config; the CLI finds the demo's socket by itself.
        injected = subprocess.run([sys.executable, "-m", "scannerd", "inject", "--device", "sim-window-1", INJECTED],
                                  check=False, capture_output=True, text=True, env=demo.env, cwd=tmp_path, timeout=60)
        assert injected.returncode == 0, injected.stderr
        assert '"injected": true' in injected.stdout and INJECTED not in injected.stdout
        assert demo.proc.wait(90) == 0, demo.err()
    finally:
        demo.kill()
    out = demo.out()
    m = SUMMARY.search(out)
    assert m, out
    scans, n_injected, rejects = int(m[1]), int(m[2]), int(m[3])
    assert n_injected == 1 and scans >= 4 and rejects >= 1, out
    assert float(m[4]) <= float(m[5])
    # The table: window scans classified, the kiosk armed then refused, the injected scan marked.
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} sim-window-1\s+wechat\s+payment\s+1\d\d\d\*{10}\d{4}\s+[\d.]+ ms$", out, re.MULTILINE), out
    assert re.search(r"sim-kiosk-1\s+» armed for 30 s", out), out
    assert re.search(r"sim-kiosk-1\s+-\s+reject: not_armed", out), out
    assert re.search(r"sim-window-1\s+wechat\s+payment\s+1345\*{10}6789\s+[\d.]+ ms \(injected\)$", out, re.MULTILINE), out
    # Bearer tokens: never in full on the screen or in the daemon's log.
    log = Path(m[6])
    assert log.parent == runtime / "scannerd-demo" and "ready" in log.read_text()
    table = out[out.index("\ntime ") :]  # (the hint above the table spells the sample code out)
    assert INJECTED not in table and INJECTED not in log.read_text()
    assert not alive(daemon) and alive_in_group(demo.proc.pid) == []
    # Once the demo is gone, the CLI no longer finds a socket there.
    assert not (runtime / "scannerd-demo" / "scannerd.sock").exists()


def test_sigterm_stops_everything_it_started(tmp_path: Path) -> None:
    demo = Demo(tmp_path, "--interval", "0.3", "--dir", str(tmp_path / "d"))
    try:
        daemon = demo.daemon_pid()
        demo.wait_for_output(r"sim-window-1\s+\w+\s+\w+\s+\S+\s+[\d.]+ ms$")
        assert alive(daemon) and daemon in alive_in_group(demo.proc.pid)
        demo.proc.send_signal(signal.SIGTERM)  # the demo alone, as `kill PID` would
        assert demo.proc.wait(60) == 0, demo.err()
        assert not alive(daemon)
        assert alive_in_group(demo.proc.pid) == []
        assert SUMMARY.search(demo.out()), demo.out()
        assert not (tmp_path / "d" / "window-1.pty").exists()  # the simulated scanners are gone too
    finally:
        demo.kill()


def test_a_demo_killed_outright_takes_its_daemon_with_it(tmp_path: Path) -> None:
    demo = Demo(tmp_path, "--dir", str(tmp_path / "d"))
    try:
        daemon = demo.daemon_pid()
        demo.wait_for_output(r"^time\s+device")
        demo.proc.kill()  # SIGKILL: no cleanup code runs in the demo
        demo.proc.wait(30)
        wait_for(lambda: not alive(daemon), 30)  # PR_SET_PDEATHSIG
    finally:
        demo.kill()


def test_a_second_demo_in_the_same_place_is_refused_clearly(tmp_path: Path) -> None:
    first = Demo(tmp_path, "--dir", str(tmp_path / "d"))
    try:
        first.wait_for_output(r"daemon:\s+pid")
        second = subprocess.run([sys.executable, "-m", "scannerd", "demo", "--seconds", "1", "--dir", str(tmp_path / "d")],
                                check=False, capture_output=True, text=True, env=first.env, timeout=60)
        assert second.returncode == 1
        assert f"another scannerd demo is running here (pid {first.proc.pid})" in second.stderr
        assert first.proc.poll() is None  # and the first one is undisturbed
    finally:
        first.kill()


def test_the_demo_refuses_a_folder_it_does_not_own(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "d"
    link.symlink_to(target)
    result = subprocess.run([sys.executable, "-m", "scannerd", "demo", "--seconds", "1", "--dir", str(link)],
                            check=False, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO), "LC_ALL": "C"}, timeout=60)
    assert result.returncode == 1
    assert "not a folder owned by this user" in result.stderr
    assert list(target.iterdir()) == []


def test_the_cli_ignores_what_a_dead_demo_left_behind(tmp_path: Path, runtime: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scannerd.client import resolve_socket_path
    from scannerd.simulator import demo_running

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    folder = runtime / "scannerd-demo"
    folder.mkdir()
    (folder / "scannerd.sock").touch()
    (folder / "demo.lock").write_text("999999999\n")  # above any pid_max: never a live process
    assert not demo_running()
    assert resolve_socket_path(None) != str(folder / "scannerd.sock")
    (folder / "demo.lock").write_text(f"{os.getpid()}\n")
    assert demo_running() and resolve_socket_path(None) == str(folder / "scannerd.sock")
    assert resolve_socket_path("/explicit.sock") == "/explicit.sock"


def test_ctrl_c_reaches_demo_and_daemon_together_and_the_demo_still_ends_cleanly(tmp_path: Path) -> None:
    demo = Demo(tmp_path, "--interval", "0.3", "--dir", str(tmp_path / "d"))
    try:
        daemon = demo.daemon_pid()
        demo.wait_for_output(r"sim-window-1\s+\w+\s+\w+\s+\S+\s+[\d.]+ ms$")
        os.killpg(demo.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        assert demo.proc.wait(60) == 0, demo.err()
        assert SUMMARY.search(demo.out()), demo.out() + demo.err()
        assert not alive(daemon) and alive_in_group(demo.proc.pid) == []
    finally:
        demo.kill()


def test_ctrl_c_while_the_daemon_is_still_starting(tmp_path: Path) -> None:
    demo = Demo(tmp_path, "--dir", str(tmp_path / "d"))
    try:
        daemon = demo.daemon_pid()  # printed before the daemon's socket is up
        os.killpg(demo.proc.pid, signal.SIGINT)  # Ctrl-C: the starting daemon gets it too
        assert demo.proc.wait(60) == 0, demo.err()
        assert SUMMARY.search(demo.out()) or "demo: 0 scans (0 injected), 0 rejects, latency: none measured" in demo.out(), demo.out()
        assert not alive(daemon) and alive_in_group(demo.proc.pid) == []
        assert "error" not in demo.err()
    finally:
        demo.kill()
