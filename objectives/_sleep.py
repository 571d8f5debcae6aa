"""An objective that sleeps before it answers: a registry objective made slow on purpose.

Benchmarks of the work distribution need trials that take wall time without taking a core, so
that eight workers on a two-core machine measure the storage and the claims, not the CPU.
:class:`SleepObjective` wraps any registry objective and sleeps a fixed time per trial; its
search space, direction, optimum and values are the base's.
"""

from __future__ import annotations

import math
import time
from typing import Any

import optuna

from bilevel_optuna.objectives._base import Objective

__all__ = ["SleepObjective"]


class SleepObjective(Objective):
    """A registry objective that sleeps ``seconds`` per trial, otherwise the same.

    In a spec: ``{name = "sleep", base = "branin", seconds = 0.5}``; other keys go to the base
    (``{name = "sleep", base = "ackley", dim = 5, seconds = 0.25}``). Its name is
    ``sleep-<base>``, so its inner studies are not mistaken for the base's.

    Args:
        base: The objective to wrap (the registry's ``sleep`` factory builds it from a
            registry name and ``base_kwargs``).
        seconds: Sleep per evaluated trial (not in :meth:`true_value`, which regret uses).

    Example:

        .. code-block:: python

            from bilevel_optuna.objectives import get_objective

            slow = get_objective("sleep", base="branin", seconds=0.5)
            assert slow.optimum == get_objective("branin").optimum
    """

    def __init__(self, base: Objective, *, seconds: float = 0.5) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise ValueError(f"seconds must be a number but got {seconds!r}.")
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds must be a finite number >= 0 but got {seconds}.")
        self.base = base
        self.seconds = float(seconds)
        self.name = f"sleep-{self.base.name}"
        self.description = self.base.description
        self.search_space = self.base.search_space
        self.direction = self.base.direction
        self.optimum = self.base.optimum
        self.noise = self.base.noise
        self.metric_name = self.base.metric_name

    def __call__(self, trial: optuna.trial.BaseTrial) -> float:
        time.sleep(self.seconds)
        return self.base(trial)  # the base's own call: its pruning and attributes, if any

    def evaluate(
        self, params: dict[str, Any], trial: optuna.trial.BaseTrial | None = None
    ) -> float:
        time.sleep(self.seconds)
        return self.base.evaluate(params, trial)

    def true_value(self, params: dict[str, Any]) -> float:
        return self.base.true_value(params)

    def __repr__(self) -> str:
        return f"SleepObjective(base={self.base!r}, seconds={self.seconds:g})"
