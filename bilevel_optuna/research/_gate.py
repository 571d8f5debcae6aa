"""The static part of the gate: parse and compile, an import allow-list and the class contract.

This is a pre-filter, not the security boundary: many ways around syntax-tree rules are known
(RestrictedPython says as much of itself), so generated code that passes still only ever runs in
the guarded process. What it buys is a clear reason, early, that a model can act on: which
import is not allowed, which hook has the wrong signature, which hyperparameter is undeclared.

Refused on the syntax tree:

- imports outside :data:`ALLOWED_IMPORTS` (and names from ``bilevel_optuna`` other than the
  Mechanism API);
- the names that reach the interpreter's machinery: ``eval``, ``exec``, ``compile``, ``open``,
  ``__import__``, ``globals``, ``vars``, ``breakpoint``, ...; ``getattr``/``setattr``/``delattr``/
  ``hasattr`` with a name that is not a constant string;
- dunder attributes and names (``__class__.__subclasses__``, ``__builtins__``) other than a few
  harmless ones, private attributes of anything but ``self`` (``random._os``), modules reached
  as attributes, ``operator.attrgetter``/``methodcaller`` (computed names), frame and code
  attributes (``f_globals``, ``gi_frame``, ``tb_frame``, ...),
  file-writing numpy calls, and string constants that name dunders (``"{0.__class__}".format``);
- statements at module level other than imports, constants, functions and classes (the module
  runs on import, before any hook's time limit applies).
"""

from __future__ import annotations

import ast
import dataclasses
import re
from typing import Any

#: Largest source the gate reads (characters).
MAX_SOURCE_CHARS = 32_000

#: ``import X`` / ``from X import ...`` allowed for these modules (and their submodules where
#: listed with a trailing dot).
ALLOWED_IMPORTS = frozenset(
    {
        "__future__",
        "abc",
        "bisect",
        "collections",
        "collections.abc",
        "dataclasses",
        "enum",
        "functools",
        "heapq",
        "itertools",
        "math",
        "numpy",
        "operator",
        "optuna",
        "optuna.distributions",
        "optuna.trial",
        "random",
        "statistics",
        "typing",
        "bilevel_optuna",
        "bilevel_optuna.samplers",
    }
)

#: What may be imported from the package itself: the Mechanism API.
MECHANISM_API = frozenset({"Mechanism", "ProposalContext", "Review", "normalize", "distance"})

FORBIDDEN_NAMES = frozenset(
    {
        "eval",
        "exec",
        "compile",
        "open",
        "__import__",
        "globals",
        "locals",
        "vars",
        "breakpoint",
        "input",
        "help",
        "exit",
        "quit",
        "memoryview",
        "__builtins__",
        "__loader__",
        "__spec__",
        "builtins",
        "importlib",
        "os",
        "sys",
    }
)

_ATTR_FUNCS = frozenset({"getattr", "setattr", "delattr", "hasattr"})
_ALLOWED_DUNDERS = frozenset({"__init__", "__name__", "__doc__", "__future__"})
_FRAME_ATTR = re.compile(r"^(f|gi|cr|ag|tb|co)_[a-z]+$")
#: Attributes refused whatever the object (numpy file I/O and foreign-function access, optuna's
#: storage and study handles).
FORBIDDEN_ATTRIBUTES = frozenset(
    {
        "tofile",
        "fromfile",
        "save",
        "savez",
        "savez_compressed",
        "savetxt",
        "load",
        "loadtxt",
        "genfromtxt",
        "memmap",
        "ctypeslib",
        "ctypes",
        "DataSource",
        "f2py",
        "distutils",
        "storages",
        "create_study",
        "load_study",
        "delete_study",
        "copy_study",
        "_storage",
        "mro",
        # Computed attribute access by another name (issue 22, finding 8).
        "attrgetter",
        "methodcaller",
    }
)
#: Modules reachable as attributes of allowed ones (``random._os``, ``numpy.sys``): refused
#: under any spelling.
_MODULE_ATTRIBUTES = frozenset({"os", "sys", "subprocess", "builtins", "importlib", "ctypes"})
#: Objects whose private attributes a mechanism may use: its own.
_OWN = frozenset({"self", "cls"})

#: Hooks and their positional parameters after ``self``.
HOOK_ARITY = {"prepare": 1, "review": 2, "choose": 2, "after_trial": 4}
_NAME = re.compile(r"^[a-z][a-z0-9_]{1,39}$")
_MODULE_LEVEL = (
    ast.Import,
    ast.ImportFrom,
    ast.ClassDef,
    ast.FunctionDef,
    ast.Assign,
    ast.AnnAssign,
)


@dataclasses.dataclass
class StaticReport:
    """What the static checks found: ``stage`` is where it stopped (``"ok"`` when it passed)."""

    stage: str
    reasons: list[str]
    class_name: str = ""
    name: str = ""
    hooks: tuple[str, ...] = ()
    params: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.stage == "ok"


def static_check(source: str) -> StaticReport:
    """Parse, compile, apply the policy, then the class contract; stop at the first failing
    stage and return every reason found there."""
    if not isinstance(source, str) or not source.strip():
        return StaticReport("parse", ["the source is empty"])
    if len(source) > MAX_SOURCE_CHARS:
        return StaticReport(
            "parse", [f"the source has {len(source)} characters; at most {MAX_SOURCE_CHARS}"]
        )
    try:
        tree = ast.parse(source, filename="mechanism.py")
        compile(tree, "mechanism.py", "exec")
    except SyntaxError as err:
        return StaticReport("parse", [f"SyntaxError: {err.msg} (line {err.lineno})"])
    except (ValueError, RecursionError, MemoryError) as err:
        return StaticReport("parse", [f"{type(err).__name__}: {err}"])
    reasons = policy_violations(tree)
    if reasons:
        return StaticReport("policy", reasons)
    return contract(tree)


# ----------------------------------------------------------------------------- policy
def policy_violations(tree: ast.Module) -> list[str]:
    reasons: list[str] = []

    def refuse(node: ast.AST, text: str) -> None:
        line = getattr(node, "lineno", "?")
        reasons.append(f"line {line}: {text}")

    for node in tree.body:
        if isinstance(node, _MODULE_LEVEL):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring
        refuse(node, f"{type(node).__name__} at module level; put code inside the class's hooks")
    for node in ast.walk(tree):
        for text in _node_violations(node):
            refuse(node, text)
    return reasons


def _node_violations(node: ast.AST) -> list[str]:
    """What the policy refuses in one node of the tree, in the order it is found."""
    if isinstance(node, ast.Import):
        return _import_violations(node)
    if isinstance(node, ast.ImportFrom):
        return _import_from_violations(node)
    if isinstance(node, ast.Name):
        if node.id in FORBIDDEN_NAMES:
            return [f"the name {node.id!r} is not allowed"]
        if _is_dunder(node.id) and node.id not in _ALLOWED_DUNDERS:
            return [f"the name {node.id!r} is not allowed"]
        return []
    if isinstance(node, ast.Attribute):
        return _attribute_violations(node)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id in _ATTR_FUNCS:
            name = node.args[1] if len(node.args) > 1 else None
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                return [f"{node.func.id}() with a computed attribute name is not allowed"]
            if _is_dunder(name.value) or name.value in FORBIDDEN_ATTRIBUTES:
                return [f"{node.func.id}() of {name.value!r} is not allowed"]
        return []
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
        text = node.value if isinstance(node.value, str) else node.value.decode("latin-1")
        if re.search(r"__\w+__", text) and not re.fullmatch(r"\s*__init__\s*", text):
            return ["a string that names a dunder attribute is not allowed"]
        return []
    if isinstance(node, (ast.Global, ast.Nonlocal)):
        return [f"`{type(node).__name__.lower()}` is not allowed; keep state on self"]
    return []


def _import_violations(node: ast.Import) -> list[str]:
    found = []
    for alias in node.names:
        if alias.name not in ALLOWED_IMPORTS or alias.name.startswith("bilevel_optuna"):
            what = "import" if alias.name not in ALLOWED_IMPORTS else "plain import"
            found.append(
                f"{what} of {alias.name!r} is not allowed; allowed modules are "
                f"{sorted(m for m in ALLOWED_IMPORTS if not m.startswith('bilevel'))} and "
                "`from bilevel_optuna.samplers import Mechanism, Review`"
            )
    return found


def _import_from_violations(node: ast.ImportFrom) -> list[str]:
    found = []
    module = node.module or ""
    if node.level or module not in ALLOWED_IMPORTS or module == "optuna":
        found.append(f"import from {'.' * node.level}{module!r} is not allowed")
    elif module.startswith("bilevel_optuna"):
        extra = sorted(a.name for a in node.names if a.name not in MECHANISM_API)
        if extra:
            found.append(
                f"only the Mechanism API ({sorted(MECHANISM_API)}) may be imported from "
                f"{module}, not {extra}"
            )
    if any(a.name == "*" for a in node.names):
        found.append("`import *` is not allowed")
    for alias in node.names:
        if alias.name in FORBIDDEN_ATTRIBUTES or alias.name.startswith("_"):
            found.append(f"importing {alias.name!r} from {module!r} is not allowed")
    return found


def _attribute_violations(node: ast.Attribute) -> list[str]:
    attr = node.attr
    if _is_dunder(attr) and attr not in _ALLOWED_DUNDERS:
        return [
            f"the attribute {attr!r} is not allowed (dunder attributes reach "
            "the interpreter's internals)"
        ]
    if (
        _FRAME_ATTR.match(attr)
        or attr in FORBIDDEN_ATTRIBUTES
        or attr.lstrip("_") in _MODULE_ATTRIBUTES
    ):
        return [f"the attribute {attr!r} is not allowed"]
    if attr.startswith("_") and not (isinstance(node.value, ast.Name) and node.value.id in _OWN):
        return [
            f"the private attribute {attr!r} of another object is not allowed (private "
            "attributes of modules reach what their imports hold); use your own, on self"
        ]
    return []


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


# --------------------------------------------------------------------------- contract
def _is_mechanism_base(base: ast.expr) -> bool:
    return (isinstance(base, ast.Name) and base.id == "Mechanism") or (
        isinstance(base, ast.Attribute) and base.attr == "Mechanism"
    )


def contract(tree: ast.Module) -> StaticReport:
    """The class contract, read from the syntax tree."""
    classes = [
        n
        for n in tree.body
        if isinstance(n, ast.ClassDef) and any(map(_is_mechanism_base, n.bases))
    ]
    if len(classes) != 1:
        return StaticReport(
            "contract",
            [
                "the source must define exactly one subclass of Mechanism (`class X(Mechanism):` "
                "after `from bilevel_optuna.samplers import Mechanism`) but defines "
                f"{len(classes)}"
            ],
        )
    cls = classes[0]
    reasons: list[str] = []  # every part below adds to it, in this order
    attrs, methods = _class_body(cls, reasons)
    name_node = attrs.get("name")
    name = name_node.value if isinstance(name_node, ast.Constant) else None
    if not isinstance(name, str) or not _NAME.match(name):
        reasons.append(
            "the class must set `name` to a lowercase identifier of 2 to 40 characters, "
            f"e.g. name = \"tabu_ring\" (got {ast.unparse(name_node) if name_node else 'none'})"
        )
    hooks = _hooks(methods, reasons)
    declared = _declared_space(methods.get("search_space"), reasons)
    params = _hyperparameters(methods.get("__init__"), declared, reasons)
    if declared and set(declared) - set(params):
        reasons.append(
            f"search_space() declares {sorted(set(declared) - set(params))} which __init__ "
            "does not take as keyword arguments"
        )
    if reasons:
        return StaticReport("contract", reasons, class_name=cls.name)
    return StaticReport("ok", [], class_name=cls.name, name=str(name), hooks=hooks, params=params)


def _class_body(
    cls: ast.ClassDef, reasons: list[str]
) -> tuple[dict[str, Any], dict[str, ast.FunctionDef]]:
    """The class's constant attributes and its methods, by name; async methods are refused."""
    attrs: dict[str, Any] = {}
    methods: dict[str, ast.FunctionDef] = {}
    for item in cls.body:
        if (
            isinstance(item, ast.Assign)
            and len(item.targets) == 1
            and isinstance(item.targets[0], ast.Name)
        ):
            attrs[item.targets[0].id] = item.value
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value:
            attrs[item.target.id] = item.value
        elif isinstance(item, ast.FunctionDef):
            methods[item.name] = item
        elif isinstance(item, ast.AsyncFunctionDef):
            reasons.append(f"{item.name} is async; hooks are plain methods")
    return attrs, methods


_SIGNATURES = {
    "prepare": "prepare(self, context)",
    "review": "review(self, candidate, context)",
    "choose": "choose(self, candidates, context)",
    "after_trial": "after_trial(self, study, trial, state, values)",
}


def _hooks(methods: dict[str, ast.FunctionDef], reasons: list[str]) -> tuple[str, ...]:
    """The hooks the class defines; each must be a plain method with the hook's signature."""
    hooks = tuple(h for h in HOOK_ARITY if h in methods)
    if not hooks:
        reasons.append(f"the class defines no hook; define one of {list(HOOK_ARITY)}")
    for hook in hooks:
        fn = methods[hook]
        args = fn.args
        positional = [a.arg for a in args.posonlyargs + args.args]
        want = HOOK_ARITY[hook]
        if args.vararg or args.kwarg or args.kwonlyargs or len(positional) != want + 1:
            reasons.append(
                f"{hook} must be `def {_SIGNATURES[hook]}` but is "
                f"`def {hook}({ast.unparse(args)})`"
            )
        if any(
            isinstance(d, ast.Name) and d.id in ("staticmethod", "classmethod")
            for d in fn.decorator_list
        ):
            reasons.append(f"{hook} must be a plain method")
    return hooks


def _hyperparameters(
    init: ast.FunctionDef | None, declared: list[str] | None, reasons: list[str]
) -> tuple[str, ...]:
    """``__init__``'s keyword-only hyperparameters, each with a default and declared in
    ``search_space()``."""
    if init is None:
        return ()
    a = init.args
    positional = [x.arg for x in a.posonlyargs + a.args]
    if positional != ["self"] or a.vararg or a.kwarg:
        reasons.append(
            "__init__ must take keyword-only hyperparameters: `def __init__(self, *, "
            "radius: float = 0.1)`"
        )
    params = tuple(x.arg for x in a.kwonlyargs)
    missing_default = [x.arg for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is None]
    if missing_default:
        reasons.append(f"hyperparameters {missing_default} need default values")
    undeclared = sorted(set(params) - set(declared or ()))
    if undeclared:
        reasons.append(
            f"hyperparameters {undeclared} are not declared in search_space(); return "
            "{name: optuna.distributions.FloatDistribution(low, high), ...} from a "
            "@classmethod search_space(cls)"
        )
    return params


def _declared_space(fn: ast.FunctionDef | None, reasons: list[str]) -> list[str] | None:
    """Keys of the dict literal ``search_space`` returns (``None`` if it is not defined)."""
    if fn is None:
        return None
    if not any(isinstance(d, ast.Name) and d.id == "classmethod" for d in fn.decorator_list):
        reasons.append("search_space must be a @classmethod")
    returns = [n for n in ast.walk(fn) if isinstance(n, ast.Return)]
    keys: list[str] = []
    for ret in returns:
        if not isinstance(ret.value, ast.Dict) or not all(
            isinstance(k, ast.Constant) and isinstance(k.value, str) for k in ret.value.keys
        ):
            reasons.append("search_space() must return a dict literal with string keys")
            return keys
        keys += [k.value for k in ret.value.keys]  # type: ignore[union-attr]
    return keys
