"""Every runnable example of the documentation runs as shown.

Examples are files under ``docs/examples/`` that the pages include, so the docs cannot rot. A
docstring that says ``slow:`` (with the time it takes on a 2-core CPU) marks a long example,
left out of the default run; ``Run from the repository root`` runs it there instead of in a
fresh folder.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from docs_tests._docs import DOCS
from docs_tests._docs import README
from docs_tests._docs import ROOT
from docs_tests._docs import fenced_blocks

EXAMPLES = sorted((DOCS / "examples").glob("*.py"))


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


def _param(path: Path) -> object:
    marks = [pytest.mark.slow] if "slow:" in _docstring(path) else []
    return pytest.param(path, id=path.stem, marks=marks)


def test_no_example_shadows_a_module() -> None:
    # ``python docs/examples/x.py`` puts docs/examples/ first on sys.path: an example named
    # like a module (statistics.py) would be imported in its place by every library.
    # What is installed is what a fresh interpreter finds from a neutral folder: this test
    # process's own sys.path holds what other tests added (benchmarks/, tests/).
    names = [path.stem for path in EXAMPLES]
    for name in names:
        assert name not in sys.stdlib_module_names, f"{name}.py shadows the stdlib"
    probe = (
        "import importlib.util, sys; "
        "print([n for n in sys.argv[1:] if importlib.util.find_spec(n)])"
    )
    found = subprocess.run(
        [sys.executable, "-I", "-c", probe, *names],
        capture_output=True,
        text=True,
        check=True,
        cwd=DOCS / "_static",
    ).stdout.strip()
    assert found == "[]", f"examples shadow installed modules: {found}"


def test_every_example_has_a_docstring() -> None:
    assert EXAMPLES
    for path in EXAMPLES:
        doc = _docstring(path)
        assert doc, f"{path.name}: say in a docstring what it shows"
        if "slow:" in doc:
            assert "minute" in doc or " s " in doc, f"{path.name}: say how long it takes"


@pytest.mark.parametrize("path", [_param(p) for p in EXAMPLES])
def test_example_runs(path: Path, tmp_path: Path) -> None:
    cwd = ROOT if "Run from the repository root" in _docstring(path) else tmp_path
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("BILEVEL_OPTUNA_CHAT_MODEL", None)  # the examples promise the embedded model
    proc = subprocess.run(
        [sys.executable, str(path)], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=3600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert proc.stdout.strip(), f"{path.name} printed nothing"


def test_the_readme_example_is_the_quickstart_example() -> None:
    # The README's Python block is docs/examples/quickstart.py without its docstring, so the
    # example run above runs the README's code.
    (block,) = fenced_blocks(README.read_text(), ("python",))
    source = (DOCS / "examples" / "quickstart.py").read_text()
    code = source[source.index("import ") :]
    assert block.strip() == code.strip()
