"""One vocabulary: every error under BilevelOptunaError, every warning class in
bilevel_optuna.exceptions, renamed names kept as deprecated aliases, and each built-in
mechanism's class named after its registry name."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

import bilevel_optuna.samplers
import bilevel_optuna.studies
from bilevel_optuna import exceptions
from bilevel_optuna.samplers import get_mechanism_class
from bilevel_optuna.samplers import mechanism_names

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import code_shape  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _defined_classes() -> list[type]:
    """Every class at module level of the package whose module imports without an optional
    dependency that is missing here."""
    found = []
    for name, module in code_shape.find_modules(ROOT).items():
        names = [n.name for n in module.tree.body if isinstance(n, ast.ClassDef)]
        if not names:
            continue
        try:
            loaded = importlib.import_module(name)
        except ImportError:  # an optional dependency (llama_cpp, torch) is not installed
            continue
        found += [getattr(loaded, n) for n in names]
    return found


def test_every_error_is_a_bilevel_optuna_error() -> None:
    errors = [
        c
        for c in _defined_classes()
        if issubclass(c, BaseException) and not issubclass(c, Warning)
    ]
    assert exceptions.RunFailedError in errors and len(errors) > 20
    outside = [
        f"{c.__module__}.{c.__qualname__}"
        for c in errors
        if not issubclass(c, exceptions.BilevelOptunaError) and not c.__name__.startswith("_")
    ]
    assert outside == []


def test_every_warning_class_is_in_the_exceptions_module() -> None:
    warnings_ = [c for c in _defined_classes() if issubclass(c, Warning)]
    assert {c.__name__ for c in warnings_} >= {
        "DegenerateDataWarning",
        "NoPowerWarning",
        "MechanismInactiveWarning",
    }
    assert {c.__module__ for c in warnings_} == {"bilevel_optuna.exceptions"}
    # Re-exported where the public API had them.
    import bilevel_optuna.stats

    assert bilevel_optuna.stats.NoPowerWarning is exceptions.NoPowerWarning
    assert bilevel_optuna.stats.DegenerateDataWarning is exceptions.DegenerateDataWarning
    assert bilevel_optuna.samplers.MechanismInactiveWarning is exceptions.MechanismInactiveWarning


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        (bilevel_optuna.studies, "RunFailed", "RunFailedError"),
        (bilevel_optuna.samplers, "StagnationRestartMechanism", "RestartMechanism"),
        (bilevel_optuna.samplers, "OrthogonalExplorationMechanism", "OrthogonalMechanism"),
        (bilevel_optuna.samplers, "ClassicalControlMechanism", "ClassicalMechanism"),
    ],
)
def test_an_old_name_still_works_with_a_warning(module: object, old: str, new: str) -> None:
    with pytest.warns(FutureWarning, match=f"{old} is deprecated: use .*{new}") as record:
        cls = getattr(module, old)
    assert cls is getattr(module, new)
    assert record[0].filename == __file__  # the warning points at the user's line
    with pytest.raises(AttributeError):
        getattr(module, old + "Typo")


def test_run_failed_is_still_caught_by_its_old_name() -> None:
    with pytest.warns(FutureWarning):
        from bilevel_optuna.studies import RunFailed
    with pytest.raises(RunFailed):
        raise exceptions.RunFailedError("a task failed")


def test_each_built_in_mechanism_is_its_registry_name_in_camel_case() -> None:
    for name in mechanism_names():
        cls = get_mechanism_class(name)
        if not cls.__module__.startswith("bilevel_optuna.samplers"):
            continue  # generated or user-registered
        expected = "".join(part.capitalize() for part in name.split("_")) + "Mechanism"
        assert cls.__name__ == expected, (name, cls.__name__)
        assert cls.name == name
