"""Candidate choice: when the model proposes several configurations, pick by novelty or by a
surrogate's predicted value."""

from __future__ import annotations

from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution

from bilevel_optuna._checks import check_int
from bilevel_optuna.samplers.mechanisms._base import Mechanism
from bilevel_optuna.samplers.mechanisms._base import ProposalContext
from bilevel_optuna.samplers.mechanisms._geometry import distance_matrix
from bilevel_optuna.samplers.mechanisms._geometry import encode

_CRITERIA = ("novelty", "surrogate")

#: Completed trials the surrogate is fitted on (the best ones), to keep it cheap.
MAX_SURROGATE_TRIALS = 200


def gp_posterior_mean(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    search_space: dict[str, BaseDistribution],
    *,
    length_scale: float,
    noise: float = 1e-2,
) -> np.ndarray:
    """Posterior mean of a zero-mean Gaussian process on standardized values.

    The kernel is ``exp(-d**2 / (2 * length_scale**2))`` with ``d`` the normalized,
    categorical-aware :func:`~bilevel_optuna.samplers.distance`; ``noise`` is the nugget on the
    standardized scale. Returns predictions on the scale of ``y_train``.
    """
    mean, std = float(np.mean(y_train)), float(np.std(y_train))
    if std == 0.0 or not np.isfinite(std):
        return np.full(x_test.shape[0], mean)
    z = (y_train - mean) / std
    k_train = np.exp(-distance_matrix(x_train, x_train, search_space) ** 2 / (2 * length_scale**2))
    k_test = np.exp(-distance_matrix(x_test, x_train, search_space) ** 2 / (2 * length_scale**2))
    alpha = np.linalg.solve(k_train + noise * np.eye(len(z)), z)
    return np.asarray(mean + std * (k_test @ alpha), dtype=float)


class CandidateChoiceMechanism(Mechanism):
    """Order the model's candidates by novelty or by a surrogate's predicted value.

    With ``n_candidates > 1`` the model returns several configurations per call; the sampler
    evaluates the first now and queues the rest. ``criterion="novelty"`` puts first the
    candidate farthest from every evaluated one (largest minimum
    :func:`~bilevel_optuna.samplers.distance`), against the model's habit of proposing what it
    has seen; ``criterion="surrogate"`` puts first the candidate whose expected value under a
    Gaussian-process posterior mean (Rasmussen and Williams, "Gaussian Processes for Machine
    Learning", 2006, eq. 2.25; an RBF kernel on the normalized, categorical-aware distance,
    fitted on the best ``MAX_SURROGATE_TRIALS`` completed trials with numpy only) is best, as
    LLAMBO (Liu et al., ICLR 2024) ranks LLM-sampled candidates with a surrogate. With fewer
    than 3 completed trials the surrogate falls back to novelty. ``keep`` candidates are kept
    (the rest are dropped, not queued), so ``keep=1`` picks one per call; ``0`` keeps them all,
    reordered.

    This mechanism only acts through :meth:`choose`, which the sampler calls only when a model
    call returned two or more accepted candidates: give the sampler ``n_candidates >= 2``.

    Args:
        criterion: ``"novelty"`` or ``"surrogate"``.
        keep: How many of the ordered candidates to keep; ``0`` keeps all.
        length_scale: The surrogate kernel's length scale, in normalized distance.
    """

    name = "candidate_choice"
    version = "1"
    trusted = True

    def __init__(
        self, *, criterion: str = "surrogate", keep: int = 1, length_scale: float = 0.2
    ) -> None:
        if criterion not in _CRITERIA:
            raise ValueError(f"criterion must be one of {_CRITERIA} but got {criterion!r}.")
        check_int("keep", keep)
        if not (length_scale > 0.0 and np.isfinite(length_scale)):
            raise ValueError(f"length_scale must be a finite number > 0 but got {length_scale}.")
        self.criterion = criterion
        self.keep = int(keep)
        self.length_scale = float(length_scale)

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:
        return {
            "criterion": CategoricalDistribution(list(_CRITERIA)),
            "keep": IntDistribution(0, 3),
            "length_scale": FloatDistribution(0.05, 1.0, log=True),
        }

    def scores(
        self, candidates: list[dict[str, Any]], context: ProposalContext
    ) -> tuple[str, np.ndarray]:
        """The criterion used and each candidate's score (higher is better)."""
        space = dict(context.search_space)
        x = encode(candidates, space)
        if self.criterion == "surrogate":
            complete = context.complete_trials
            if len(complete) >= 3:
                sign = 1.0 if context.minimize else -1.0
                best = sorted(complete, key=lambda t: sign * float(t.value))
                best = best[:MAX_SURROGATE_TRIALS]
                y = np.array([float(t.value) for t in best])
                finite = np.isfinite(y)
                if finite.sum() >= 3:
                    x_train = encode([t.params for t, ok in zip(best, finite) if ok], space)
                    mean = gp_posterior_mean(
                        x_train, y[finite], x, space, length_scale=self.length_scale
                    )
                    return "surrogate", -sign * mean
        known = [t.params for t in context.finished_trials]
        if not known:
            return "novelty", np.zeros(len(candidates))
        return "novelty", distance_matrix(x, encode(known, space), space).min(axis=1)

    def choose(
        self, candidates: list[dict[str, Any]], context: ProposalContext
    ) -> list[dict[str, Any]]:
        used, scores = self.scores(candidates, context)
        order = sorted(range(len(candidates)), key=lambda i: -scores[i])  # stable on ties
        kept = order[: self.keep] if self.keep > 0 else order
        record = context.record.setdefault(self.name, {"calls": 0})
        record["calls"] += 1
        record.update(
            criterion=used,
            scores=[round(float(s), 6) for s in scores],
            chosen=order[0],
            dropped=len(candidates) - len(kept),
        )
        return [candidates[i] for i in kept]
