"""The acceptance report as a terminal table, CSV (Excel-ready), JSON or a printable HTML page.

Pure: Evidence in, text out. HTML is self-contained (inline CSS and SVG, no external asset) and
prints one page per area, for a hospital's 验收材料.
"""

from __future__ import annotations

import csv
import html
import io
import json
import unicodedata
from dataclasses import dataclass

from .evidence import AreaSummary, DeviceRow, Evidence, KindCell

FORMATS = ("table", "csv", "json", "html")
LANGS = ("zh", "en")

_LABELS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Acceptance evidence",
        "hospital": "Hospital",
        "code": "code",
        "period": "Period",
        "all_days": "all days in the ledger",
        "generated": "Generated",
        "stations": "Stations",
        "station": "Station",
        "device": "Device",
        "role": "Role",
        "area": "Area",
        "scans": "scans",
        "paid": "paid",
        "refunded": "refunded",
        "verdict": "Verdict",
        "missing": "Missing",
        "complete": "complete",
        "incomplete": "missing",
        "not_required": "not required",
        "summary": "Summary",
        "devices": "devices",
        "devices_complete": "complete",
        "hospital_verdict": "Hospital verdict",
        "no_station_in": "no station in",
        "done": "done",
        "to_do": "missing",
        "outpatient": "Outpatient",
        "emergency": "Emergency",
        "inpatient": "Inpatient",
        "international": "International",
        "window": "window",
        "kiosk": "kiosk",
        "unionpay_medical": "UnionPay medical-insurance code (one-code pay)",
        "unionpay_standard": "UnionPay standard code",
        "statement": "This report is evidence of scans and HIS-reported results on these stations, counted by scannerd "
        "(counts only, no code is kept). It is not a bank statement.",
        "nothing": "No scans in the ledger for this period.",
        "chart": "Devices with each required kind done, and still missing",
    },
    "zh": {
        "title": "验收证明材料",
        "hospital": "医院",
        "code": "国标编码",
        "period": "统计期间",
        "all_days": "台账中的全部日期",
        "generated": "生成时间",
        "stations": "终端",
        "station": "终端",
        "device": "设备",
        "role": "类型",
        "area": "区域",
        "scans": "扫码",
        "paid": "支付成功",
        "refunded": "退款",
        "verdict": "结论",
        "missing": "缺少",
        "complete": "已完成",
        "incomplete": "未完成",
        "not_required": "不要求",
        "summary": "汇总",
        "devices": "台",
        "devices_complete": "已完成",
        "hospital_verdict": "全院结论",
        "no_station_in": "无终端的区域",
        "done": "已完成",
        "to_do": "缺少",
        "outpatient": "门诊",
        "emergency": "急诊",
        "inpatient": "住院",
        "international": "国际部",
        "window": "人工窗口",
        "kiosk": "自助终端",
        "unionpay_medical": "云闪付医保码一码付",
        "unionpay_standard": "银联标准码",
        "statement": "本报告是上述终端上扫码次数及HIS回报交易结果的统计证明（由 scannerd 计数，只记录次数，不保存任何码），不是银行对账单。",
        "nothing": "该期间台账中没有扫码记录。",
        "chart": "各项要求已完成与缺少的设备数",
    },
}


@dataclass(frozen=True, slots=True)
class Labels:
    lang: str

    def __call__(self, key: str) -> str:
        return _LABELS[self.lang].get(key, key)


def render(evidence: Evidence, fmt: str, lang: str) -> str:
    t = Labels(lang)
    if fmt == "table":
        return render_table(evidence, t)
    if fmt == "csv":
        return render_csv(evidence, t)
    if fmt == "json":
        return json.dumps(evidence.to_json(), ensure_ascii=False, indent=2) + "\n"
    if fmt == "html":
        return render_html(evidence, t)
    raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")


def _period(e: Evidence, t: Labels) -> str:
    if not e.since and not e.until:
        return t("all_days")
    return f"{e.since or '…'} – {e.until or '…'}"


def _hospital_line(e: Evidence, t: Labels) -> str:
    name = e.hospital_name or "—"
    return f"{t('hospital')}: {name}" + (f" ({t('code')} {e.hospital})" if e.hospital else "")


def _cell_text(cell: KindCell, required: bool, t: Labels) -> str:
    if not required:
        return t("not_required") if not cell.scans else f"{cell.scans} ({t('not_required')})"
    return f"{cell.scans}/{cell.paid}/{cell.refunded}"


def _verdict(row: DeviceRow, t: Labels) -> str:
    if row.complete:
        return t("complete")
    return f"{t('incomplete')}: " + ", ".join(t(k) for k in row.missing)


def _area_verdict(a: AreaSummary, t: Labels) -> str:
    return t("complete") if a.complete else t("incomplete")


def _hospital_verdict(e: Evidence, t: Labels) -> str:
    text = t("complete") if e.complete else t("incomplete")
    if e.missing_areas:
        text += f" ({t('no_station_in')}: " + ", ".join(t(a) for a in e.missing_areas) + ")"
    return text


# -- table ------------------------------------------------------------------------------------


def _width(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)


def _pad(s: str, width: int) -> str:
    return s + " " * max(0, width - _width(s))


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(_width(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(_pad(c, w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(_pad(c, w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return lines


def render_table(e: Evidence, t: Labels) -> str:
    out = [t("title"), _hospital_line(e, t), f"{t('period')}: {_period(e, t)}", f"{t('stations')}: {len(e.stations)}", ""]
    if not e.areas:
        out += [t("nothing"), ""]
    kind_header = [f"{t(k)} ({t('scans')}/{t('paid')}/{t('refunded')})" for k in e.kinds]
    for a in e.areas:
        out.append(f"== {t(a.area)}: {_area_verdict(a, t)} ==")
        rows = [[r.station, r.device, t(r.role), *(_cell_text(r.cells[k], k in r.required, t) for k in e.kinds), _verdict(r, t)] for r in a.rows]
        out += _grid([t("station"), t("device"), t("role"), *kind_header, t("verdict")], rows)
        for s in a.roles:
            kinds = ", ".join(f"{t(k)} {s.done_by_kind[k]}/{s.devices}" for k in s.required)
            out.append(f"{t('summary')} {t(s.role)}: {s.complete}/{s.devices} {t('devices_complete')}; {kinds}")
        out.append("")
    out.append(f"{t('hospital_verdict')}: {_hospital_verdict(e, t)}")
    out += [*e.notes, "", t("statement")]
    return "\n".join(out) + "\n"


# -- CSV --------------------------------------------------------------------------------------


def csv_header(e: Evidence, t: Labels) -> list[str]:
    header = [t("station"), t("device"), t("role"), t("area")]
    for k in e.kinds:
        header += [f"{t(k)} {t('scans')}", f"{t(k)} {t('paid')}", f"{t(k)} {t('refunded')}"]
    return [*header, t("verdict"), t("missing")]


def render_csv(e: Evidence, t: Labels) -> str:
    """One row per device. Starts with a BOM so Excel reads the UTF-8 (Chinese headers) right."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(csv_header(e, t))
    for r in e.rows:
        cells: list[str | int] = [r.station, r.device, t(r.role), t(r.area)]
        for k in e.kinds:
            c = r.cells[k]
            cells += [c.scans, c.paid, c.refunded] if k in r.required else [c.scans, "", ""]
        w.writerow([*cells, t("complete") if r.complete else t("incomplete"), " ".join(t(k) for k in r.missing)])
    return "\ufeff" + buf.getvalue()


# -- HTML -------------------------------------------------------------------------------------

_CSS = """
body{font-family:"Noto Sans CJK SC","Source Han Sans SC","WenQuanYi Micro Hei",sans-serif;margin:0;color:#111}
section{padding:12mm 14mm;page-break-after:always;break-after:page}
section:last-of-type{page-break-after:auto;break-after:auto}
h1{font-size:20px;margin:0 0 4px}h2{font-size:17px;margin:10px 0 6px}
p{margin:2px 0;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:11px;margin-top:8px}
th,td{border:1px solid #888;padding:3px 5px;text-align:left;vertical-align:top}
th{background:#eee}td.n{text-align:right}
.ok{color:#0a6b2d;font-weight:bold}.miss{color:#b00020;font-weight:bold}
.statement{margin-top:10px;font-size:11px;border-top:1px solid #888;padding-top:4px}
@page{size:A4 landscape;margin:0}
"""


def _esc(s: str) -> str:
    return html.escape(s, quote=True)


def _chart(a: AreaSummary, e: Evidence, t: Labels) -> str:
    """One bar per required kind: devices done (green) and missing (red), as inline SVG."""
    bars = []
    for k in e.kinds:
        needing = [r for r in a.rows if k in r.required]
        if needing:
            bars.append((t(k), sum(r.cells[k].done for r in needing), len(needing)))
    if not bars:
        return ""
    width, label_w, bar_h, gap = 520, 190, 18, 8
    scale = (width - label_w - 60) / max(n for _, _, n in bars)
    height = len(bars) * (bar_h + gap) + gap
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{_esc(t("chart"))}">']
    for i, (label, done, total) in enumerate(bars):
        y = gap + i * (bar_h + gap)
        done_w, miss_w = done * scale, (total - done) * scale
        parts.append(f'<text x="0" y="{y + 13}" font-size="11">{_esc(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{done_w:.1f}" height="{bar_h}" fill="#2e8b57"><title>{_esc(t("done"))} {done}</title></rect>')
        parts.append(f'<rect x="{label_w + done_w:.1f}" y="{y}" width="{miss_w:.1f}" height="{bar_h}" fill="#d0342c"><title>{_esc(t("to_do"))} {total - done}</title></rect>')
        parts.append(f'<text x="{label_w + done_w + miss_w + 6:.1f}" y="{y + 13}" font-size="11">{done}/{total}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _header_block(e: Evidence, t: Labels) -> str:
    return (
        f"<h1>{_esc(t('title'))}: {_esc(e.hospital_name or '—')}</h1>"
        f"<p>{_esc(t('code'))}: {_esc(e.hospital or '—')} · {_esc(t('period'))}: {_esc(_period(e, t))}"
        f" · {_esc(t('stations'))}: {len(e.stations)}" + (f" · {_esc(t('generated'))}: {_esc(e.generated)}" if e.generated else "") + "</p>"
    )


def _area_section(a: AreaSummary, e: Evidence, t: Labels) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in [t("station"), t("device"), t("role")])
    for k in e.kinds:
        head += f'<th>{_esc(t(k))}<br>{_esc(t("scans"))} / {_esc(t("paid"))} / {_esc(t("refunded"))}</th>'
    head += f"<th>{_esc(t('verdict'))}</th>"
    body = []
    for r in a.rows:
        cells = "".join(f"<td>{_esc(v)}</td>" for v in (r.station, r.device, t(r.role)))
        for k in e.kinds:
            cells += f'<td class="n">{_esc(_cell_text(r.cells[k], k in r.required, t))}</td>'
        cls = "ok" if r.complete else "miss"
        cells += f'<td class="{cls}">{_esc(_verdict(r, t))}</td>'
        body.append(f"<tr>{cells}</tr>")
    summary = "".join(
        f"<p>{_esc(t('summary'))} {_esc(t(s.role))}: {s.complete}/{s.devices} {_esc(t('devices_complete'))}; "
        + _esc(", ".join(f"{t(k)} {s.done_by_kind[k]}/{s.devices}" for k in s.required))
        + "</p>"
        for s in a.roles
    )
    verdict_cls = "ok" if a.complete else "miss"
    return (
        f'<section class="area" data-area="{_esc(a.area)}">{_header_block(e, t)}'
        f'<h2>{_esc(t(a.area))}: <span class="{verdict_cls}">{_esc(_area_verdict(a, t))}</span></h2>'
        f"{_chart(a, e, t)}"
        f'<table class="devices"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
        f"{summary}"
        f'<p>{_esc(t("hospital_verdict"))}: <span class="{"ok" if e.complete else "miss"}">{_esc(_hospital_verdict(e, t))}</span></p>'
        f'<p class="statement">{_esc(t("statement"))}</p></section>'
    )


def render_html(e: Evidence, t: Labels) -> str:
    sections = [_area_section(a, e, t) for a in e.areas]
    if not sections:
        sections = [f'<section>{_header_block(e, t)}<p>{_esc(t("nothing"))}</p><p class="statement">{_esc(t("statement"))}</p></section>']
    lang = "zh-CN" if t.lang == "zh" else "en"
    title = f"{t('title')} {e.hospital_name}".strip()
    return (
        f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
        f"<style>{_CSS}</style></head><body>{''.join(sections)}</body></html>\n"
    )
