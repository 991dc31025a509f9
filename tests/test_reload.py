"""SIGHUP reload: scanners added without dropping clients; a broken config changes nothing."""

from __future__ import annotations

import signal
from pathlib import Path

from helpers import Client, Daemon, PtyScanner, alipay_code, wait_for, wechat_code


def scanner_block(name: str, link: Path) -> str:
    # A long idle gap: a partial scan must stay partial across the reload, not time out.
    return f'\n[[scanner]]\nname = "{name}"\npath = "{link}"\nterminator = "CR"\nidle_gap_ms = 3000\n'


def test_sighup_adds_a_scanner_keeps_clients_and_refuses_a_broken_config(tmp_path: Path) -> None:
    one, two = PtyScanner(tmp_path, "scanner-1"), PtyScanner(tmp_path, "scanner-2")
    sock = tmp_path / "s.sock"
    config = tmp_path / "config.toml"
    base = f'[socket]\npath = "{sock}"\n'
    config.write_text(base + scanner_block("window-1", one.link))
    daemon = Daemon(config, sock)
    try:
        daemon.wait_ready()
        client = Client(sock)
        one.release_slave()
        client.wait_present()

        # A scan in flight on window-1 while the reload happens must survive it.
        code1 = wechat_code()
        one.write(code1[:9].encode())
        config.write_text(base + scanner_block("window-1", one.link) + scanner_block("window-2", two.link))
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: len(client.command({"cmd": "status"})["devices"]) == 2, 30)
        one.write(f"{code1[9:]}\r".encode())
        assert client.next_of("scan")["code"] == code1

        two.release_slave()
        client.wait_present()
        code2 = alipay_code()
        two.write(f"{code2}\r".encode())
        event = client.next_of("scan")
        assert (event["device"], event["code"]) == ("window-2", code2)

        # A broken config on SIGHUP is refused and logged; both scanners keep working.
        config.write_text(base + '[[scanner]]\nname = "window-1"\npath = "/dev/x"\nbaudrate = "fast"\n')
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: any(e.get("event") == "reload_refused" for e in daemon.log_events()), 30)
        refused = next(e for e in daemon.log_events() if e.get("event") == "reload_refused")
        assert "scanner[1].baudrate" in refused["error"]
        code3 = wechat_code()
        one.write(f"{code3}\r".encode())
        assert client.next_of("scan")["code"] == code3
        assert len(client.command({"cmd": "status"})["devices"]) == 2

        # Removing a scanner stops its source; the client stays connected throughout.
        config.write_text(base + scanner_block("window-2", two.link))
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: [d["name"] for d in client.command({"cmd": "status"})["devices"]] == ["window-2"], 30)
        assert daemon.proc.poll() is None
    finally:
        daemon.stop()
        one.close()
        two.close()


def test_reload_to_an_unservable_socket_is_refused_and_the_old_socket_keeps_serving(tmp_path: Path) -> None:
    pty = PtyScanner(tmp_path)
    sock = tmp_path / "s.sock"
    config = tmp_path / "config.toml"
    block = scanner_block("window-1", pty.link)
    config.write_text(f'[socket]\npath = "{sock}"\n' + block)
    (tmp_path / "a-file").write_text("not a directory")
    daemon = Daemon(config, sock)
    try:
        daemon.wait_ready()
        client = Client(sock)
        pty.release_slave()
        client.wait_present()
        config.write_text(f'[socket]\npath = "{tmp_path / "a-file" / "s.sock"}"\n' + block)
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: any(e.get("event") == "reload_refused" for e in daemon.log_events()), 30)
        refused = next(e for e in daemon.log_events() if e.get("event") == "reload_refused")
        assert refused["error"].startswith("socket:")
        status = client.command({"cmd": "status"})  # same connection, old config still in force
        assert status["config"] == str(config) and status["sinks"]["socket"]["state"] == "listening"
        code = wechat_code()
        pty.write(f"{code}\r".encode())
        assert client.next_of("scan")["code"] == code
    finally:
        daemon.stop()
        pty.close()


def test_reload_moving_the_socket_carries_waiting_scans_and_a_new_area_keeps_the_port(tmp_path: Path) -> None:
    pty = PtyScanner(tmp_path)
    sock, sock2 = tmp_path / "s.sock", tmp_path / "t.sock"
    config = tmp_path / "config.toml"
    config.write_text(f'[socket]\npath = "{sock}"\n' + scanner_block("window-1", pty.link))
    daemon = Daemon(config, sock)
    try:
        daemon.wait_ready()
        probe = Client(sock, role=None)
        pty.release_slave()
        probe.wait_present()
        probe.close()
        waiting = alipay_code()
        pty.write(f"{waiting}\r".encode())  # no HIS connected: it waits in the queue
        wait_for(lambda: any(e.get("event") == "queued_no_subscriber" for e in daemon.log_events()), 30)
        pty.write(b"13456")  # a scan in flight across the reload
        config.write_text(f'[socket]\npath = "{sock2}"\n' + scanner_block("window-1", pty.link) + 'area = "emergency"\n')
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: sock2.exists() and not sock.exists(), 30)
        his = Client(sock2)
        event = his.next_of("scan")
        assert event["code"] == waiting
        rest = "7890123456789"
        pty.write(f"{rest}\r".encode())
        event = his.next_of("scan")
        assert event["code"] == "13456" + rest and event["area"] == "emergency"
    finally:
        daemon.stop()
        pty.close()


def heavy_site_rules(n: int) -> str:
    """Site rules of the kind a hospital adds (one per issuer prefix): building a classifier
    from many of them takes a while, which is why a reload must not do it on the event loop."""
    return "".join(
        f'\n[[rule]]\nid = "site.card{i}"\nchannel = "his"\nkind = "other"\nconfidence = "site"\npriority = {300 + i}\n'
        f'regex = \'HC{i:03d}[0-9A-F]{{8,12}}\'\nexamples = ["HC{i:03d}0123ABCD"]\nsource = "site card {i}"\n'
        for i in range(n)
    )


def test_a_scan_during_a_reload_arrives_whole_with_the_default_idle_gap(tmp_path: Path) -> None:
    """A reload (config read, classifier built, udev enumerated) while a scanner is sending must
    not stall the loop long enough for the default 50 ms idle gap to cut the read in two."""
    pty = PtyScanner(tmp_path)
    sock = tmp_path / "s.sock"
    config = tmp_path / "config.toml"
    block = f'\n[[scanner]]\nname = "window-1"\npath = "{pty.link}"\nterminator = "CR"\n'  # default idle gap
    config.write_text(f'[socket]\npath = "{sock}"\n[policy]\nduplicate_window_ms = 0\n' + block + heavy_site_rules(60))
    daemon = Daemon(config, sock)
    try:
        daemon.wait_ready(30)
        his = Client(sock)
        his.wait_present()
        pty.release_slave()
        for round_ in range(4):
            reloads = sum(1 for e in daemon.log_events() if e.get("event") == "reloaded")
            daemon.signal(signal.SIGHUP)
            code = wechat_code()
            pty.write(f"{code}\r".encode(), baud=9600)  # ~20 ms of characters while the reload runs
            got = his.next_of("scan", "reject", timeout=30)
            assert got["type"] == "scan" and got["code"] == code, (round_, got)
            wait_for(lambda before=reloads: sum(1 for e in daemon.log_events() if e.get("event") == "reloaded") > before, 30)
    finally:
        daemon.stop()
        pty.close()
