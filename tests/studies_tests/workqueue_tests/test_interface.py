"""The work queue's narrow interface, read from the syntax tree (tools/code_shape.py).

``studies/_workqueue`` is a room of its own: the orchestration and the CLI call it through the
names its ``__init__`` exports, never through its private modules, and it imports nothing of
the orchestration around it (it sits below it: the orchestration says what a task does).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools"))
import code_shape  # noqa: E402

import bilevel_optuna.studies._workqueue as workqueue  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
QUEUE = "bilevel_optuna.studies._workqueue"


def _inside(name: str) -> bool:
    return name == QUEUE or name.startswith(QUEUE + ".")


def test_nothing_outside_the_work_queue_imports_its_private_modules() -> None:
    modules = code_shape.find_modules(ROOT)
    assert f"{QUEUE}._claims" in modules  # the graph is the real one
    found = code_shape.imports(modules)
    assert any(imp.target == QUEUE and not _inside(imp.source) for imp in found)
    wrong = [
        f"{imp.source} imports {imp.target} (line {imp.line})"
        for imp in found
        if _inside(imp.target) and imp.target != QUEUE and not _inside(imp.source)
    ]
    assert wrong == []


def test_what_is_imported_from_the_work_queue_is_in_its_all() -> None:
    modules = code_shape.find_modules(ROOT)
    wrong = []
    for module in modules.values():
        if _inside(module.name):
            continue
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ImportFrom) and node.module == QUEUE:
                wrong += [
                    f"{module.name} imports {alias.name} (line {node.lineno})"
                    for alias in node.names
                    if alias.name not in workqueue.__all__
                ]
    assert wrong == []
    assert all(hasattr(workqueue, name) for name in workqueue.__all__)


def test_the_work_queue_imports_nothing_of_the_orchestration() -> None:
    modules = code_shape.find_modules(ROOT)
    found = code_shape.imports(modules)
    wrong = [
        f"{imp.source} imports {imp.target} (line {imp.line})"
        for imp in found
        if _inside(imp.source)
        and imp.target.startswith("bilevel_optuna.studies")
        and not _inside(imp.target)
    ]
    assert wrong == []
    assert any(_inside(imp.source) for imp in found)  # it imports something: checked for real


def test_the_interface_is_written_down_in_the_docstring() -> None:
    doc = workqueue.__doc__ or ""
    missing = [name for name in workqueue.__all__ if name not in doc]
    assert missing == []
