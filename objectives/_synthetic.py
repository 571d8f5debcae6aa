"""Synthetic test functions with known optima: Branin, Hartmann-6, Rosenbrock, Ackley, Levy, mixed.

All are minimized. Each takes an optional Gaussian ``noise_std`` (seeded by the objective's
``seed`` and the trial number, so a rerun reproduces it); :meth:`true_value` is the noise-free
value, so regret is measured on it. Rosenbrock, Ackley and Levy take any dimension ``dim`` and an
optional ``shift_seed`` that moves their optimum away from the round numbers (0 or 1) a language
model tends to propose anyway.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution

from bilevel_optuna.objectives._base import Objective

__all__ = [
    "Ackley",
    "Branin",
    "Hartmann6",
    "Levy",
    "MixedSpace",
    "Rosenbrock",
    "SyntheticObjective",
]


class SyntheticObjective(Objective):
    """Base of the synthetic functions: optional seeded Gaussian noise over a closed form.

    Subclasses implement ``_function`` on a parameter dict.
    """

    def __init__(self, *, noise_std: float = 0.0, seed: int = 0) -> None:
        if not (math.isfinite(noise_std) and noise_std >= 0.0):
            raise ValueError(f"noise_std must be a finite number >= 0 but got {noise_std}.")
        self.noise_std = float(noise_std)
        self.seed = int(seed)
        self.noise = (
            f"Gaussian noise with standard deviation {noise_std:g} is added to each evaluation."
            if noise_std > 0
            else "Deterministic: the same parameters always give the same value."
        )

    def _function(self, params: dict[str, Any]) -> float:
        raise NotImplementedError

    def true_value(self, params: dict[str, Any]) -> float:
        return float(self._function(params))

    def evaluate(
        self, params: dict[str, Any], trial: optuna.trial.BaseTrial | None = None
    ) -> float:
        value = self.true_value(params)
        if self.noise_std > 0:
            number = getattr(trial, "number", None)
            key = [self.seed] if number is None else [self.seed, int(number)]
            value += float(np.random.default_rng(key).normal(0.0, self.noise_std))
        return value


def _vector(params: dict[str, Any], dim: int) -> np.ndarray:
    return np.array([float(params[f"x{i}"]) for i in range(dim)])


def _box(low: float, high: float, dim: int) -> dict[str, BaseDistribution]:
    return {f"x{i}": FloatDistribution(low, high) for i in range(dim)}


class Branin(SyntheticObjective):
    """Branin-Hoo on [-5, 10] x [0, 15]; three global minima of 0.397887."""

    name = "branin"
    optimum = 0.39788735772973816
    minimizers = ((-math.pi, 12.275), (math.pi, 2.275), (3 * math.pi, 2.475))

    def __init__(self, *, noise_std: float = 0.0, seed: int = 0) -> None:
        super().__init__(noise_std=noise_std, seed=seed)
        self.search_space = {
            "x0": FloatDistribution(-5.0, 10.0),
            "x1": FloatDistribution(0.0, 15.0),
        }
        self.description = (
            "Minimize the Branin function of two real numbers x0 in [-5, 10] and x1 in [0, 15]. "
            "It has three global minima of equal value in separate valleys; smooth, no noise "
            "unless configured."
        )

    def _function(self, params: dict[str, Any]) -> float:
        x1, x2 = float(params["x0"]), float(params["x1"])
        b = 5.1 / (4 * math.pi**2)
        c = 5 / math.pi
        t = 1 / (8 * math.pi)
        return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H6_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H6_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)


class Hartmann6(SyntheticObjective):
    """Hartmann-6 on [0, 1]^6; global minimum -3.32237, several local minima."""

    name = "hartmann6"
    optimum = -3.322368011415515
    minimizer = (0.20168952, 0.15001069, 0.47687398, 0.27533243, 0.31165162, 0.65730054)

    def __init__(self, *, noise_std: float = 0.0, seed: int = 0) -> None:
        super().__init__(noise_std=noise_std, seed=seed)
        self.search_space = _box(0.0, 1.0, 6)
        self.description = (
            "Minimize the 6-dimensional Hartmann function of x0..x5, each in [0, 1]. A sum of "
            "four Gaussian-shaped wells of different depths: one global minimum near -3.32 and "
            "local minima that trap greedy search."
        )

    def _function(self, params: dict[str, Any]) -> float:
        x = _vector(params, 6)
        inner = np.sum(_H6_A * (x - _H6_P) ** 2, axis=1)
        return float(-np.sum(_H6_ALPHA * np.exp(-inner)))


class _AnyDimension(SyntheticObjective):
    """A function of ``dim`` reals on a box, optionally shifted so its optimum is not round."""

    _low: float
    _high: float
    _minimizer_coordinate: float
    _min_dim: int = 1

    def __init__(
        self, *, dim: int = 5, shift_seed: int | None = None, noise_std: float = 0.0, seed: int = 0
    ) -> None:
        super().__init__(noise_std=noise_std, seed=seed)
        if not isinstance(dim, (int, np.integer)) or dim < self._min_dim:
            raise ValueError(f"dim must be an integer >= {self._min_dim} but got {dim!r}.")
        self.dim = int(dim)
        self.search_space = _box(self._low, self._high, self.dim)
        if shift_seed is None:
            self.shift = np.zeros(self.dim)
        else:
            # Up to 15% of the range either way, keeping the minimizer well inside the box.
            span = 0.15 * (self._high - self._low)
            self.shift = np.random.default_rng(shift_seed).uniform(-span, span, size=self.dim)
        self.minimizer = tuple(self._minimizer_coordinate + self.shift)

    def _function(self, params: dict[str, Any]) -> float:
        return float(self._closed_form(_vector(params, self.dim) - self.shift))

    def _closed_form(self, x: np.ndarray) -> float:
        raise NotImplementedError

    def _where(self) -> str:
        if not np.any(self.shift):
            return ""
        return " Its minimum has been moved away from the textbook location."


class Rosenbrock(_AnyDimension):
    """Rosenbrock on [-5, 10]^dim; minimum 0 in a long curved valley."""

    name = "rosenbrock"
    optimum = 0.0
    _low, _high, _minimizer_coordinate, _min_dim = -5.0, 10.0, 1.0, 2

    def __init__(
        self, *, dim: int = 5, shift_seed: int | None = None, noise_std: float = 0.0, seed: int = 0
    ) -> None:
        super().__init__(dim=dim, shift_seed=shift_seed, noise_std=noise_std, seed=seed)
        self.description = (
            f"Minimize the {self.dim}-dimensional Rosenbrock function of x0..x{self.dim - 1}, "
            "each in [-5, 10]. The minimum of 0 lies at the bottom of a narrow, curved, "
            "flat-floored valley: finding the valley is easy, following it is hard."
            + self._where()
        )

    def _closed_form(self, x: np.ndarray) -> float:
        return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


class Ackley(_AnyDimension):
    """Ackley on [-32.768, 32.768]^dim; minimum 0 under a nearly flat, bumpy outer region."""

    name = "ackley"
    optimum = 0.0
    _low, _high, _minimizer_coordinate = -32.768, 32.768, 0.0

    def __init__(
        self, *, dim: int = 5, shift_seed: int | None = None, noise_std: float = 0.0, seed: int = 0
    ) -> None:
        super().__init__(dim=dim, shift_seed=shift_seed, noise_std=noise_std, seed=seed)
        self.description = (
            f"Minimize the {self.dim}-dimensional Ackley function of x0..x{self.dim - 1}, each in "
            "[-32.768, 32.768]. Almost flat with many small local minima far from the centre "
            "of attraction, and one deep funnel around the global minimum of 0." + self._where()
        )

    def _closed_form(self, x: np.ndarray) -> float:
        a = -20.0 * math.exp(-0.2 * math.sqrt(float(np.mean(x**2))))
        b = -math.exp(float(np.mean(np.cos(2 * math.pi * x))))
        return a + b + 20.0 + math.e


class Levy(_AnyDimension):
    """Levy on [-10, 10]^dim; minimum 0 among many regularly spaced local minima."""

    name = "levy"
    optimum = 0.0
    _low, _high, _minimizer_coordinate = -10.0, 10.0, 1.0

    def __init__(
        self, *, dim: int = 5, shift_seed: int | None = None, noise_std: float = 0.0, seed: int = 0
    ) -> None:
        super().__init__(dim=dim, shift_seed=shift_seed, noise_std=noise_std, seed=seed)
        self.description = (
            f"Minimize the {self.dim}-dimensional Levy function of x0..x{self.dim - 1}, each in "
            "[-10, 10]. Many regularly spaced local minima on a bowl; the global minimum is 0."
            + self._where()
        )

    def _closed_form(self, x: np.ndarray) -> float:
        w = 1.0 + (x - 1.0) / 4.0
        head = math.sin(math.pi * w[0]) ** 2
        body = np.sum((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(math.pi * w[:-1] + 1) ** 2))
        tail = (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2)
        return float(head + body + tail)


# Per activation: best log10 learning rate, best depth, and the penalty for choosing it.
_MIXED_ACTIVATIONS = {
    "relu": (-3.0, 4, 0.0),
    "tanh": (-2.5, 3, 0.15),
    "sigmoid": (-2.0, 2, 0.4),
}


class MixedSpace(SyntheticObjective):
    """A mixed space shaped like a network's hyperparameters: log-float, ints, categorical, float.

    The best learning rate and depth depend on the activation; the best dropout depends on the
    width. Minimum 0 at ``learning_rate=1e-3, num_layers=4, units=128, activation="relu",
    dropout=0.2``.
    """

    name = "mixed"
    optimum = 0.0
    minimizer = {
        "learning_rate": 1e-3,
        "num_layers": 4,
        "units": 128,
        "activation": "relu",
        "dropout": 0.2,
    }

    def __init__(self, *, noise_std: float = 0.0, seed: int = 0) -> None:
        super().__init__(noise_std=noise_std, seed=seed)
        self.search_space = {
            "learning_rate": FloatDistribution(1e-5, 1.0, log=True),
            "num_layers": IntDistribution(1, 8),
            "units": IntDistribution(16, 1024, log=True),
            "activation": CategoricalDistribution(tuple(_MIXED_ACTIVATIONS)),
            "dropout": FloatDistribution(0.0, 0.5),
        }
        self.description = (
            "Minimize a synthetic 'validation loss' of a network with these hyperparameters: "
            "learning_rate (log scale, 1e-5 to 1), num_layers (integer 1 to 8), units (integer "
            "16 to 1024, log scale), activation (relu, tanh or sigmoid) and dropout (0 to 0.5). "
            "The best learning rate and depth depend on the activation, and the best dropout "
            "grows with the width. The minimum is 0."
        )

    def _function(self, params: dict[str, Any]) -> float:
        best_log_lr, best_layers, penalty = _MIXED_ACTIVATIONS[str(params["activation"])]
        log_units = math.log2(float(params["units"]))
        best_dropout = 0.1 + 0.05 * (log_units - 5.0)
        return (
            (math.log10(float(params["learning_rate"])) - best_log_lr) ** 2
            + 0.1 * (int(params["num_layers"]) - best_layers) ** 2
            + 0.25 * (log_units - 7.0) ** 2
            + 4.0 * (float(params["dropout"]) - best_dropout) ** 2
            + penalty
        )
