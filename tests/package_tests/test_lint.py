"""pyflakes' checks over the code: an undefined name is a bug waiting for the line that runs it.

Only flake8's ``F`` codes (pyflakes) run: names, imports, f-strings. A name kept for callers'
imports (a re-export) says so with ``# noqa: F401``.
"""

from __future__ import annotations

from pathlib import Path
import subprocess
import sys

import pytest


ROOT = Path(__file__).resolve().parents[2]
CHECKED = (
    "bilevel_optuna", "samplers", "objectives", "studies", "benchmarks", "tests", "docs", "package",
    "tools",
)  # fmt: skip


def test_pyflakes_finds_nothing() -> None:
    pytest.importorskip("flake8", reason="flake8 is in the dev extra")
    done = subprocess.run(
        [sys.executable, "-m", "flake8", "--select", "F", "--isolated", *CHECKED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"pyflakes found:\n{done.stdout}{done.stderr}"
