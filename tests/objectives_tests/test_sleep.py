"""SleepObjective: the base's space, optimum and values, a sleep per trial, clear errors."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest

from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives import get_objective
from bilevel_optuna.objectives import objective_family
from bilevel_optuna.objectives._sleep import SleepObjective
from bilevel_optuna.studies.specs._toml import build_objective


def test_same_space_direction_optimum_and_values_as_the_base() -> None:
    slow = get_objective("sleep", base="ackley", dim=3, shift_seed=1, seconds=0)
    base = get_objective("ackley", dim=3, shift_seed=1)
    assert isinstance(slow, SleepObjective)
    assert slow.name == "sleep-ackley" and objective_family("sleep") == "wrapper"
    assert slow.search_space == base.search_space and len(slow.search_space) == 3
    assert (slow.direction, slow.optimum, slow.description) == (
        base.direction,
        base.optimum,
        base.description,
    )
    params = {"x0": 0.5, "x1": -1.0, "x2": 2.0}
    assert slow.evaluate(params) == base.evaluate(params)
    assert slow.true_value(params) == base.true_value(params)
    assert slow.regret(base.evaluate(params)) == base.regret(base.evaluate(params))


def test_sleeps_once_per_trial_and_not_for_regret(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    slow = get_objective("sleep", base="branin", seconds=0.25)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(slow, n_trials=3)
    assert slept == [0.25, 0.25, 0.25]
    branin = get_objective("branin")
    for trial in study.trials:
        assert trial.value == branin.evaluate(trial.params)
        slow.true_value(trial.params)
    assert len(slept) == 3


def test_really_sleeps() -> None:
    slow = get_objective("sleep", base="branin", seconds=0.2)
    start = time.perf_counter()
    slow.evaluate({"x0": 1.0, "x1": 2.0})
    assert time.perf_counter() - start >= 0.2


def test_spec_form(tmp_path: Path) -> None:
    entry = {"name": "sleep", "base": "branin", "seconds": 0.5}
    objective = build_objective(entry, base_dir=tmp_path, where="[inner] objectives")
    assert isinstance(objective, SleepObjective)
    assert objective.seconds == 0.5 and objective.base.name == "branin"
    assert repr(objective) == "SleepObjective(base=Branin(name='branin'), seconds=0.5)"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"base": "brannin"}, r"Unknown objective 'brannin'\. Did you mean 'branin'"),
        ({"base": "sleep"}, "another objective"),
        ({"base": "branin", "seconds": -1}, r"seconds must be a finite number >= 0 but got -1"),
        ({"base": "branin", "seconds": "1"}, "seconds must be a number"),
        ({"base": "branin", "dim": 3}, r"Objective 'branin' does not take \['dim'\]"),
    ],
)
def test_clear_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        get_objective("sleep", **kwargs)
