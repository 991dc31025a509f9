"""No code at rest: random codes of every kind through the ledger, then search every byte it left."""

from __future__ import annotations

import json
import random
from pathlib import Path

from acceptance_data import CODE_MAKERS, scan_event

from scannerd.acceptance import Ledger
from scannerd.config import AcceptanceConfig, SiteConfig

from helpers import wait_for


def _fragments(code: str, n: int = 8) -> set[str]:
    return {code[i : i + n] for i in range(len(code) - n + 1)} | {code}


def _leaks(blob: bytes, codes: list[str]) -> list[str]:
    found = []
    for code in codes:
        for fragment in _fragments(code):
            # As text, and as UTF-16 in case anything stored wide strings.
            if fragment.encode() in blob or fragment.encode("utf-16-le") in blob:
                found.append(f"{fragment!r} of a {len(code)}-character code")
                break
    return found


def _everything_under(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


def test_no_code_or_fragment_in_any_file_of_the_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state" / "scannerd"
    path = state / "ledger.sqlite"
    rng = random.Random()  # fresh codes on every run
    ledger = Ledger(
        str(path),
        station="window-station",
        site=SiteConfig(hospital="H37020201175", hospital_name="测试医院"),
        acceptance=AcceptanceConfig(ledger=str(path)),
        flush_interval_s=0.05,
    )
    ledger.start()
    codes: list[str] = []
    kinds_seen = set()
    for round_ in range(20):
        for name, (make, symbology) in CODE_MAKERS.items():
            code = make(rng)
            codes.append(code)
            event = scan_event(code, symbology=symbology, device=f"window-{round_ % 3}", role="window" if round_ % 2 else "kiosk")
            kinds_seen.add(event.classification.kind)
            ledger.on_scan(event)
            if name in ("unionpay", "nhsa_424"):
                assert ledger.on_result(event.id, "paid", "unionpay", name == "nhsa_424", rng.randrange(1, 100000)).ok
    assert kinds_seen == {"payment", "medical_insurance", "health_card", "other"}
    wait_for(lambda: ledger.status()["flushed_scans"] == len(codes), timeout=30)

    # While running: the database and its WAL (the WAL holds the newest pages).
    files = {p.name for p in state.iterdir()}
    assert "ledger.sqlite-wal" in files, files
    assert _leaks(_everything_under(state), codes) == []
    # What the fleet view would publish.
    assert _leaks(json.dumps(ledger.snapshot().to_json(), ensure_ascii=False).encode(), codes) == []

    ledger.stop()
    blob = _everything_under(tmp_path)
    assert len(blob) > 4096  # the search ran over a real database, not an empty directory
    assert _leaks(blob, codes) == []


def test_the_search_finds_a_code_when_one_is_there(tmp_path: Path) -> None:
    # The check above must be able to fail: a fragment planted in a file is found.
    code = CODE_MAKERS["unionpay"][0](random.Random(1))
    (tmp_path / "x.bin").write_bytes(b"\x00" * 100 + code[5:13].encode() + b"\x00")
    assert _leaks(_everything_under(tmp_path), [code]) != []
