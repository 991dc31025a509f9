"""`scannerd report`: verdicts across areas, roles and stations; table, CSV, JSON and HTML."""

from __future__ import annotations

import csv
import io
import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from acceptance_data import MIXED, Plan, write_station

from scannerd.acceptance import read_ledger_file
from scannerd.acceptance.evidence import EvidenceError, build_evidence
from scannerd.acceptance.render import Labels, csv_header, render
from scannerd.cli import main
from scannerd.config import AcceptanceConfig, SiteConfig, parse_config

SITE = SiteConfig(hospital="H37020201175", hospital_name="青岛市市立医院")


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ledgers")
    rng = random.Random(11)
    for station, plan in MIXED.items():
        write_station(str(d / f"{station}.sqlite"), station, plan, rng)
    return d


def _evidence(directory: Path, acceptance: AcceptanceConfig | None = None, **kw: str):  # type: ignore[no-untyped-def]
    stations = [read_ledger_file(str(p)) for p in sorted(directory.glob("*.sqlite"))]
    return build_evidence(stations, acceptance or AcceptanceConfig(), SITE, **kw)


def test_verdicts_across_areas_roles_and_stations(mixed_dir: Path) -> None:
    e = _evidence(mixed_dir)
    assert e.kinds == ("unionpay_medical", "unionpay_standard")
    assert e.stations == ("station-a", "station-b", "station-c")
    rows = {(r.station, r.device): r for r in e.rows}
    assert rows["station-a", "window-1"].complete
    assert rows["station-a", "kiosk-1"].missing == ("unionpay_standard",)  # a failed payment is not a transaction
    assert rows["station-b", "window-2"].complete  # a refund counts (reversed transactions are not excluded)
    assert rows["station-c", "kiosk-9"].missing == ("unionpay_medical", "unionpay_standard")  # scans alone prove nothing
    assert rows["station-c", "window-5"].missing == ("unionpay_medical",)  # a 医保码 settled by WeChat is not UnionPay
    cell = rows["station-a", "window-1"].cells["unionpay_standard"]
    assert (cell.scans, cell.paid, cell.refunded) == (2, 1, 0)
    assert rows["station-a", "kiosk-1"].cells["unionpay_standard"].failed == 1

    areas = {a.area: a for a in e.areas}
    assert list(areas) == ["outpatient", "emergency", "inpatient"]  # in the standard's order
    assert not any(a.complete for a in areas.values()) and not e.complete
    emergency = {s.role: s for s in areas["emergency"].roles}
    assert (emergency["window"].devices, emergency["window"].complete) == (2, 1)
    assert emergency["window"].done_by_kind == {"unionpay_medical": 1, "unionpay_standard": 2}


def test_complete_hospital_and_required_areas(tmp_path: Path) -> None:
    rng = random.Random(12)
    done = ["medical:paid", "standard:refunded"]
    plans: dict[str, Plan] = {
        "s1": [("w1", "window", "outpatient", done), ("k1", "kiosk", "outpatient", done)],
        "s2": [("w2", "window", "emergency", done)],
    }
    for station, plan in plans.items():
        write_station(str(tmp_path / f"{station}.sqlite"), station, plan, rng)
    e = _evidence(tmp_path)
    assert e.complete and all(r.complete for r in e.rows)
    # A site that has an international department says so: no station there is not complete.
    strict = _evidence(tmp_path, AcceptanceConfig(areas=("outpatient", "emergency", "international")))
    assert not strict.complete and strict.missing_areas == ("international",)
    # Kiosks that need only the 医保码 kind (configured per role).
    config = parse_config({"acceptance": {"required": {"kiosk": ["unionpay_medical"]}}})
    write_station(str(tmp_path / "s3.sqlite"), "s3", [("k3", "kiosk", "inpatient", ["medical:paid"])], rng)
    assert _evidence(tmp_path, config.acceptance).complete
    assert not _evidence(tmp_path).complete


def test_since_until_select_days(tmp_path: Path) -> None:
    from acceptance_data import medical_scan

    from scannerd.acceptance import Ledger

    path = tmp_path / "s.sqlite"
    ledger = Ledger(str(path), station="s", site=SITE, acceptance=AcceptanceConfig())
    ledger.start()
    rng = random.Random(13)
    for day in ("2026-11-20", "2026-11-21", "2026-11-22"):
        ledger.on_scan(medical_scan(rng, ts=f"{day}T09:00:00.000000+08:00"))
    ledger.stop()
    e = _evidence(tmp_path, since="2026-11-21", until="2026-11-21")
    assert e.rows[0].cells["unionpay_medical"].scans == 1
    assert _evidence(tmp_path, since="2026-11-21").rows[0].cells["unionpay_medical"].scans == 2


def test_the_same_station_twice_is_refused(mixed_dir: Path, tmp_path: Path) -> None:
    shutil.copy(mixed_dir / "station-a.sqlite", tmp_path / "a1.sqlite")
    shutil.copy(mixed_dir / "station-a.sqlite", tmp_path / "a2.sqlite")
    with pytest.raises(EvidenceError, match="station-a appears more than once"):
        _evidence(tmp_path)


def test_csv_round_trip_with_bom_and_chinese_headers(mixed_dir: Path) -> None:
    e = _evidence(mixed_dir)
    text = render(e, "csv", "zh")
    raw = text.encode("utf-8")
    assert raw.startswith(b"\xef\xbb\xbf")  # Excel needs the BOM to read UTF-8
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows[0] == csv_header(e, Labels("zh"))
    assert rows[0][:4] == ["终端", "设备", "类型", "区域"] and "云闪付医保码一码付 扫码" in rows[0]
    body = {(r[0], r[1]): dict(zip(rows[0], r, strict=True)) for r in rows[1:]}
    assert len(body) == 5
    kiosk = body["station-a", "kiosk-1"]
    assert (kiosk["类型"], kiosk["区域"], kiosk["结论"], kiosk["缺少"]) == ("自助终端", "门诊", "未完成", "银联标准码")
    assert kiosk["银联标准码 扫码"] == "1" and kiosk["银联标准码 支付成功"] == "0"
    assert body["station-b", "window-2"]["云闪付医保码一码付 退款"] == "1"
    en = list(csv.DictReader(io.StringIO(render(e, "csv", "en").lstrip("\ufeff"))))
    assert {r["Verdict"] for r in en} == {"complete", "missing"}


def test_table_and_json(mixed_dir: Path) -> None:
    e = _evidence(mixed_dir)
    table = render(e, "table", "en")
    assert "Hospital: 青岛市市立医院 (code H37020201175)" in table
    assert "== Emergency: missing ==" in table and "Hospital verdict: missing" in table
    assert "missing: UnionPay medical-insurance code (one-code pay)" in table  # window-5
    assert "not a bank statement" in table
    zh = render(e, "table", "zh")
    assert "门诊" in zh and "全院结论: 未完成" in zh and "不是银行对账单" in zh
    data = json.loads(render(e, "json", "en"))
    assert data["complete"] is False and [a["area"] for a in data["areas"]] == ["outpatient", "emergency", "inpatient"]
    kiosk9 = next(d for a in data["areas"] for d in a["devices"] if d["device"] == "kiosk-9")
    assert kiosk9["missing"] == ["unionpay_medical", "unionpay_standard"] and kiosk9["kinds"]["unionpay_medical"]["scans"] == 1


def test_cli_report_from_directory_and_files(mixed_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[site]\nhospital = "H37020201175"\nhospital_name = "青岛市市立医院"\n', encoding="utf-8")
    assert main(["report", "-c", str(config), "--format", "json", "--lang", "en", str(mixed_dir)]) == 0
    from_dir = json.loads(capsys.readouterr().out)
    files = [str(p) for p in sorted(mixed_dir.glob("*.sqlite"))]
    assert main(["report", "-c", str(config), "--format", "json", "--lang", "en", *files]) == 0
    from_files = json.loads(capsys.readouterr().out)
    from_dir.pop("generated"), from_files.pop("generated")
    assert from_dir == from_files and len(from_dir["stations"]) == 3
    out = tmp_path / "r.csv"
    assert main(["report", "-c", str(config), "--format", "csv", "-o", str(out), str(mixed_dir)]) == 0
    assert out.read_bytes().startswith(b"\xef\xbb\xbf\xe7\xbb\x88\xe7\xab\xaf")  # BOM + 终端


def test_cli_report_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 1
    assert "no ledger files" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope.sqlite")]) == 1
    assert "not found" in capsys.readouterr().err
    (tmp_path / "junk.sqlite").write_bytes(b"this is no database" * 100)
    assert main(["report", str(tmp_path / "junk.sqlite")]) == 1
    assert "corrupt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", "--since", "yesterday"])
    assert "expected a date YYYY-MM-DD" in capsys.readouterr().err
    assert main(["report", "--since", "2026-11-22", "--until", "2026-11-01", str(tmp_path)]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text('[acceptance]\nrequired = { kiosk = ["wechat_pay"] }\n')
    assert main(["report", "-c", str(bad), str(tmp_path)]) == 2
    assert 'acceptance.required.kiosk[1]: expected a kind defined here or by default' in capsys.readouterr().err


def test_html_report_in_headless_chromium(mixed_dir: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    e = _evidence(mixed_dir)
    page = tmp_path / "report.html"
    page.write_text(render(e, "html", "zh"), encoding="utf-8")
    text = page.read_text(encoding="utf-8")
    # Self-contained: nothing fetched from anywhere.
    for marker in ("http://", "https://", "src=", "<link", "@import", "url("):
        assert marker not in text.replace('xmlns="http://www.w3.org/2000/svg"', ""), marker
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], check=False, capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "青岛市市立医院" in html and "H37020201175" in html
    assert html.count('<section class="area"') == 3
    for area in ("outpatient", "emergency", "inpatient"):
        assert f'data-area="{area}"' in html
    for label in ("门诊", "急诊", "住院", "window-5", "kiosk-9", "不是银行对账单"):
        assert label in html, label
    assert html.count("<svg") == 3 and html.count('<table class="devices">') == 3

    # The PNG artefacts: Chinese, and English (readable on a machine without CJK fonts).
    english = tmp_path / "report-en.html"
    english.write_text(render(e, "html", "en"), encoding="utf-8")
    pngs = []
    for source in (page, english):
        png = source.with_suffix(".png")
        shot = subprocess.run([*common, f"--screenshot={png}", "--window-size=1280,2400", source.as_uri()], check=False, capture_output=True, text=True, timeout=120)
        assert shot.returncode == 0, shot.stderr[-2000:]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        pngs.append(png)
    pdf = tmp_path / "report.pdf"
    printed = subprocess.run([*common, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", page.as_uri()], check=False, capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr[-2000:]
    # One page per area: three sections print as (at least) three pages.
    assert _pdf_pages(pdf) >= 3
    print(f"HTML report rendered by Chromium: {pngs[0]}, {pngs[1]} and {pdf}")


def _pdf_pages(pdf: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page(?!s)", pdf.read_bytes()))
