"""Day counts: survive a restart (a real second process reads what the first wrote), roll over
at midnight, refuse a damaged file with the reason, hold counts only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from scannerd.daycounts import FILE_NAME, FORMAT, MAX_DEVICES, OTHER, DayCounts, default_state_dir
from scannerd.latency_window import LatencyWindow, percentile

from helpers import REPO

WRITER = """
import sys
from pathlib import Path
from scannerd.daycounts import DayCounts
counts = DayCounts.open(Path(sys.argv[1]))
for _ in range(3):
    counts.scan("window-1")
counts.scan("kiosk-7")
counts.reject("window-1", "no_terminator")
counts.reject("window-1", "no_terminator")
counts.reject("kiosk-7", "not_armed")
counts.flush()
print(counts.scans)
"""


def test_scans_today_survive_a_restart(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for run in (1, 2):  # two daemon lifetimes on the same day
        out = subprocess.run([sys.executable, "-c", WRITER, str(tmp_path)], capture_output=True, text=True, env=env, timeout=60, check=True)
        assert out.stdout.strip() == str(4 * run)
    counts = DayCounts.open(tmp_path)
    assert counts.load_problem is None
    assert counts.snapshot() == {
        "date": date.today().isoformat(),
        "scans": 8,
        "rejects": 6,
        "devices": {
            "kiosk-7": {"scans": 2, "rejects": {"not_armed": 2}},
            "window-1": {"scans": 6, "rejects": {"no_terminator": 4}},
        },
    }
    # Counts only, and nothing left behind by the atomic write.
    on_disk = json.loads((tmp_path / FILE_NAME).read_text())
    assert on_disk["format"] == FORMAT and set(on_disk) == {"format", "date", "scans", "rejects", "devices"}
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]


def test_a_new_day_starts_from_zero(tmp_path: Path) -> None:
    day = [date(2026, 12, 1)]
    counts = DayCounts.open(tmp_path, today=lambda: day[0])
    counts.scan("window-1")
    counts.flush()
    day[0] = date(2026, 12, 2)
    assert counts.scans == 0 and counts.snapshot()["date"] == "2026-12-02"
    counts.flush()  # the rollover itself is written: a restart after midnight does not resurrect yesterday
    assert DayCounts.open(tmp_path, today=lambda: day[0]).snapshot()["scans"] == 0
    # Yesterday's file read today: zero, without complaint.
    (tmp_path / FILE_NAME).write_text(json.dumps({"format": FORMAT, "date": "2026-11-30", "scans": 5, "rejects": 0,
                                                  "devices": {"w": {"scans": 5, "rejects": {}}}}))
    fresh = DayCounts.open(tmp_path, today=lambda: day[0])
    assert fresh.load_problem is None and fresh.scans == 0


def test_only_a_change_is_written(tmp_path: Path) -> None:
    counts = DayCounts.open(tmp_path)
    counts.flush()
    assert not (tmp_path / FILE_NAME).exists()
    counts.scan("w")
    counts.flush()
    first = (tmp_path / FILE_NAME).stat().st_mtime_ns
    os.utime(tmp_path / FILE_NAME, ns=(first - 10**9, first - 10**9))
    counts.flush()
    assert (tmp_path / FILE_NAME).stat().st_mtime_ns == first - 10**9


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "not JSON"),
        (b'{"format": "something-else/9"}', "expected {\"format\": \"scannerd-daycounts/1\""),
        (json.dumps({"format": FORMAT, "date": date.today().isoformat(), "devices": {"w": {"scans": -1, "rejects": {}}}}).encode(), "device 'w'"),
        (json.dumps({"format": FORMAT, "date": date.today().isoformat(), "devices": {"w": {"scans": True, "rejects": {}}}}).encode(), "device 'w'"),
        (json.dumps({"format": FORMAT, "date": date.today().isoformat(), "devices": {"w": {"scans": 1, "rejects": {"x": "many"}}}}).encode(), "reject counts"),
        (json.dumps({"format": FORMAT, "date": date.today().isoformat(), "devices": {"1345678901234567 8": {"scans": 1, "rejects": {}}}}).encode(), "not a scanner name"),
        (b" " * (2 << 20), "larger than"),
    ],
)
def test_a_damaged_file_is_refused_with_the_reason_and_replaced(tmp_path: Path, content: bytes, why: str) -> None:
    (tmp_path / FILE_NAME).write_bytes(content)
    counts = DayCounts.open(tmp_path)
    assert counts.load_problem is not None and why in counts.load_problem and str(tmp_path / FILE_NAME) in counts.load_problem
    assert counts.scans == 0
    counts.scan("window-1")
    counts.flush()
    assert DayCounts.open(tmp_path).snapshot()["scans"] == 1


def test_invented_names_cannot_grow_the_file_without_bound(tmp_path: Path) -> None:
    counts = DayCounts.open(tmp_path)
    for i in range(MAX_DEVICES + 50):
        counts.scan(f"dev-{i}")
    counts.scan("a name with spaces and a code 134567890123456789")
    counts.reject("dev-0", "reason with spaces")
    snap = counts.snapshot()
    assert len(snap["devices"]) == MAX_DEVICES + 1 and snap["devices"][OTHER]["scans"] == 51
    assert snap["devices"]["dev-0"]["rejects"] == {OTHER: 1}
    counts.flush()
    assert "134567890123456789" not in (tmp_path / FILE_NAME).read_text()
    assert DayCounts.open(tmp_path).load_problem is None


def test_state_directory_follows_systemd_then_the_user() -> None:
    assert default_state_dir({"STATE_DIRECTORY": "/var/lib/scannerd:/other"}) == Path("/var/lib/scannerd")
    if os.geteuid() == 0:
        assert default_state_dir({}) == Path("/var/lib/scannerd")
    else:
        assert default_state_dir({"XDG_STATE_HOME": "/x/state"}) == Path("/x/state/scannerd")
        assert default_state_dir({"HOME": "/home/u"}) == Path("/home/u/.local/state/scannerd")


def test_latency_window_percentiles_and_bounds() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([float(i) for i in range(1, 101)], 100) == 100.0
    window = LatencyWindow(size=10, max_devices=2)
    for i in range(100):
        window.add("w", i / 1000)
    window.add("k", 0.002)
    window.add("third", 0.5)  # over max_devices: ignored
    window.add("k", float("nan"))
    window.add("k", -1.0)
    assert window.snapshot() == {"k": {"p50_ms": 2.0, "p99_ms": 2.0, "n": 1}, "w": {"p50_ms": 94.0, "p99_ms": 99.0, "n": 10}}
