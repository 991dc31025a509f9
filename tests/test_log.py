"""Logging never carries a payment code in full, even if a call site forgets to mask."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import REPO


def test_long_digit_runs_are_masked_in_json_logs() -> None:
    script = (
        "from scannerd import log; import structlog; log.configure('info', json=True);"
        "structlog.get_logger('t').info('oops', code='134567890123456789', note='paid with 62123456789012345678 ok', short='12345')"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=30)
    line = json.loads(out.stderr.strip().splitlines()[-1])
    assert line["code"] == "1345**********6789"
    assert line["note"] == "paid with 6212************5678 ok"
    assert line["short"] == "12345"
    assert "134567890123456789" not in out.stderr


def test_text_logs_on_a_tty_are_key_value() -> None:
    script = "from scannerd import log; import structlog; log.configure('info', json=False); structlog.get_logger('t').info('hello', device='w1')"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert "event=hello" in out.stderr and "device=w1" in out.stderr and "level=info" in out.stderr
