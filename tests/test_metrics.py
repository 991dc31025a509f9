"""Metrics: counters and histograms, Prometheus text, served over HTTP by a real daemon."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from scannerd.metrics import Histogram, Metrics

from helpers import Client, Daemon, PtyScanner, wait_for, wechat_code


def test_histogram_buckets_and_quantiles() -> None:
    h = Histogram((0.001, 0.01, 0.1))
    for v in (0.0005, 0.002, 0.003, 0.05, 5.0):
        h.observe(v)
    assert h.counts == [1, 2, 1, 1] and h.count == 5
    assert h.quantile(0.5) == 0.01 and h.quantile(1.0) == float("inf")


def test_render_is_prometheus_text() -> None:
    m = Metrics()
    m.inc("scannerd_scans_total", {"device": "w1", "channel": "wechat", "kind": "payment"})
    m.inc("scannerd_scans_total", {"device": "w1", "channel": "wechat", "kind": "payment"})
    m.observe("scannerd_delivery_latency_seconds", 0.0003, {"sink": "socket"})
    text = m.render()
    assert "# TYPE scannerd_scans_total counter" in text
    assert 'scannerd_scans_total{channel="wechat",device="w1",kind="payment"} 2' in text
    assert 'scannerd_delivery_latency_seconds_bucket{sink="socket",le="0.0005"} 1' in text
    assert 'scannerd_delivery_latency_seconds_bucket{sink="socket",le="+Inf"} 1' in text
    assert 'scannerd_delivery_latency_seconds_count{sink="socket"} 1' in text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_daemon_serves_metrics_over_http(tmp_path: Path) -> None:
    pty = PtyScanner(tmp_path)
    sock = tmp_path / "s.sock"
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(f'[socket]\npath = "{sock}"\n[metrics]\nlisten = "127.0.0.1:{port}"\n[[scanner]]\nname = "w1"\npath = "{pty.link}"\n')
    daemon = Daemon(config, sock)
    try:
        daemon.wait_ready()
        client = Client(sock)
        pty.release_slave()
        client.wait_present()
        code = wechat_code()
        pty.write(f"{code}\r".encode())
        client.next_of("scan")
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'scannerd_scans_total{channel="wechat",device="w1",kind="payment"} 1' in body
        assert 'scannerd_delivery_latency_seconds_count{sink="socket"} 1' in body
        assert code not in body
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
        assert e.value.code == 404
        reply = client.command({"cmd": "metrics", "format": "prometheus"})
        assert "scannerd_scans_total" in reply["text"]
    finally:
        daemon.stop()
        pty.close()


def test_a_stalled_loop_shows_in_the_loop_lag_metrics(tmp_path: Path) -> None:
    import signal as _signal

    sock = tmp_path / "s.sock"
    config = tmp_path / "config.toml"
    config.write_text(f'[socket]\npath = "{sock}"\n[discovery]\nauto = false\n')
    daemon = Daemon(config, sock)
    try:
        daemon.wait_ready()

        def lag() -> dict[str, Any]:
            metrics = Client(sock, role=None).command({"cmd": "metrics"})["metrics"]
            return {"hist": metrics.get("scannerd_loop_lag_seconds", []), "last": metrics.get("scannerd_loop_lag_last_seconds", [])}

        wait_for(lambda: lag()["hist"] and lag()["hist"][0]["count"] >= 1, 20)
        daemon.signal(_signal.SIGSTOP)  # the whole process stalls, as a blocking call would stall the loop
        time.sleep(1.5)
        daemon.signal(_signal.SIGCONT)
        # Stopped 1.5 s with a 1 s tick: the next tick runs at least 0.5 s late.
        wait_for(lambda: lag()["hist"][0]["sum"] >= 0.4, 20)
        text = Client(sock, role=None).command({"cmd": "metrics", "format": "prometheus"})["text"]
        assert "# TYPE scannerd_loop_lag_seconds histogram" in text and "# TYPE scannerd_loop_lag_last_seconds gauge" in text
    finally:
        daemon.stop()
