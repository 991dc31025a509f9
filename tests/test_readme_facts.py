"""What README states about the code, checked against the code, so the two cannot drift apart.

Each config block in either README is loaded by the real config loader; the reject reasons, the
metric series and the CLI commands README lists are the ones the code has; every repository
file README names exists; the Chinese README keeps the sections a technician needs.
"""

from __future__ import annotations

import ast
import grp
import inspect
import os
import re
from pathlib import Path

import pytest

from scannerd import cli, config, framing, metrics

from helpers import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")
README_ZH = (REPO / "README.zh-CN.md").read_text(encoding="utf-8")


def toml_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```toml\n(.*?)^```$", markdown, re.MULTILINE | re.DOTALL)


def section(title: str, markdown: str = README, exact: bool = False) -> str:
    """The text of the `## ` or `### ` section whose heading starts with (or, exact, is) title."""
    rest = "" if exact else r"[^\n]*"
    m = re.search(rf"^#{{2,3}} {re.escape(title)}{rest}$\n(.*?)(?=^#{{2,3}} |\Z)", markdown, re.MULTILINE | re.DOTALL)
    assert m, f"README has no section '{title}'"
    return m.group(1)


# --- config blocks -----------------------------------------------------------------------------


@pytest.mark.parametrize("block", [*toml_blocks(README), *toml_blocks(README_ZH)],
                         ids=lambda b: b.splitlines()[0][:40])
def test_every_config_block_in_the_readmes_is_a_config_the_daemon_accepts(block: str, tmp_path: Path) -> None:
    # The socket group must exist on this machine to validate: stand in one it has.
    own_group = grp.getgrgid(os.getgid()).gr_name
    text = re.sub(r'^group = "[^"]*"', f'group = "{own_group}"', block, flags=re.MULTILINE)
    # Files a block names must exist, private, to validate (the WebSocket token).
    token = tmp_path / "websocket.token"
    token.write_text("0123456789abcdef0123456789abcdef\n")
    token.chmod(0o600)
    text = text.replace("/etc/scannerd/websocket.token", str(token))
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    config.load_config(path)  # raises ConfigError naming the key when README is wrong


def test_readme_has_the_config_blocks_it_should() -> None:
    # A block lost in an edit would make the test above pass vacuously.
    assert len(toml_blocks(README)) >= 5 and len(toml_blocks(README_ZH)) >= 2
    assert 'terminator = "auto"' in section("Configuration")


# --- reject reasons ------------------------------------------------------------------------------

# Where a reject reason is written as a literal: Rejected(dev, "x", …), abort("x"), Abort("x", …),
# Garbage("x", …), _bad(t, "x", …), _reject(dev, "x", …), `reason = "x"`, what
# framing.rejection_reason returns, and a rule's `reject = "x"` in the default rules.
_REASON_CALL = re.compile(r'(?:Rejected\([^,()]+,\s*|\babort\(|\bAbort\(|Garbage\(|_bad\([^,()]+,\s*|_reject\([^,()]+,\s*'
                          r'|\breason = )'
                          r'"([a-z_]+)"(?:\s+if\s+\w+\s+else\s+"([a-z_]+)")?')
_REASON_FILES = ["framing.py", "pipeline.py", "service.py", "sources/*.py", "control/*.py"]


def reasons_in_code() -> set[str]:
    found: set[str] = set()
    for pattern in _REASON_FILES:
        for path in (REPO / "scannerd").glob(pattern):
            for m in _REASON_CALL.finditer(path.read_text(encoding="utf-8")):
                found.update(g for g in m.groups() if g)
    found.update(re.findall(r'return "([a-z_]+)"', inspect.getsource(framing.rejection_reason)))
    rules = (REPO / "scannerd" / "rules" / "default.toml").read_text(encoding="utf-8")
    found.update(re.findall(r'^reject = "([a-z_]+)"', rules, re.MULTILINE))
    return found


def test_readme_names_every_reject_reason_the_code_gives() -> None:
    reasons = reasons_in_code()
    # The scan must find the reasons it is known to: otherwise the patterns above went stale.
    assert {"empty", "non_printable", "no_terminator", "partial_read", "partial_character", "binary_data", "device_removed",
            "events_dropped", "not_armed", "merchant_receive_code", "control_frame_bad_lrc"} <= reasons
    table = section("Events").split("Reject reasons")[1]
    listed = set(re.findall(r"`([a-z_]+)`", table))
    assert not reasons - listed, f"README's reject reasons lack {sorted(reasons - listed)}"


# --- metrics -----------------------------------------------------------------------------------


def metrics_in_code() -> set[str]:
    """The series the daemon's code records: every `inc(…)` / `observe(…)` / `set(…)` call whose name is a
    literal, or a module constant (`METRIC = "scannerd_…"`, also under an import alias)."""
    trees = [ast.parse(p.read_text(encoding="utf-8")) for p in (REPO / "scannerd").rglob("*.py")]
    constants: dict[str, str] = {}
    for tree in trees:
        for statement in tree.body:
            if (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                    and isinstance(statement.targets[0], ast.Name) and isinstance(statement.value, ast.Constant)
                    and str(statement.value.value).startswith("scannerd_")):
                constants[statement.targets[0].id] = str(statement.value.value)
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if alias.asname and alias.name in constants:
                        constants[alias.asname] = constants[alias.name]
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("inc", "observe", "set") and node.args):
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant) and str(first.value).startswith("scannerd_"):
                names.add(str(first.value))
            elif isinstance(first, ast.Name) and first.id in constants:
                names.add(constants[first.id])
    return names


def test_readme_metrics_table_is_what_the_daemon_records() -> None:
    recorded = metrics_in_code()
    assert {"scannerd_scans_total", "scannerd_delivered_total", "scannerd_classify_errors_total",
            "scannerd_delivery_latency_seconds"} <= recorded
    table = section("Metrics", exact=True)
    listed = set(re.findall(r"`(scannerd_[a-z_]+)\{?", table))
    assert listed == recorded, f"README lists {sorted(listed - recorded)} the code does not record; " \
                               f"lacks {sorted(recorded - listed)}"


def test_every_metric_readme_names_anywhere_exists() -> None:
    named = set(re.findall(r"\bscannerd_[a-z_]+(?:_total|_seconds)\b", README))
    assert not named - set(metrics.HELP) - metrics_in_code(), sorted(named - set(metrics.HELP))


# --- CLI and files -----------------------------------------------------------------------------


def test_readme_cli_table_has_every_command() -> None:
    table = section("The CLI")
    rows = set(re.findall(r"^\| `scannerd ([a-z-]+)", table, re.MULTILINE))
    rows |= set(re.findall(r"^\| `scannerd [a-z-]+`, `([a-z-]+)`", table, re.MULTILINE))  # "record`, `replay"
    assert rows == set(cli.COMMANDS), f"lacks {sorted(set(cli.COMMANDS) - rows)}, extra {sorted(rows - set(cli.COMMANDS))}"


# A path of the repository: anywhere in the text under these folders, backticked under scannerd/
# (elsewhere `scannerd/…` is an MQTT topic), or a relative link target.
_REPO_PATH = re.compile(r"(?<![\w/.])((?:bench|docs|systemd|udev|tests|\.ci)/[A-Za-z0-9_./-]*[A-Za-z0-9_/])"
                        r"|`(scannerd/[A-Za-z0-9_./-]+)`|\]\(([^)#:\s]+)\)")


@pytest.mark.parametrize("markdown", [README, README_ZH], ids=["README.md", "README.zh-CN.md"])
def test_every_repository_file_the_readme_names_exists(markdown: str) -> None:
    named = {a or b or c for a, b, c in _REPO_PATH.findall(markdown)}
    assert "bench/run.py" in named or markdown is README_ZH
    missing = sorted(p for p in named if not (REPO / p.rstrip("/")).exists())
    assert not missing, f"README names files that are not in the repository: {missing}"


def test_the_chinese_readme_has_what_a_technician_needs() -> None:
    headings = re.findall(r"^## (.+)$", README_ZH, re.MULTILINE)
    for needed in ("快速开始", "演示", "配置", "自助机", "验收流程", "故障排查"):
        assert any(h.startswith(needed) for h in headings), f"README.zh-CN.md has no '## {needed}…'"
    # The placeholder of the first restructure is gone.
    assert "占位" not in README_ZH
