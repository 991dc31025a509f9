"""The table printed at the end of a bench run (every figure is also in the JSON file)."""

from __future__ import annotations

from typing import Any


def _us(v: Any) -> str:
    return "—" if v is None else f"{v:,.0f} µs"


def _ratio(a: Any, b: Any) -> str:
    try:
        return f"{a / b:.2f}×"
    except (TypeError, ZeroDivisionError):
        return "—"


def render_table(r: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []

    def add(figure: str, ours: str, ref: str, ratio: str) -> None:
        rows.append((figure, ours, ref, ratio))

    def err(section: str) -> bool:
        if section in r and "error" in r[section]:
            add(f"{section}: FAILED", r[section]["error"][:80], "", "")
            return True
        return section not in r

    if not err("e2e"):
        for mode, label in (("unpaced", "unpaced"), ("paced_115200", "paced 115200 baud")):
            s, b = r["e2e"][mode]["scannerd"], r["e2e"][mode]["baseline"]
            for q in ("p50", "p90", "p99"):
                add(f"pty → socket HIS, {label}, {q} (n={s['n']})", _us(s[f"{q}_us"]), "bare " + _us(b[f"{q}_us"]),
                    _ratio(s[f"{q}_us"], b[f"{q}_us"]))
            add(f"pty → socket HIS, {label}: lost / void (bench stalled mid-scan)", f"{s.get('lost')} / {s.get('void_bench_stalled')}",
                f"bare {b.get('lost')} / {b.get('void_bench_stalled')}", "")
    if not err("mqtt"):
        s, b = r["mqtt"]["to_subscriber_unpaced"]["scannerd"], r["mqtt"]["to_subscriber_unpaced"]["baseline"]
        for q in ("p50", "p99"):
            add(f"pty → MQTT subscriber, {q} (n={s['n']})", _us(s[f"{q}_us"]), "bare " + _us(b[f"{q}_us"]),
                _ratio(s[f"{q}_us"], b[f"{q}_us"]))
        add("pty → MQTT subscriber: lost", f"{s.get('lost')}", f"bare {b.get('lost')}", "")
        pa = r["mqtt"].get("scannerd_frame_to_puback")
        if pa:
            add("frame → PUBACK (daemon histogram), mean", _us(pa["mean_us"]),
                f"p50 ≤ {pa['p50_bucket_le_us']:,.0f} µs, p99 ≤ {pa['p99_bucket_le_us']:,.0f} µs", "")
    if not err("load"):
        ld = r["load"]
        for key, label in (("load_16x20", "16 × 20 scans/s"), ("load_64x20", "64 × 20 scans/s")):
            if key in ld:
                s, b = ld[key]["scannerd"], ld[key]["baseline"]
                add(f"{label}: CPU % of one core", f"{s['cpu_pct_of_one_core']:.1f} %", f"bare {b['cpu_pct_of_one_core']:.1f} %",
                    _ratio(s["cpu_pct_of_one_core"], b["cpu_pct_of_one_core"]))
                add(f"{label}: p99 / lost / RSS", f"{_us(s['p99_us'])} / {s['lost'] + s['not_sent']} / {s['rss_mb']:.0f} MB",
                    f"bare {_us(b['p99_us'])} / {b['lost'] + b['not_sent']} / {b['rss_mb']:.0f} MB", _ratio(s["p99_us"], b["p99_us"]))
                sn, bn = s.get("bench_loop_lag_ms"), b.get("bench_loop_lag_ms")
                if sn and bn:
                    add(f"{label}: machine noise (bench's own loop lag p99 / max)", f"{sn['p99']:.1f} / {sn['max']:.1f} ms",
                        f"in bare rounds {bn['p99']:.1f} / {bn['max']:.1f} ms", "")
        if "knee_64" in ld:
            k = ld["knee_64"]
            def knee(name: str) -> str:
                v, ok = k["knee_scans_per_s"][name], k["last_within_limit_scans_per_s"][name]
                if v is None:
                    return f"> {k['max_tested_scans_per_s']:,.0f}"
                return f"{ok or 0:,.0f}–{v:,.0f}"
            add(f"knee: scans/s where p99 passes {k['limit_p99_us'] / 1000:.0f} ms (64 scanners)", knee("scannerd"),
                "bare " + knee("baseline"), "")
        if "idle_16" in ld:
            s, b = ld["idle_16"]["scannerd"], ld["idle_16"]["baseline"]
            add(f"idle, 16 scanners, {s['seconds']:.0f} s: CPU %", f"{s['cpu_pct_of_one_core']:.2f} %",
                f"bare {b['cpu_pct_of_one_core']:.2f} %", "")
    if not err("startup"):
        m = r["startup"]["median_ms"]
        add("start-up to READY=1", f"{m['scannerd_ready']:.0f} ms", f'python -c "import asyncio" {m["python_import_asyncio"]:.0f} ms',
            f"{r['startup']['ready_vs_import_asyncio']:.2f}×")
        add("scannerd --version", f"{m['scannerd_version']:.0f} ms", f"python -c pass {m['python_pass']:.0f} ms",
            f"{r['startup']['version_vs_pass']:.2f}×")
    if not err("decode"):
        for key, label in (("digits", "decode in-process, digit recording"), ("fixtures", "decode in-process, 14 fixture recordings")):
            d = r["decode"][key]
            s = d["scannerd"]
            p = d.get("barcode_server")
            ours = f"{s['scans_per_s']:,} scans/s, exact {s['exact']}/{s['of']}"
            ref = "barcode-server skipped" if p is None else f"barcode-server {p['scans_per_s']:,} scans/s, exact {p['exact']}/{p['of']}"
            add(label, ours, ref, f"{d['ratio_scannerd_to_peer']:.2f}×" if p else "")
    if not err("replay"):
        d = r["replay"]
        s, p = d["scannerd"], d.get("barcode_server")
        add(f"replay FILE --json, {d['scans']} scans, file → events", f"{s['scans_per_s']:,} scans/s ({s['seconds']:.2f} s), exact {s['exact_masked']}",
            "barcode-server skipped" if p is None else f"barcode-server {p['scans_per_s']:,} scans/s ({p['seconds']:.2f} s), exact {p['exact_masked']}",
            f"{d['ratio_scannerd_to_peer']:.2f}×" if p else "")
    header = ("figure", "scannerd", "reference, same run", "ratio")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    m = r.get("machine", {})
    lines.append(f"\n{m.get('cpus')} CPUs, Python {m.get('python')}, load average {m.get('loadavg_start')} → {m.get('loadavg_end')}; "
                 f"plan {r.get('plan', {}).get('name')}, {r.get('wall_s')} s")
    return "\n".join(lines)
