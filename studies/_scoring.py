"""How inner studies score a proposer configuration: the outer study's value.

Every score is lower-is-better. Regret is divided by random search's median regret on the same
objective (1 = as good as random), so objectives of different scales can be averaged.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from collections.abc import Sequence

from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.studies._inner import InnerResult

AGGREGATES = ("auto", "regret", "best", "auc")


def resolve_aggregate(aggregate: str, objectives: Sequence[Objective]) -> str:
    """``aggregate`` checked, with ``"auto"`` made regret where every optimum is known."""
    if aggregate not in AGGREGATES:
        raise ConfigurationError(f"aggregate must be one of {AGGREGATES} but got {aggregate!r}.")
    if aggregate == "auto":
        return "regret" if all(o.optimum is not None for o in objectives) else "best"
    if aggregate == "regret":
        missing = [o.name for o in objectives if o.optimum is None]
        if missing:
            raise ConfigurationError(
                f"aggregate='regret' needs known optima but {missing} have none; "
                "use 'best' or 'auc'."
            )
    return aggregate


def metric_name(aggregate: str) -> str:
    """What the outer value is called (the outer study's metric name and the LLM's prompt)."""
    return "normalized regret" if aggregate == "regret" else aggregate


def random_scales(random_results: Mapping[str, Sequence[InnerResult]]) -> dict[str, float]:
    """Per objective, random search's median regret (1.0 where it is not a positive number)."""
    scales = {}
    for name, results in random_results.items():
        regrets = [r.regret for r in results if not math.isnan(r.regret)]
        scale = statistics.median(regrets) if regrets else math.nan
        scales[name] = scale if scale > 0 and math.isfinite(scale) else 1.0
    return scales


def score(result: InnerResult, objective: Objective, aggregate: str, scale: float = 1.0) -> float:
    """One inner study's contribution to the outer value (lower is better)."""
    if aggregate == "regret":
        return result.regret / scale
    if aggregate == "auc":
        finite = [v for v in result.curve if not math.isnan(v)]
        if not finite:
            return math.inf
        sign = 1.0 if objective.optimum is not None or objective.direction == "minimize" else -1.0
        return sign * statistics.fmean(finite) / scale
    best = result.best_value
    if math.isnan(best):
        return math.inf
    return best if objective.direction == "minimize" else -best


class Scorer:
    """Scores inner results with the run's aggregate and the scales random search set."""

    def __init__(self, aggregate: str) -> None:
        self.aggregate = aggregate
        self.scales: dict[str, float] = {}

    def set_scales(self, random_results: Mapping[str, Sequence[InnerResult]]) -> None:
        self.scales.update(random_scales(random_results))

    def __call__(self, result: InnerResult, objective: Objective) -> float:
        return score(result, objective, self.aggregate, self.scales.get(objective.name, 1.0))
