"""The documentation site builds with warnings as errors, and documents every public name."""

from __future__ import annotations

import importlib
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from docs_tests._docs import DOCS
from docs_tests._docs import ROOT
from docs_tests._docs import SPHINX_COMMAND

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")

from sphinx.util.inventory import InventoryFile  # noqa: E402

import public_api  # noqa: E402  (docs/_ext, put on sys.path by _docs)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML site, built as the README says (``-W -n``) into a temporary folder."""
    out = tmp_path_factory.mktemp("html")
    args = shlex.split(SPHINX_COMMAND)[1:]
    assert args[-2:] == ["docs", "docs/_build/html"]
    args = [*args[:-2], str(DOCS), str(out), "-q", "-E", "-d", str(out / ".doctrees")]
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    return out


def _inventory(built: Path) -> dict[str, dict[str, object]]:
    with open(built / "objects.inv", "rb") as f:
        return InventoryFile.load(f, "", lambda base, uri: uri)


def test_every_public_name_is_in_the_reference(built: Path) -> None:
    inventory = _inventory(built)
    documented = {name for entries in inventory.values() for name in entries}
    missing = []
    for module_name in public_api.PUBLIC_MODULES:
        assert module_name in documented, f"module {module_name} has no reference page"
        module = importlib.import_module(module_name)
        for name in public_api.public_names(module_name):
            if getattr(module, name).__class__.__name__ == "module":
                assert f"{module_name}.{name}" in documented
                continue
            if f"{module_name}.{name}" not in documented:
                missing.append(f"{module_name}.{name}")
    assert not missing, f"public names missing from the API reference: {missing}"


def test_the_command_line_reference_lists_every_subcommand(built: Path) -> None:
    from bilevel_optuna.cli import build_parser

    html = (built / "reference" / "cli.html").read_text()
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in subparsers.choices:
        assert f"bilevel-optuna {name}" in html, name


def test_every_page_is_reachable(built: Path) -> None:
    # Sphinx -W already refuses a page in no toctree; this checks the examples are shown too.
    pages = "".join(p.read_text() for p in DOCS.rglob("*.md"))
    for example in sorted((DOCS / "examples").glob("*.py")):
        assert f"examples/{example.name}" in pages, f"{example.name} is shown on no page"
