"""The decode path alone (keymap + framer + classifier) on recorded key streams, and the same
recordings through barcode-server's KeyEventReader; then file → events through `scannerd replay`
and through the peer reading the same file.

Recordings: the fixtures in tests/fixtures/keys (non-US layouts, CapsLock, NumLock, Alt codes,
Tab, no terminator, SYN_DROPPED …) with the scans a correct decoder produces, and a generated
2000-scan digit recording. Both are written by tests/fixtures/keys/make_fixtures.py's event
model (from the Linux input ABI and HID, not from scannerd's keymap), so neither decoder is
judged by the other's idea of right.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
import time
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import REPO, bench_code, child_env, scannerd_command

KEYS = REPO / "tests" / "fixtures" / "keys"
PEER = Path(__file__).resolve().parent / "peer_barcode_server.py"


@dataclass(frozen=True)
class Case:
    """A recording, the framing a site would configure for that scanner, and the right scans."""

    file: str
    expected: tuple[str, ...]
    spec: dict[str, Any]
    alt_numpad: bool = False


# As in tests/test_evdev_fixtures.py: what each recording must decode to (rejects are not scans).
FIXTURES = (
    Case("us_digits_enter.jsonl", ("134567890123456789",), {}),
    Case("us_shift_mixed.jsonl", ("Ab9ZxQ7mK2",), {}),
    Case("us_capslock_toggle.jsonl", ("ABC123def",), {}),
    Case("keypad_numlock_on.jsonl", ("6212345678901234567",), {}),
    Case("keypad_numlock_off.jsonl", ("2812345678901234",), {}),
    Case("tab_terminator.jsonl", ("280123456789012345",), {"terminator": "\t"}),
    Case("key_repeat.jsonl", ("12345678",), {"idle_gap_ms": 1000}),
    Case("cut_mid_scan.jsonl", (), {}),
    Case("syn_dropped.jsonl", ("281234567890123456",), {}),
    Case("de_layout.jsonl", ("QRZ-2024/Y",), {}),
    Case("fr_layout.jsonl", ("134567890123456789",), {}),
    Case("uk_layout.jsonl", ('A@B"#1',), {}),
    Case("alt_numpad_gbk.jsonl", ("P张三1",), {}, alt_numpad=True),
    Case("no_terminator.jsonl", ("134567890123456789", "6212345678901234567"), {"terminator": None}),
)


def _fixture_model() -> Any:
    spec = importlib.util.spec_from_file_location("make_fixtures", KEYS / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_digit_recording(path: Path, scans: int) -> tuple[str, ...]:
    """`scans` WeChat-shaped synthetic codes typed as main-row digits + Enter, 2 ms per key
    (a fast wedge scanner), 300 ms between scans; the codes in order."""
    mf = _fixture_model()
    s = mf.Stream()
    codes = tuple(bench_code(900_000_000 + i) for i in range(scans))
    for code in codes:
        for key, mods in mf.keys_for_us(code + "\r"):
            s.tap(key, mods, gap_us=2000, hold_us=1000)
        s.wait(300_000)
    lines = [json.dumps({"format": "scannerd-keys/1", "device": {"name": "bench"}, "layout": "us"})]
    lines += [f'{{"t":{sec}.{usec:06d},"type":{t},"code":{c},"value":{v}}}' for sec, usec, t, c, v in s.events]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return codes


def exact(expected: tuple[str, ...], got: list[str]) -> tuple[int, int]:
    """(expected scans found in order, scans emitted that are not right: garbage an HIS gets)."""
    found, i = 0, 0
    for text in got:
        if i < len(expected) and text == expected[i]:
            found += 1
            i += 1
    return found, len(got) - found


# -- scannerd in-process -----------------------------------------------------------------------


def scannerd_decoder() -> Any:
    """A function: (Recording, Case) → scan texts, through replay() and the default classifier."""
    sys.path.insert(0, str(REPO))
    from scannerd.classify import Classifier
    from scannerd.framing import FramingSpec
    from scannerd.model import Frame
    from scannerd.sources.recording import replay

    classifier = Classifier.build()

    def run(rec: Any, case: Case) -> list[str]:
        out = []
        for r in replay(rec, FramingSpec(**case.spec), alt_numpad=case.alt_numpad):
            if isinstance(r.item, Frame):
                classifier.classify(r.item.text, r.item.symbology)
                out.append(r.item.text)
        return out

    return run


# -- the peer ----------------------------------------------------------------------------------


def peer_python(cache: Path) -> tuple[Path | None, str]:
    """barcode-server's venv under the cache dir (made on first use): its python, or None and why."""
    env_dir = cache / "peer-venv"
    python = env_dir / "bin" / "python"
    marker = env_dir / ".barcode-server-ok"
    if marker.exists():
        return python, "barcode-server from " + str(env_dir)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        if not python.exists():
            venv.create(env_dir, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "barcode-server"], check=True,
                       capture_output=True, timeout=600)
        subprocess.run([str(python), "-c", "import barcode_server.keyevent_reader, evdev"], check=True,
                       capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        err = getattr(e, "stderr", b"") or b""
        return None, f"barcode-server could not be installed into {env_dir}: {e} {err.decode(errors='replace')[-300:]}"
    marker.write_text("ok\n")
    return python, "barcode-server from " + str(env_dir)


def peer_decode(python: Path, files: list[Path], reps: int, repeat: int) -> dict[str, Any]:
    r = subprocess.run([str(python), str(PEER), "decode", str(reps), str(repeat), *map(str, files)], check=True,
                       capture_output=True, timeout=1200)
    return dict(json.loads(r.stdout))


# -- the sections --------------------------------------------------------------------------------


def measure_decode(tmp: Path, cache: Path, reps: int, digit_scans: int = 2000, use_peer: bool = True,
                   fixture_repeat: int = 200) -> dict[str, Any]:
    """Scans/s and exact-match counts, scannerd and the peer in alternating rounds."""
    sys.path.insert(0, str(REPO))
    from scannerd.sources.recording import read_recording

    digits_file = tmp / "digits-2000.jsonl"
    digit_codes = write_digit_recording(digits_file, digit_scans)
    sets: dict[str, list[tuple[Path, Case]]] = {
        "digits": [(digits_file, Case(digits_file.name, digit_codes, {"idle_gap_ms": 200}))],
        "fixtures": [(KEYS / c.file, c) for c in FIXTURES],
    }
    python, peer_note = peer_python(cache) if use_peer else (None, "not asked for")
    run = scannerd_decoder()
    out: dict[str, Any] = {"peer": peer_note}
    for name, cases in sets.items():
        recs = [(read_recording(str(path)), case) for path, case in cases]
        # The fixtures are one scan each: repeat them so a round takes long enough to time.
        repeat = 1 if name == "digits" else fixture_repeat
        n_expected = sum(len(c.expected) for _, c in cases) * repeat
        ours_s: list[float] = []
        peer_s: list[float] = []
        texts: list[list[str]] = []
        peer_texts: dict[str, list[str]] = {}
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(repeat):
                texts = [run(rec, case) for rec, case in recs]
            ours_s.append(time.perf_counter() - t0)
            if python is not None:
                res = peer_decode(python, [path for path, _ in cases], 1, repeat)
                peer_s.append(res["seconds"][0])
                peer_texts = res["texts"]
        ours_found = [exact(case.expected, t) for (_, case), t in zip(recs, texts, strict=True)]
        row: dict[str, Any] = {
            "scans": n_expected,
            "recordings": len(cases),
            "scannerd": {"scans_per_s": round(n_expected / statistics.median(ours_s)),
                         "exact": sum(f for f, _ in ours_found), "wrong": sum(w for _, w in ours_found),
                         "of": sum(len(c.expected) for _, c in cases),
                         "recordings_exact": sum(1 for (f, w), (_, c) in zip(ours_found, cases, strict=True) if f == len(c.expected) and not w)},
        }
        if python is not None:
            peer_found = [exact(case.expected, peer_texts.get(str(path), [])) for path, case in cases]
            row["barcode_server"] = {
                "scans_per_s": round(n_expected / statistics.median(peer_s)),
                "exact": sum(f for f, _ in peer_found), "wrong": sum(w for _, w in peer_found),
                "of": sum(len(c.expected) for _, c in cases),
                "recordings_exact": sum(1 for (f, w), (_, c) in zip(peer_found, cases, strict=True) if f == len(c.expected) and not w),
            }
            row["ratio_scannerd_to_peer"] = round(row["scannerd"]["scans_per_s"] / row["barcode_server"]["scans_per_s"], 2)
        out[name] = row
    return out


def _wall(argv: list[str]) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    r = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=600, cwd=REPO, env=child_env())
    return time.perf_counter() - t0, r.stdout.splitlines()


def measure_replay(tmp: Path, cache: Path, scans: int, reps: int, use_peer: bool = True) -> dict[str, Any]:
    """File → events: `scannerd replay FILE --json` vs the peer reading and decoding the same
    file, each a fresh process (interpreter start and imports included, as a user runs it)."""
    sys.path.insert(0, str(REPO))
    from scannerd.model import mask

    path = tmp / f"replay-{scans}.jsonl"
    codes = write_digit_recording(path, scans)
    expected = [mask(c) for c in codes]
    python, peer_note = peer_python(cache) if use_peer else (None, "not asked for")
    ours: list[float] = []
    theirs: list[float] = []
    ours_lines: list[str] = []
    peer_lines: list[str] = []
    for _ in range(reps):
        s, ours_lines = _wall([*scannerd_command(), "replay", str(path), "--json"])
        ours.append(s)
        if python is not None:
            s, peer_lines = _wall([str(python), str(PEER), "replay", str(path)])
            theirs.append(s)

    def right(lines: list[str]) -> int:
        got = [json.loads(ln) for ln in lines]
        return sum(1 for g, e in zip(got, expected, strict=False) if g.get("type") == "scan" and g.get("text") == e)

    out: dict[str, Any] = {"scans": scans, "peer": peer_note,
                           "scannerd": {"seconds": round(statistics.median(ours), 3),
                                        "scans_per_s": round(scans / statistics.median(ours)),
                                        "events": len(ours_lines), "exact_masked": right(ours_lines)}}
    if theirs:
        out["barcode_server"] = {"seconds": round(statistics.median(theirs), 3),
                                 "scans_per_s": round(scans / statistics.median(theirs)),
                                 "events": len(peer_lines), "exact_masked": right(peer_lines)}
        out["ratio_scannerd_to_peer"] = round(out["scannerd"]["scans_per_s"] / out["barcode_server"]["scans_per_s"], 2)
    return out
