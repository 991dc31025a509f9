"""The package type-checks under mypy --strict and the tree passes ruff, both with the config in
pyproject.toml: run here so that CI (which runs the test suite) runs them too."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helpers import REPO


def _tool(name: str) -> str:
    """The copy installed with the test extras, beside this interpreter."""
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is not installed: pip install -e '.[test]'"
    return found


def test_mypy_strict_is_clean() -> None:
    out = subprocess.run([_tool("mypy")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_ruff_is_clean() -> None:
    out = subprocess.run([_tool("ruff"), "check", "scannerd", "tests", "bench"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
