"""README's protocol section is tested as written: its command table matches the command table in
the code, and its minimal HIS client runs against the real daemon."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from scannerd.command_table import COMMANDS, MQTT, SOCKET, WEBSOCKET

from helpers import REPO, Client, Daemon, PtyScanner, wait_for, wechat_code

README = (REPO / "README.md").read_text(encoding="utf-8")


def commands_table() -> dict[str, dict[str, object]]:
    block = README.split("<!-- commands-table")[1].split("<!-- end commands-table -->")[0]
    rows: dict[str, dict[str, object]] = {}
    for line in block.splitlines():
        cells = [c.strip().replace("\x00", "|") for c in line.replace("\\|", "\x00").strip().strip("|").split("|")]
        if len(cells) != 6 or not cells[0].startswith("`"):
            continue
        name = cells[0].strip("`")
        args = {m.group(1): "(required)" in m.group(0) for m in re.finditer(r"`(\w+)`( \(required\))?", cells[1])
                if m.group(1) not in ("json", "prometheus")}
        transports = {t for t, cell in zip((SOCKET, WEBSOCKET, MQTT), cells[2:5], strict=True) if cell == "✓"}
        rows[name] = {"args": args, "transports": transports}
    return rows


def test_readme_command_table_is_the_code_s_table() -> None:
    rows = commands_table()
    assert sorted(rows) == sorted(c.name for c in COMMANDS)
    for c in COMMANDS:
        row = rows[c.name]
        assert row["args"] == {k: a.required for k, a in c.args.items()}, c.name
        assert row["transports"] == set(c.transports), c.name


def minimal_client() -> str:
    blocks = re.findall(r"```python\n(# minimal HIS client\n.*?)```", README, re.S)
    assert len(blocks) == 1, "README has one minimal HIS client"
    return blocks[0]


def test_readme_minimal_his_client_runs_as_written(tmp_path: Path) -> None:
    pty = PtyScanner(tmp_path, "scanner")
    sock = tmp_path / "s.sock"
    config = tmp_path / "config.toml"
    config.write_text(f'[socket]\npath = "{sock}"\n[[scanner]]\nname = "window-1"\npath = "{pty.link}"\nterminator = "CR"\n')
    daemon = Daemon(config, sock)
    program = (
        f"SOCKET_PATH = {str(sock)!r}\n"
        "def pay(channel, code):\n"
        "    import json, sys\n"
        "    print(json.dumps([channel, code]), flush=True)\n"
        + minimal_client()
    )
    client = None
    try:
        daemon.wait_ready()
        Client(sock, role=None).wait_present()
        pty.release_slave()
        code = wechat_code()
        pty.write(f"{code}\r".encode(), None)  # before the HIS connects: it waits for it
        client = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
        assert client.stdout is not None
        assert json.loads(client.stdout.readline()) == ["wechat", code]

        def acked() -> bool:
            series = Client(sock, role=None).command({"cmd": "metrics"})["metrics"].get("scannerd_acks_total", [])
            return sum(s["value"] for s in series) == 1

        wait_for(acked, 10)
    finally:
        if client is not None:
            client.kill()
            client.wait(5)
        daemon.stop()
        pty.close()
