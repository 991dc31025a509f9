"""Start-up cost: the CLI imports only the command it runs (`--version` none at all)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

from scannerd import __version__, cli, commands

from helpers import REPO


def modules_after(argv: list[str]) -> list[str]:
    """The scannerd modules (and argparse) imported by `scannerd ARGV`, in a fresh interpreter."""
    probe = (
        "import json, sys\n"
        "from scannerd.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('scannerd') or m == 'argparse')), file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], check=True, cwd=REPO, capture_output=True, text=True, timeout=120)
    return list(json.loads(r.stderr.strip().splitlines()[-1]))


def test_version_imports_no_command_and_no_argparse() -> None:
    assert modules_after(["--version"]) == ["scannerd", "scannerd.cli"]


def test_a_command_imports_only_its_own_module() -> None:
    loaded = modules_after(["check-config", "--help"])
    assert "scannerd.commands.check_config" in loaded
    others = [m for m in loaded if m.startswith("scannerd.commands.") and m not in
              ("scannerd.commands.check_config", "scannerd.commands._common")]
    assert others == []


def test_full_help_still_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_every_command_module_is_in_the_table_under_the_name_it_registers() -> None:
    modules = {m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")}
    in_table = {target.partition(":")[0].rsplit(".", 1)[1] for target in cli.COMMANDS.values()}
    assert modules == in_table
    for name in cli.COMMANDS:
        parser = cli.build_parser(only=name)
        sub = next(a for a in parser._actions if a.dest == "command")
        assert sub.choices is not None and list(sub.choices) == [name]


def test_version_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"scannerd {__version__}\n"


def test_an_unknown_command_is_an_error_naming_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["frobnicate"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
