"""One-way imports: the layer order, read from the syntax tree (tools/code_shape.py).

Each subpackage imports only the layers below it; peers in one layer do not import each other;
no two files or subpackages import each other in a circle. Imports under ``if TYPE_CHECKING:``
are left out (they never run). A function-local import of the package's own modules is allowed
only with a comment naming the optional dependency it defers; the ones left from before the
rule are listed in LOCAL_IMPORTS_LEFT, per module, and that list may only shrink. The rooms
stay small: no module over 500 lines, no function over 80 lines unless a comment opening its
body says why it is one piece.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import code_shape  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

#: Bottom to top. ``core`` is the package's own modules (exceptions, logging, storage, the
#: Optuna adapter); ``api`` is ``bilevel_optuna/__init__.py``, which re-exports the layers.
LAYERS: list[set[str]] = [
    {"core"},
    {"chat"},
    {"samplers", "objectives", "stats"},
    {"studies"},
    {"research"},
    {"cli", "api"},
]

#: Function-local imports of the package's own modules left from before the rule, per module
#: (in files other work was changing at the same time). Remove them; never add one.
LOCAL_IMPORTS_LEFT = {
    "bilevel_optuna.chat._spec": 1,
    "bilevel_optuna.research._child": 2,
}


def _layer(subpackage: str) -> int:
    for k, names in enumerate(LAYERS):
        if subpackage in names:
            return k
    raise AssertionError(f"subpackage {subpackage!r} is in no layer: add it to LAYERS")


def _graph(root: Path) -> tuple[list[code_shape.Import], dict[str, set[str]], dict[str, set[str]]]:
    modules = code_shape.find_modules(root)
    found = code_shape.imports(modules)
    files, packages = code_shape.graphs(modules, found)
    return found, files, packages


def test_each_subpackage_imports_only_the_layers_below_it() -> None:
    found, _, packages = _graph(ROOT)
    assert len(found) > 300 and "samplers" in packages["studies"]  # the graph is the real one
    wrong = [
        f"{imp.source} imports {imp.target} (line {imp.line})"
        for imp in found
        if not imp.type_only
        and code_shape.subpackage(imp.source) != code_shape.subpackage(imp.target)
        and _layer(code_shape.subpackage(imp.target)) >= _layer(code_shape.subpackage(imp.source))
    ]
    assert wrong == []


def test_no_cycle_between_subpackages_or_files() -> None:
    _, files, packages = _graph(ROOT)
    assert code_shape.cycles(packages) == []
    assert code_shape.cycles(files) == []


def test_function_local_imports_name_the_optional_dependency_they_defer() -> None:
    found, _, _ = _graph(ROOT)
    counts: dict[str, int] = {}
    for imp in found:
        if imp.local and not imp.type_only and "optional" not in imp.comment.lower():
            counts[imp.source] = counts.get(imp.source, 0) + 1
    more = {m: n for m, n in counts.items() if n > LOCAL_IMPORTS_LEFT.get(m, 0)}
    assert more == {}, (
        "function-local imports of the package's own modules: import at the top of the module, "
        "or name the optional dependency the import defers in a comment above it"
    )


def test_the_checker_sees_cycles_local_imports_and_leaves_type_only_ones_out(
    tmp_path: Path,
) -> None:
    package = tmp_path / "bilevel_optuna"
    (package / "chat").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "_a.py": "from bilevel_optuna import _b\n",
        "_b.py": "def f():\n    from bilevel_optuna._a import x\n",
        "chat/__init__.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from bilevel_optuna.cli import main\n"
            "def g():\n    # optional dependency: llama_cpp\n    from bilevel_optuna import _a\n"
        ),
        "cli/__init__.py": "from bilevel_optuna.chat import g\n",
    }
    (package / "cli").mkdir()
    for name, text in files.items():
        (package / name).write_text(textwrap.dedent(text))
    found, graph, packages = _graph(tmp_path)
    assert code_shape.cycles(graph) == [["bilevel_optuna._a", "bilevel_optuna._b"]]
    assert code_shape.cycles(packages) == []  # chat -> cli is type-only
    local = {(i.source, i.target): i for i in found if i.local}
    assert "optional" in local[("bilevel_optuna.chat", "bilevel_optuna._a")].comment
    assert "optional" not in local[("bilevel_optuna._b", "bilevel_optuna._a")].comment
    assert [i.type_only for i in found if i.target == "bilevel_optuna.cli"] == [True]


def test_no_module_over_the_line_limit() -> None:
    modules = code_shape.find_modules(ROOT)
    limit = code_shape.LONG_MODULE
    over = {name: len(m.lines) for name, m in modules.items() if len(m.lines) > limit}
    assert over == {}, f"split these modules by idea (at most {limit} lines each)"


def test_a_long_function_says_why_it_is_one_piece() -> None:
    silent = [
        (name, n) for name, n, why in code_shape.long_functions(code_shape.find_modules(ROOT))
        if not why
    ]
    assert silent == [], (
        f"functions over {code_shape.LONG_FUNCTION} lines: split them into named steps, or open "
        "the body with a comment saying why it is one piece"
    )


def test_the_checker_sees_a_long_function_and_its_comment(tmp_path: Path) -> None:
    package = tmp_path / "bilevel_optuna"
    package.mkdir()
    filler = "    x = 1\n" * code_shape.LONG_FUNCTION
    (package / "__init__.py").write_text(
        f"def quiet():\n{filler}"
        f"def told():\n    \"\"\"Doc.\"\"\"\n    # One piece: a loop read top to bottom.\n{filler}"
        f"def short():\n    x = 1\n"
    )
    found = code_shape.long_functions(code_shape.find_modules(tmp_path))
    assert found == [("bilevel_optuna:quiet", 81, False), ("bilevel_optuna:told", 83, True)]
