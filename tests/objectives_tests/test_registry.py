from __future__ import annotations

from typing import Any

import optuna
import pytest

from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives import Ackley
from bilevel_optuna.objectives import Branin
from bilevel_optuna.objectives import LMObjective
from bilevel_optuna.objectives import Objective
from bilevel_optuna.objectives import TabularObjective
from bilevel_optuna.objectives import _registry
from bilevel_optuna.objectives import as_objective
from bilevel_optuna.objectives import get_objective
from bilevel_optuna.objectives import list_objectives
from bilevel_optuna.objectives import objective_family
from bilevel_optuna.objectives import register_objective


def test_every_family_is_listed() -> None:
    names = list_objectives()
    for name in ["branin", "hartmann6", "rosenbrock", "ackley", "levy", "mixed", "lm"]:
        assert name in names
    assert sum(n.startswith("hpobench/") for n in names) == 8
    assert sum(n.startswith("hpolib/") for n in names) == 4
    assert sum(n.startswith("nb201/") for n in names) == 3
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    "name, kwargs, cls, family",
    [
        ("branin", {}, Branin, "synthetic"),
        ("ackley", {"dim": 7, "shift_seed": 2}, Ackley, "synthetic"),
        ("hpobench/kc1", {"seed": 4}, TabularObjective, "tabular"),
        ("nb201/cifar100", {}, TabularObjective, "tabular"),
        ("lm", {"steps": 10}, LMObjective, "lm"),
    ],
)
def test_get_objective_builds_with_kwargs(
    name: str, kwargs: dict[str, Any], cls: type, family: str
) -> None:
    objective = get_objective(name, **kwargs)
    assert isinstance(objective, cls)
    assert objective.name == name
    assert objective_family(name) == family
    if name == "ackley":
        assert len(objective.search_space) == 7


@pytest.mark.parametrize(
    "name, match",
    [
        ("brannin", r"Unknown objective 'brannin'\. Did you mean 'branin'\?"),
        ("hpobench/kc2", r"Did you mean 'hpobench/kc1'"),
        ("hartman6", r"Did you mean 'hartmann6'"),
        ("zzz", r"Valid names: branin, hartmann6, .*hpobench/kc1.*nb201/imagenet"),
    ],
)
def test_unknown_name_lists_the_valid_ones(name: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        get_objective(name)


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("branin", {"dim": 3}, r"'branin' does not take \['dim'\]"),
        ("hpobench/kc1", {"dataset": "car"}, r"does not take \['dataset'\]; it takes \['seed'\]"),
        ("rosenbrock", {"dim": 1}, r"dim must be an integer >= 2"),
        ("lm", {"steps": 0}, r"too small to train one step"),
    ],
)
def test_bad_arguments_are_configuration_errors(
    name: str, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        get_objective(name, **kwargs)


def test_register_a_user_objective(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_FACTORIES", dict(_registry._FACTORIES))
    monkeypatch.setattr(_registry, "_FAMILIES", dict(_registry._FAMILIES))

    def quadratic(trial: optuna.trial.BaseTrial) -> float:
        """Minimize (x - 2)^2."""
        return (trial.suggest_float("x", -5, 5) - 2) ** 2

    register_objective("quadratic", lambda: as_objective(quadratic, optimum=0.0))
    objective = get_objective("quadratic")
    assert isinstance(objective, Objective)
    assert objective_family("quadratic") == "user"
    assert "quadratic" in list_objectives()
    with pytest.raises(ValueError, match="registered already"):
        register_objective("quadratic", lambda: objective)
    register_objective("quadratic", lambda: objective, overwrite=True)
    with pytest.raises(ValueError, match="name"):
        register_objective(" padded ", lambda: objective)


def test_registry_import_does_not_load_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, bilevel_optuna.objectives as o; o.list_objectives(); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
