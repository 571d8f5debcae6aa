from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
import pytest
import scipy.optimize

from bilevel_optuna.objectives import Ackley
from bilevel_optuna.objectives import Branin
from bilevel_optuna.objectives import Hartmann6
from bilevel_optuna.objectives import Levy
from bilevel_optuna.objectives import MixedSpace
from bilevel_optuna.objectives import Rosenbrock
from bilevel_optuna.objectives import SyntheticObjective

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _as_params(x: Any) -> dict[str, float]:
    return {f"x{i}": float(v) for i, v in enumerate(x)}


# Optima and minimizers from Surjanovic & Bingham, "Virtual Library of Simulation Experiments".
@pytest.mark.parametrize(
    "objective, minimizer, expected",
    [
        (Branin(), (-math.pi, 12.275), 0.397887),
        (Branin(), (math.pi, 2.275), 0.397887),
        (Branin(), (9.42478, 2.475), 0.397887),
        (Hartmann6(), (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573), -3.32237),
        (Rosenbrock(dim=2), (1, 1), 0.0),
        (Rosenbrock(dim=7), (1,) * 7, 0.0),
        (Ackley(dim=3), (0, 0, 0), 0.0),
        (Ackley(dim=10), (0,) * 10, 0.0),
        (Levy(dim=1), (1,), 0.0),
        (Levy(dim=6), (1,) * 6, 0.0),
    ],
)
def test_known_optima_reproduce(
    objective: SyntheticObjective, minimizer: tuple[float, ...], expected: float
) -> None:
    value = objective.true_value(_as_params(minimizer))
    assert value == pytest.approx(expected, abs=1e-5)
    assert objective.optimum == pytest.approx(expected, abs=1e-5)
    assert objective.regret(value) == pytest.approx(0.0, abs=1e-5)


# Values away from the optimum, computed by hand from the closed forms.
@pytest.mark.parametrize(
    "objective, point, expected",
    [
        (Rosenbrock(dim=2), (0, 0), 1.0),
        (Rosenbrock(dim=3), (0, 0, 0), 2.0),
        (Branin(), (0, 0), 56.0 - 10 / (8 * math.pi)),
        (Ackley(dim=2), (1, 1), 20.0 - 20.0 * math.exp(-0.2)),
        # w = (0.75, 0.75): sin^2(0.75 pi) + w-term of x0 + tail term (sin^2(1.5 pi) = 1).
        (Levy(dim=2), (0, 0), 0.5 + 0.0625 * (1 + 10 * math.sin(0.75 * math.pi + 1) ** 2) + 0.125),
    ],
)
def test_values_away_from_optimum(
    objective: SyntheticObjective, point: tuple[float, ...], expected: float
) -> None:
    assert objective.true_value(_as_params(point)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    "objective",
    [Branin(), Hartmann6(), Rosenbrock(dim=3), Ackley(dim=4), Levy(dim=4)],
)
def test_no_point_beats_the_optimum(objective: SyntheticObjective) -> None:
    # A local optimizer started from many points never goes below the stated optimum.
    rng = np.random.default_rng(0)
    names = list(objective.search_space)
    bounds = [(objective.search_space[n].low, objective.search_space[n].high) for n in names]

    def f(x: np.ndarray) -> float:
        return objective.true_value(dict(zip(names, x)))

    best = math.inf
    for _ in range(8):
        x0 = [rng.uniform(lo, hi) for lo, hi in bounds]
        found = scipy.optimize.minimize(
            f, x0, bounds=bounds, method="L-BFGS-B", options={"maxiter": 100}
        )
        best = min(best, found.fun)
    assert objective.optimum is not None
    assert best >= objective.optimum - 1e-7


@pytest.mark.parametrize("cls", [Rosenbrock, Ackley, Levy])
def test_shift_moves_the_minimizer(cls: type) -> None:
    plain = cls(dim=3)
    shifted = cls(dim=3, shift_seed=7)
    assert not np.allclose(shifted.minimizer, plain.minimizer)
    assert shifted.true_value(_as_params(shifted.minimizer)) == pytest.approx(0.0, abs=1e-12)
    assert shifted.true_value(_as_params(plain.minimizer)) > 1e-3
    for name, value in zip(shifted.search_space, shifted.minimizer):
        dist = shifted.search_space[name]
        assert dist.low < value < dist.high
    assert cls(dim=3, shift_seed=7).minimizer == shifted.minimizer


def test_mixed_space_optimum_and_types() -> None:
    objective = MixedSpace()
    kinds = {type(d).__name__ for d in objective.search_space.values()}
    assert kinds == {"FloatDistribution", "IntDistribution", "CategoricalDistribution"}
    assert objective.search_space["learning_rate"].log
    assert objective.true_value(objective.minimizer) == pytest.approx(0.0, abs=1e-12)
    worse = {**objective.minimizer, "activation": "tanh"}
    assert objective.true_value(worse) > 0.1


def test_mixed_space_is_optimized_by_optuna() -> None:
    objective = MixedSpace()
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=40)
    assert set(study.best_params) == set(objective.search_space)
    assert study.best_value < objective.true_value(
        {
            "learning_rate": 0.5,
            "num_layers": 8,
            "units": 16,
            "activation": "sigmoid",
            "dropout": 0.5,
        }
    )


def test_noise_is_seeded_by_trial_number() -> None:
    objective = Branin(noise_std=0.5, seed=3)
    params = {"x0": 1.0, "x1": 2.0}
    a = objective.evaluate(params, optuna.trial.FixedTrial(params, number=4))
    b = objective.evaluate(params, optuna.trial.FixedTrial(params, number=4))
    c = objective.evaluate(params, optuna.trial.FixedTrial(params, number=5))
    assert a == b
    assert a != c
    assert a != objective.true_value(params)
    assert Branin().evaluate(params) == Branin().true_value(params)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Rosenbrock(dim=1), "dim must be an integer >= 2"),
        (lambda: Ackley(dim=0), "dim must be an integer >= 1"),
        (lambda: Branin(noise_std=-1.0), "noise_std"),
        (lambda: Levy(dim=2.5), "dim"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "objective", [Branin(), Hartmann6(), Rosenbrock(), Ackley(), Levy(), MixedSpace()]
)
def test_metadata_is_filled(objective: SyntheticObjective) -> None:
    assert objective.description
    assert objective.direction == "minimize"
    assert objective.noise
    assert objective.search_space
    study = optuna.create_study()
    study.optimize(objective, n_trials=3)
    assert set(study.trials[0].params) == set(objective.search_space)
