"""Tabu search: reject proposals too close to configurations already evaluated."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from bilevel_optuna.samplers._mechanism import Mechanism
from bilevel_optuna.samplers._mechanism import ProposalContext
from bilevel_optuna.samplers._mechanism import Review
from bilevel_optuna.samplers._mechanism import normalize
from bilevel_optuna.samplers._prompt import format_params

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def encode(
    configs: Sequence[Mapping[str, Any]], search_space: Mapping[str, BaseDistribution]
) -> np.ndarray:
    """Normalized configurations as rows of an ``(n, d)`` array (see :func:`normalize`)."""
    if not configs:
        return np.empty((0, len(search_space)))
    return np.vstack([normalize(c, search_space) for c in configs])


def distance_matrix(
    a: np.ndarray, b: np.ndarray, search_space: Mapping[str, BaseDistribution]
) -> np.ndarray:
    """Pairwise :func:`~bilevel_optuna.samplers.distance` between encoded rows of ``a`` and
    ``b``, vectorized: the same root mean square, categoricals counting 0 if equal and 1 if not.
    """
    if a.shape[0] == 0 or b.shape[0] == 0 or not search_space:
        return np.zeros((a.shape[0], b.shape[0]))
    diff = a[:, None, :] - b[None, :, :]
    categorical = np.array(
        [isinstance(d, CategoricalDistribution) for d in search_space.values()], dtype=bool
    )
    if categorical.any():
        diff[..., categorical] = (diff[..., categorical] != 0).astype(float)
    return np.sqrt(np.mean(diff * diff, axis=-1))


def evaluated_trials(
    trials: Sequence[FrozenTrial], search_space: Mapping[str, BaseDistribution], exclude: int
) -> list[FrozenTrial]:
    """Finished trials (complete, pruned or failed) that hold every parameter, by number."""
    return sorted(
        (
            t
            for t in trials
            if t.state in _FINISHED
            and t.number != exclude
            and all(n in t.params for n in search_space)
        ),
        key=lambda t: t.number,
    )


class TabuMechanism(Mechanism):
    """Reject candidates within ``radius`` of a recently evaluated configuration.

    A small model asked for a new configuration tends to copy one it was shown. Tabu search
    (Glover, "Tabu Search - Part I", ORSA Journal on Computing 1(3), 1989) forbids moves back to
    recently visited solutions; here the visited solutions are the finished trials (complete,
    pruned or failed), closeness is :func:`~bilevel_optuna.samplers.distance` (normalized per
    range, log where the parameter is, categoricals equal or not), and a rejected candidate goes
    back to the model with the trial it is too close to and the distance, so the next answer can
    move away. When every attempt is rejected, the sampler falls back to its ``base_sampler``.

    The tabu list is rebuilt from the stored trials on every call.

    Args:
        radius: Candidates at a distance ``<= radius`` from a tabu configuration are rejected.
            ``0`` rejects exact repeats only.
        tenure: Only the last ``tenure`` finished trials (by number) are tabu; ``0`` makes every
            finished trial tabu.

    Example:

        .. code-block:: python

            sampler = LLMSampler(mechanisms=[("tabu", {"radius": 0.05, "tenure": 20})])
    """

    name = "tabu"
    version = "1"

    def __init__(self, *, radius: float = 0.05, tenure: int = 0) -> None:
        if not 0.0 <= radius <= 1.0:
            raise ValueError(f"radius must be between 0 and 1 but got {radius}.")
        if not isinstance(tenure, (int, np.integer)) or isinstance(tenure, bool) or tenure < 0:
            raise ValueError(f"tenure must be a non-negative integer but got {tenure}.")
        self.radius = float(radius)
        self.tenure = int(tenure)

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:
        return {
            "radius": FloatDistribution(0.0, 0.3),
            "tenure": IntDistribution(0, 50),
        }

    def tabu_trials(self, context: ProposalContext) -> list[FrozenTrial]:
        """The trials whose configurations are tabu for this proposal."""
        finished = evaluated_trials(context.trials, context.search_space, context.trial.number)
        return finished[-self.tenure :] if self.tenure > 0 else finished

    def review(self, candidate: dict[str, Any], context: ProposalContext) -> Review:
        tabu = self.tabu_trials(context)
        record = context.record.setdefault(self.name, {"rejected": 0})
        record["tabu_size"] = len(tabu)
        if not tabu:
            return Review.accept()
        space = context.search_space
        distances = distance_matrix(
            encode([candidate], space), encode([t.params for t in tabu], space), space
        )[0]
        nearest = int(np.argmin(distances))
        d = float(distances[nearest])
        if d > self.radius:
            return Review.accept()
        record["rejected"] += 1
        close = tabu[nearest]
        what = "repeats" if d == 0.0 else "is too close to"
        return Review.reject(
            f"it {what} trial {close.number} {format_params(close.params, list(space))} "
            f"(distance {d:.3g} <= tabu radius {self.radius:.3g}); propose a configuration "
            "farther from every evaluated one"
        )
