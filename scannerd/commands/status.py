"""`scannerd status`: what the running daemon sees — per device present or absent, armed (kiosks)
with time left, scans and rejects today by reason, latency p50/p99; the last reload; the sinks."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..client import ClientError, request, resolve_socket_path
from ..config import ConfigError
from ..i18n import _, ljust


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("status", help="ask the running daemon for its state")
    p.add_argument("--socket", help="socket path (default: from the config)")
    p.add_argument("-c", "--config", help="config file, to find the socket path")
    p.add_argument("--json", action="store_true")
    p.add_argument("--metrics", action="store_true", help="print the Prometheus metrics text instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        path = resolve_socket_path(args.socket, args.config)
        if args.metrics:
            print(request(path, {"cmd": "metrics", "format": "prometheus"})["text"], end="")
            return 0
        answer = request(path, {"cmd": "status"})
    except (ClientError, ConfigError) as e:
        print(_("error: {message}").format(message=e), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, ensure_ascii=False, indent=2))
        return 0
    print(render(answer))
    return 0


_CONNECTION_KEYS = frozenset({"connections", "his", "monitors", "unsubscribed"})


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return _("{s} s").format(s=s)
    if s < 3600:
        return _("{m} min {s} s").format(m=s // 60, s=s % 60)
    if s < 86400:
        return _("{h} h {m} min").format(h=s // 3600, m=s % 3600 // 60)
    return _("{d} d {h} h").format(d=s // 86400, h=s % 86400 // 3600)


def _rejects(by_reason: dict[str, int]) -> str:
    if not by_reason:
        return _("no rejects")
    return _("rejects: {list}").format(list=", ".join(f"{reason} {n}" for reason, n in sorted(by_reason.items())))


def _armed(armed: dict[str, Any] | None) -> str:
    if armed is None:
        return ""
    if not armed.get("armed"):
        return _("not armed")
    left = armed.get("remaining_s")
    if left is None:
        return _("armed (until disarmed)")
    return _("armed, {seconds} s left").format(seconds=round(left))


def _reload(last: dict[str, Any] | None) -> str:
    if not last:
        return _("last reload: none since start")
    at = str(last.get("at", ""))[11:19] or "?"
    if last.get("ok"):
        return _("last reload: applied at {at}").format(at=at)
    if last.get("error"):
        return _("last reload: REFUSED at {at}, old config kept: {error}").format(at=at, error=last["error"])
    return _("last reload: REFUSED at {at}, old config kept (the daemon's log says why: reload_refused)").format(at=at)


def _connections(sinks: dict[str, Any]) -> str | None:
    """HIS and monitor connections; the daemon leaves out the connection asking."""
    socket = sinks.get("socket")
    if not isinstance(socket, dict) or not isinstance(socket.get("his"), int):
        return None
    return _("connections: {his} HIS, {monitors} monitor, {other} not subscribed").format(
        his=socket["his"], monitors=socket.get("monitors", 0), other=socket.get("unsubscribed", 0))


def render(answer: dict[str, Any]) -> str:
    """The status reply as a technician reads it. Pure: tested in both languages."""
    lines = [
        _("scannerd {version} on {host}, up {uptime}, config {config}").format(
            version=answer.get("version", "?"), host=answer.get("host", "?"),
            uptime=_duration(float(answer.get("uptime_s", 0))), config=answer.get("config", "?")),
        _reload(answer.get("last_reload")),
    ]
    today = answer.get("today")
    if isinstance(today, dict):
        lines.append(_("today ({date}): {scans} scans, {rejects} rejects").format(
            date=today.get("date", "?"), scans=today.get("scans", 0), rejects=today.get("rejects", 0)))
        per_device: dict[str, Any] = today.get("devices", {})
    else:
        lines.append(_("scans today: {count}").format(count=answer.get("scans_today", 0)))
        per_device = {}
    connections = _connections(answer.get("sinks", {}))
    if connections:
        lines.append(connections)
    lines.append("")
    devices = answer.get("devices", [])
    armed: dict[str, Any] = answer.get("armed", {}) or {}
    latency: dict[str, Any] = answer.get("latency", {}) or {}
    if not devices:
        lines.append(_("no scanners running (none configured and none detected): `scannerd devices` shows why, `scannerd demo` shows the whole path"))
    width = max([len(str(d.get("name", ""))) for d in devices] + [8]) + 2
    for d in devices:
        name = str(d.get("name", "?"))
        state = _("present") if d.get("present") else _("ABSENT")
        head = f"  {ljust(name, width)}{ljust(str(d.get('transport', '')), 8)}{ljust(state, 9)}{d.get('path', '')}"
        head += f"  {d.get('area', '')}/{d.get('role', '')}"
        arm = _armed(armed.get(name)) if d.get("role") == "kiosk" else ""
        lines.append(head + (f"  {arm}" if arm else ""))
        counts = per_device.get(name)
        detail = []
        if counts is not None:
            detail.append(_("today {scans} scans, {rejects}").format(scans=counts.get("scans", 0), rejects=_rejects(counts.get("rejects", {}))))
        lat = latency.get(name)
        if isinstance(lat, dict) and "p50_ms" in lat:
            detail.append(_("latency p50 {p50} ms, p99 {p99} ms").format(p50=lat["p50_ms"], p99=lat.get("p99_ms", "?")))
        last = d.get("last_scan_s_ago")
        detail.append(_("last scan: never") if last is None else _("last scan {ago} ago").format(ago=_duration(float(last))))
        lines.append("      " + _("; ").join(detail))
    sinks = answer.get("sinks", {})
    if sinks:
        lines.append("")
    for sink_name, s in sinks.items():
        # The socket's connection counts are on the connections line above (without this query).
        shown = {k: v for k, v in s.items() if not (sink_name == "socket" and k in _CONNECTION_KEYS)}
        lines.append(_("  sink {name}: ").format(name=sink_name) + " ".join(f"{k}={v}" for k, v in shown.items()))
    for name, listener in answer.get("listeners", {}).items():  # the WebSocket and metrics ports
        error = listener.get("error")
        lines.append(_("  {name} {listen}: {state}").format(name=name, listen=listener.get("listen", "?"), state=listener.get("state", "?"))
                     + (_(" ({error}, retrying)").format(error=error) if error else ""))
    ledger = answer.get("acceptance")
    if ledger:
        why = f" ({ledger['error']})" if ledger.get("error") else ""
        lines.append(_("acceptance ledger: {state}{why} {path}: {scans} scans, {results} results, {pending} not yet written").format(
            state=ledger["state"], why=why, path=ledger["path"], scans=ledger["scans"], results=ledger["results"],
            pending=ledger["pending"]))
    return "\n".join(lines)
