"""The shape of the package, read from the syntax tree (no import of the package).

Prints files, lines per module, functions over 80 lines, the most parameters of a function,
function-local imports of the project's own modules and the import cycles between subpackages
and between files (imports under ``if TYPE_CHECKING:`` aside). ``tests/test_layers.py`` uses the
same import graph to keep the layer order.

Usage: python tools/code_shape.py [--root DIR]
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "bilevel_optuna"
#: Subpackages that live outside the ``bilevel_optuna`` folder (setup.cfg ``package_dir``).
PACKAGE_DIRS = {
    PACKAGE: "bilevel_optuna",
    f"{PACKAGE}.samplers": "samplers",
    f"{PACKAGE}.objectives": "objectives",
    f"{PACKAGE}.studies": "studies",
}
LONG_FUNCTION = 80
LONG_MODULE = 500


@dataclasses.dataclass(frozen=True)
class Import:
    """One import of a project module by a project module."""

    source: str  # the importing module
    target: str  # the imported module (a module file or a package's __init__)
    line: int
    local: bool  # inside a function body
    type_only: bool  # under ``if TYPE_CHECKING:``
    comment: str  # the comment on the import's line or the line above, if any


@dataclasses.dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: list[str]


def find_modules(root: Path) -> dict[str, Module]:
    """Every project module by dotted name."""
    modules: dict[str, Module] = {}
    for package, folder in PACKAGE_DIRS.items():
        base = root / folder
        for path in sorted(base.rglob("*.py")):
            if not (path.parent / "__init__.py").exists():
                continue  # not a package module (the Alembic migrations are data files)
            parts = list(path.relative_to(base).with_suffix("").parts)
            dotted = ".".join([package, *parts])
            if dotted.endswith(".__init__"):
                dotted = dotted[: -len(".__init__")]
            if dotted in modules:  # bilevel_optuna/samplers would shadow samplers/
                continue
            text = path.read_text(encoding="utf-8")
            modules[dotted] = Module(dotted, path, ast.parse(text, str(path)), text.splitlines())
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(
    node: ast.AST, *, local: bool, type_only: bool
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, local, type_only
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _walk(child, local=True, type_only=type_only)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), local=local,
                                 type_only=True)
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), local=local,
                                 type_only=type_only)
        else:
            yield from _walk(child, local=local, type_only=type_only)


def _comment(lines: list[str], line: int) -> str:
    """The comment on an import's line and the comment lines directly above it."""
    found = []
    above = line - 2
    while above >= 0 and lines[above].strip().startswith("#"):
        found.insert(0, lines[above].strip().lstrip("#").strip())
        above -= 1
    if "#" in lines[line - 1]:
        found.append(lines[line - 1].split("#", 1)[1].strip())
    return " ".join(found)


def imports(modules: dict[str, Module]) -> list[Import]:
    """Every import of a project module, resolved to the module it loads."""
    found: list[Import] = []
    for module in modules.values():
        is_package = module.path.name == "__init__.py"
        for node, local, type_only in _walk(module.tree, local=False, type_only=False):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = module.name.split(".")
                    if not is_package:
                        anchor = anchor[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                while target and target not in modules:  # ``import pkg.mod.attr`` forms
                    target = target.rpartition(".")[0]
                if not target.startswith(PACKAGE) or target == module.name:
                    continue
                found.append(
                    Import(module.name, target, node.lineno, local, type_only,
                           _comment(module.lines, node.lineno))
                )
    return found


def subpackage(name: str) -> str:
    """``chat``, ``samplers``, ...; ``core`` for the package's own modules, ``api`` for its
    ``__init__`` (which re-exports every subpackage)."""
    parts = name.split(".")
    if len(parts) == 1:
        return "api"
    if name == f"{PACKAGE}.__main__":
        return "cli"
    if len(parts) == 2 and name not in _SUBPACKAGES:
        return "core"
    return parts[1]


_SUBPACKAGES: set[str] = set()


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    nodes = set(edges) | {n for targets in edges.values() for n in targets}
    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return sorted(result)


def graphs(
    modules: dict[str, Module], found: list[Import]
) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """The file graph and the subpackage graph of the imports made at run time."""
    _SUBPACKAGES.update(m for m in modules if modules[m].path.name == "__init__.py")
    files: dict[str, set[str]] = {m: set() for m in modules}
    packages: dict[str, set[str]] = {}
    for imp in found:
        if imp.type_only:
            continue
        files[imp.source].add(imp.target)
        a, b = subpackage(imp.source), subpackage(imp.target)
        packages.setdefault(a, set())
        if a != b:
            packages[a].add(b)
    return files, packages


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def says_why(fn: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> bool:
    """Whether a comment line opens the function's body (after its docstring, if any): the
    place to say why a long function is one piece."""
    body = fn.body
    first = body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        if len(body) == 1:
            return False
        after, statement = first.end_lineno or first.lineno, body[1]
    else:
        after, statement = fn.lineno, first
    gap = lines[after : statement.lineno - 1]  # between the docstring (or def) and the code
    return any(line.strip().startswith("#") for line in gap)


def long_functions(modules: dict[str, Module]) -> list[tuple[str, int, bool]]:
    """(module:function, lines, says why) for every function over LONG_FUNCTION lines."""
    out = []
    for name, m in modules.items():
        for fn in _functions(m.tree):
            n = fn.end_lineno - fn.lineno + 1  # type: ignore[operator]
            if n > LONG_FUNCTION:
                out.append((f"{name}:{fn.name}", n, says_why(fn, m.lines)))
    return sorted(out)


def _n_params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    return len([n for n in names if n.arg not in ("self", "cls")])


def report(root: Path) -> str:
    modules = find_modules(root)
    found = imports(modules)
    files, packages = graphs(modules, found)
    sizes = sorted(((len(m.lines), name) for name, m in modules.items()), reverse=True)
    fns = [
        (fn.end_lineno - fn.lineno + 1, _n_params(fn), f"{name}:{fn.name}")  # type: ignore[operator]
        for name, m in modules.items()
        for fn in _functions(m.tree)
    ]
    long_fns = sorted((f for f in fns if f[0] > LONG_FUNCTION), reverse=True)
    most_params = max(fns, key=lambda f: f[1])
    local = [i for i in found if i.local and not i.type_only]
    file_cycles = cycles(files)
    package_cycles = cycles(packages)
    total = sum(s for s, _ in sizes)
    out = [
        "| measure | value |",
        "|---|---|",
        f"| files (modules) | {len(modules)} |",
        f"| lines | {total} (mean {total / len(modules):.0f} per module) |",
        f"| modules over 500 lines | {sum(1 for s, _ in sizes if s > 500)} "
        f"(largest: {sizes[0][1]} {sizes[0][0]}) |",
        f"| functions over {LONG_FUNCTION} lines | {len(long_fns)} |",
        f"| most parameters | {most_params[1]} ({most_params[2]}) |",
        f"| function-local project imports | {len(local)} "
        f"({sum(1 for i in local if 'optional' in i.comment.lower())} with a comment naming "
        "the optional dependency) |",
        f"| file cycles | {len(file_cycles)} |",
        f"| subpackage cycles | {len(package_cycles)} |",
        "",
        "Functions over 80 lines: "
        + ", ".join(f"{where} ({n})" for n, _, where in long_fns),
        "",
        "File cycles:",
        *(f"- {' <-> '.join(c)}" for c in file_cycles),
        "Subpackage cycles:",
        *(f"- {' <-> '.join(c)}" for c in package_cycles),
        "Subpackage imports:",
        *(f"- {a} -> {', '.join(sorted(b)) or '(none)'}" for a, b in sorted(packages.items())),
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    print(report(parser.parse_args().root))


if __name__ == "__main__":
    main()
