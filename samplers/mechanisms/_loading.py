"""Loading mechanisms from a class, a registered name, a file path or source text.

Names are data, never code: :func:`load_mechanism_by_name` only looks a name up, and source text
is imported only by the explicit :func:`load_mechanism_from_source` (or
:func:`load_mechanism_source` for the class). :func:`load_mechanism` tries a string as a name
first; a string that is no name but holds a newline is still imported as source, the old call
form, with a :class:`DeprecationWarning`. Code that loads a name from a storage or an outer
study's parameters calls :func:`load_mechanism_by_name`, so a stored name can never become code.

Source text and files are imported with importlib from a file named after the source's SHA-256,
so every worker that reads the same source from the storage loads the same module, and
tracebacks point at real lines.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterable
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from typing import Union

from bilevel_optuna._logging import get_logger
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.samplers.mechanisms._base import Mechanism

_logger = get_logger(__name__)

MechanismSpec = Union[
    Mechanism, type[Mechanism], str, tuple[Union[str, type[Mechanism]], Mapping[str, Any]]
]

#: Built-in mechanisms by name; imported on first use.
_BUILTINS: dict[str, str] = {
    "tabu": "bilevel_optuna.samplers.mechanisms._tabu:TabuMechanism",
    "orthogonal": "bilevel_optuna.samplers.mechanisms._orthogonal:OrthogonalMechanism",
    "trust_region": "bilevel_optuna.samplers.mechanisms._trust_region:TrustRegionMechanism",
    "restart": "bilevel_optuna.samplers.mechanisms._restart:RestartMechanism",
    "hybrid": "bilevel_optuna.samplers.mechanisms._hybrid:HybridMechanism",
    "candidate_choice": (
        "bilevel_optuna.samplers.mechanisms._candidate_choice:CandidateChoiceMechanism"
    ),
    "classical": "bilevel_optuna.samplers.mechanisms._classical:ClassicalMechanism",
}
_REGISTERED: dict[str, type[Mechanism]] = {}

#: What a registered name may look like: an identifier (dots and dashes allowed after the first
#: character), at most 100 characters; never whitespace, a path or source text.
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,99}")


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name.endswith(".py"):
        raise ConfigurationError(
            f"A mechanism name must match {NAME_PATTERN.pattern} and not end in .py, not "
            f"{str(name)[:80]!r}; set `name` on the class to a short identifier."
        )
    return name


def register_mechanism(cls: type[Mechanism]) -> type[Mechanism]:
    """Register ``cls`` under ``cls.name`` so it can be chosen by name (usable as decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Mechanism)):
        raise TypeError(f"register_mechanism takes a Mechanism subclass but got {cls!r}.")
    _REGISTERED[_check_name(cls.name)] = cls
    return cls


def builtin_mechanism_names() -> list[str]:
    """Names of the built-in mechanisms, in the order the README lists them."""
    return list(_BUILTINS)


def mechanism_names() -> list[str]:
    """Names that :func:`load_mechanism` accepts."""
    return sorted(set(_BUILTINS) | set(_REGISTERED))


def get_mechanism_class(name: str) -> type[Mechanism]:
    """The class registered under ``name``."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _BUILTINS:
        module_name, _, attr = _BUILTINS[name].partition(":")
        cls = getattr(importlib.import_module(module_name), attr)
        _REGISTERED[name] = cls
        return cls
    raise ConfigurationError(
        f"Unknown mechanism {str(name)[:80]!r}; valid names are {mechanism_names()}, or give a "
        "class, a path to a .py file, or source text through load_mechanism_from_source()."
    )


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def _cache_dir() -> Path:
    root = os.environ.get("BILEVEL_OPTUNA_CACHE") or os.path.join(
        tempfile.gettempdir(), f"bilevel_optuna-{os.getuid() if hasattr(os, 'getuid') else 0}"
    )
    path = Path(root) / "mechanisms"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _module_from_file(path: Path, module_name: str) -> Any:
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigurationError(f"Cannot import mechanism file {path}; is it a .py file?")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _mechanism_class_in(module: Any, origin: str) -> type[Mechanism]:
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Mechanism)
        and obj is not Mechanism
        and obj.__module__ == module.__name__
    ]
    if len(found) != 1:
        raise ConfigurationError(
            f"{origin} must define exactly one Mechanism subclass but defines "
            f"{[c.__name__ for c in found]}."
        )
    return found[0]


def load_mechanism_source(source: str) -> type[Mechanism]:
    """Import mechanism source text with importlib and return its Mechanism subclass.

    The module is written to a cache file named after the source's SHA-256 and imported from
    there; the class gets ``source_sha256`` set.
    """
    digest = source_hash(source)
    path = _cache_dir() / f"mechanism_{digest[:16]}.py"
    if not path.exists() or path.read_text(encoding="utf-8") != source:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source, encoding="utf-8")
        os.replace(tmp, path)
    try:
        module = _module_from_file(path, f"bilevel_optuna_mechanism_{digest[:16]}")
    except ConfigurationError:
        raise
    except Exception as err:
        raise ConfigurationError(
            f"Mechanism source {digest[:12]} failed to import: {type(err).__name__}: {err}"
        ) from err
    cls = _mechanism_class_in(module, f"Mechanism source {digest[:12]}")
    cls.source_sha256 = digest  # type: ignore[attr-defined]
    return cls


def load_mechanism_by_name(name: str, **params: Any) -> Mechanism:
    """Build the mechanism registered (or built in) under ``name``; a name is never read as a
    path or as source text."""
    if not isinstance(name, str) or name not in set(_BUILTINS) | set(_REGISTERED):
        get_mechanism_class(str(name))  # raises, naming the valid names
    return _build(get_mechanism_class(name), params)


def load_mechanism_from_source(source: str, **params: Any) -> Mechanism:
    """Build a mechanism from Python source text defining one Mechanism subclass.

    The source runs in this process, like any module you import: for code you did not write
    (a language model's, say) use ``bilevel_optuna.research.check_source()`` and a guarded
    mechanism instead.
    """
    if not isinstance(source, str):
        raise ConfigurationError(f"Mechanism source must be text, not {type(source).__name__}.")
    return _build(load_mechanism_source(source), params)


def load_mechanism(spec: MechanismSpec, **params: Any) -> Mechanism:
    """Build one mechanism from an instance, a class, a name or a ``.py`` path.

    Args:
        spec: What to load. A string is a registered name, else a path if it ends in ``.py``.
            Source text goes to ``load_mechanism_from_source()``; a string that is no name
            and holds a newline is still taken for source, with a ``DeprecationWarning``
            (the old call form, to be removed).
        params: Keyword arguments for the class.
    """
    if isinstance(spec, tuple):
        target, kwargs = spec
        return load_mechanism(target, **{**dict(kwargs), **params})
    if isinstance(spec, Mechanism):
        if params:
            raise ConfigurationError(
                f"Parameters {sorted(params)} were given for an already built {spec!r}."
            )
        return spec
    if isinstance(spec, type) and issubclass(spec, Mechanism):
        return _build(spec, params)
    if isinstance(spec, str):
        if spec in _REGISTERED or spec in _BUILTINS:
            return load_mechanism_by_name(spec, **params)
        if spec.endswith(".py") and "\n" not in spec:
            path = Path(spec)
            if not path.is_file():
                raise ConfigurationError(f"Mechanism file {spec!r} does not exist.")
            return _build(load_mechanism_source(path.read_text(encoding="utf-8")), params)
        if "\n" in spec:
            warnings.warn(
                "Passing mechanism source text where a name is expected is deprecated and will "
                "be removed; call load_mechanism_from_source(text) (or pass the class from "
                "load_mechanism_source(text)).",
                DeprecationWarning,
                stacklevel=2,
            )
            return load_mechanism_from_source(spec, **params)
        return load_mechanism_by_name(spec, **params)
    raise ConfigurationError(
        f"Cannot load a mechanism from {spec!r}; give an instance, a class, a name, "
        "a .py path, or source text through load_mechanism_from_source()."
    )


def _build(cls: type[Mechanism], params: Mapping[str, Any]) -> Mechanism:
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
    has_var_kw = any(
        p.kind == p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values()
    )
    unknown = sorted(set(params) - allowed)
    if unknown and not has_var_kw:
        raise ConfigurationError(
            f"Mechanism {cls.name!r} takes no parameter {unknown}; it takes {sorted(allowed)}."
        )
    return cls(**params)


def load_mechanisms(specs: Iterable[MechanismSpec]) -> list[Mechanism]:
    """Build a list of mechanisms; their names must be unique (they key the trial record)."""
    if isinstance(specs, (str, Mechanism)) or (
        isinstance(specs, type) and issubclass(specs, Mechanism)
    ):
        specs = [specs]
    mechanisms = [load_mechanism(s) for s in specs]
    names = [m.name for m in mechanisms]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigurationError(
            f"Mechanisms {duplicates} are given more than once; each may appear once per sampler."
        )
    return mechanisms
