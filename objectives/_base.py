"""The objective contract: a callable on an Optuna trial plus what the prompt and regret need."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution


def suggest_all(
    trial: optuna.trial.BaseTrial, search_space: Mapping[str, BaseDistribution]
) -> dict[str, Any]:
    """Suggest every parameter of ``search_space`` on ``trial`` through the public API."""
    params: dict[str, Any] = {}
    for name, dist in search_space.items():
        if isinstance(dist, FloatDistribution):
            params[name] = trial.suggest_float(
                name, dist.low, dist.high, log=dist.log, step=dist.step
            )
        elif isinstance(dist, IntDistribution):
            params[name] = trial.suggest_int(
                name, dist.low, dist.high, log=dist.log, step=dist.step
            )
        elif isinstance(dist, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, dist.choices)
        else:
            raise TypeError(f"Unsupported distribution for {name!r}: {dist!r}.")
    return params


class Objective:
    """An objective users optimize: a callable on a trial, with metadata.

    Subclasses set the attributes and implement :meth:`evaluate`; ``__call__`` suggests every
    parameter of :attr:`search_space` and hands the values to :meth:`evaluate`. Objectives whose
    values are noisy override :meth:`true_value` so that regret uses the noise-free value.

    Attributes:
        name: Registry name, e.g. ``"branin"``.
        description: Plain text for the LLM prompt: what is optimized and what matters.
        search_space: Parameter name to Optuna distribution.
        direction: ``"minimize"`` or ``"maximize"``.
        optimum: Best attainable value (or floor) where known, else ``None``.
        noise: Notes on noise, for the prompt and the reports.
        metric_name: What the value is called (``set_metric_names`` on every study, so
            optuna-dashboard labels its axes with it).
    """

    name: str = "objective"
    description: str = ""
    search_space: dict[str, BaseDistribution] = {}
    direction: str = "minimize"
    optimum: float | None = None
    noise: str = ""
    metric_name: str = "value"

    def evaluate(
        self, params: dict[str, Any], trial: optuna.trial.BaseTrial | None = None
    ) -> float:
        """Value of one configuration. ``trial`` is given for pruning and user attributes."""
        raise NotImplementedError

    def true_value(self, params: dict[str, Any]) -> float:
        """Noise-free value of a configuration; equal to :meth:`evaluate` unless overridden."""
        return self.evaluate(params)

    def __call__(self, trial: optuna.trial.BaseTrial) -> float:
        params = suggest_all(trial, self.search_space)
        return self.evaluate(params, trial)

    def regret(self, value: float) -> float:
        """Distance of ``value`` from the optimum in the direction of improvement (>= 0)."""
        if self.optimum is None:
            raise ValueError(
                f"Objective {self.name!r} has no known optimum; regret is undefined. "
                "Compare best values instead."
            )
        gap = value - self.optimum if self.direction == "minimize" else self.optimum - value
        return max(gap, 0.0) if math.isfinite(gap) else math.inf

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


@dataclasses.dataclass(repr=False)
class FunctionObjective(Objective):
    """Wrap a plain Optuna objective function; its metadata is optional."""

    func: Callable[[optuna.trial.BaseTrial], float] = dataclasses.field(default=lambda t: 0.0)
    name: str = "function"
    description: str = ""
    search_space: dict[str, BaseDistribution] = dataclasses.field(default_factory=dict)
    direction: str = "minimize"
    optimum: float | None = None
    noise: str = ""

    def __call__(self, trial: optuna.trial.BaseTrial) -> float:
        return self.func(trial)

    def evaluate(
        self, params: dict[str, Any], trial: optuna.trial.BaseTrial | None = None
    ) -> float:
        return self.func(optuna.trial.FixedTrial(params))


def as_objective(
    func: Objective | Callable[[optuna.trial.BaseTrial], float],
    *,
    name: str | None = None,
    description: str = "",
    direction: str = "minimize",
    search_space: Mapping[str, BaseDistribution] | None = None,
    optimum: float | None = None,
) -> Objective:
    """Return ``func`` as an :class:`Objective`; a plain function is wrapped."""
    if isinstance(func, Objective):
        return func
    if not callable(func):
        raise TypeError(f"An objective must be callable on an Optuna trial but got {func!r}.")
    if direction not in ("minimize", "maximize"):
        raise ValueError(f"direction must be 'minimize' or 'maximize' but got {direction!r}.")
    return FunctionObjective(
        func=func,
        name=name or getattr(func, "__name__", "function"),
        description=description or (getattr(func, "__doc__", None) or "").strip(),
        search_space=dict(search_space or {}),
        direction=direction,
        optimum=optimum,
    )
