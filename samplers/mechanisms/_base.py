"""The Mechanism API: strategies injected into LLMSampler's proposal path.

A mechanism is a small class with up to four hooks, called by the sampler in this order for each
trial the model proposes:

1. :meth:`Mechanism.prepare` shapes the prompt context: adds notes, trims or reorders the history
   window, or takes the trial over by setting ``context.params`` (then the model is not asked).
2. :meth:`Mechanism.review` sees each candidate the model proposed and accepts it, rejects it with
   a reason that is fed back to the model, or replaces it with other parameters.
3. :meth:`Mechanism.choose` orders the accepted candidates when a call returned several; the first
   is evaluated now, the rest are queued for the next trials.
4. :meth:`Mechanism.after_trial` sees each finished trial.

State is rebuilt from the study's stored trials (``context.trials``) on every call, never kept
only in memory, so a mechanism survives restarts and works across processes sharing a storage.
Hyperparameters are constructor keywords declared in :meth:`Mechanism.search_space`, so the
outer study can tune them.

Example:

    .. code-block:: python

        from bilevel_optuna.samplers import Mechanism, Review


        class AvoidEdges(Mechanism):
            name = "avoid_edges"
            version = "1"

            def __init__(self, *, margin: float = 0.05) -> None:
                self.margin = margin

            @classmethod
            def search_space(cls):
                return {"margin": optuna.distributions.FloatDistribution(0.0, 0.2)}

            def review(self, candidate, context):
                u = context.normalize(candidate)
                if ((u < self.margin) | (u > 1 - self.margin)).any():
                    return Review.reject("a value lies on the edge of its range; move inward")
                return Review.accept()
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from bilevel_optuna.samplers.mechanisms._geometry import covers
from bilevel_optuna.samplers.mechanisms._geometry import distance
from bilevel_optuna.samplers.mechanisms._geometry import encode
from bilevel_optuna.samplers.mechanisms._geometry import normalize

if TYPE_CHECKING:
    import optuna

#: Trial states whose configuration has been evaluated.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclasses.dataclass(frozen=True)
class Review:
    """What :meth:`Mechanism.review` decides about one candidate."""

    action: str  # "accept", "reject" or "replace"
    reason: str = ""
    params: dict[str, Any] | None = None

    @classmethod
    def accept(cls) -> "Review":
        return cls("accept")

    @classmethod
    def reject(cls, reason: str) -> "Review":
        """Reject; ``reason`` is shown to the model when it is asked again."""
        return cls("reject", reason=reason)

    @classmethod
    def replace(cls, params: Mapping[str, Any], reason: str = "") -> "Review":
        """Evaluate ``params`` instead (they must lie inside the search space)."""
        return cls("replace", reason=reason, params=dict(params))


@dataclasses.dataclass
class ProposalContext:
    """What the hooks see and may change for one proposal.

    Attributes:
        study: The study (read it; do not optimize or enqueue on it).
        trial: The trial being proposed for.
        search_space: The parameters the model proposes.
        trials: Every trial of the study, by number: the stored state to rebuild from.
        minimize: Whether lower values are better.
        history: The window of completed trials the prompt shows; hooks may trim or reorder it.
        notes: Extra lines for the prompt.
        params: Set by ``prepare`` to take the trial over: these parameters are evaluated and
            the model is not asked.
        rng: A generator seeded per trial, so hooks are reproducible.
        record: Per-mechanism values stored on the trial as proof and for the dashboard.
    """

    study: "optuna.Study"
    trial: FrozenTrial
    search_space: Mapping[str, BaseDistribution]
    trials: Sequence[FrozenTrial]
    minimize: bool
    history: list[FrozenTrial]
    notes: list[str]
    rng: np.random.Generator
    params: dict[str, Any] | None = None
    record: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    # Views of ``trials``: computed once per proposal, since the trials do not change during
    # one, and shared by every mechanism and the sampler.
    @functools.cached_property
    def complete_trials(self) -> list[FrozenTrial]:
        """Completed trials that have every parameter of the search space."""
        return [
            t
            for t in self.trials
            if t.state == TrialState.COMPLETE
            and t.value is not None
            and covers(t.params, self.search_space)
        ]

    @functools.cached_property
    def finished_trials(self) -> list[FrozenTrial]:
        """Complete, pruned and failed trials other than this one that have every parameter,
        by number: the configurations already evaluated."""
        return sorted(
            (
                t
                for t in self.trials
                if t.state in FINISHED
                and t.number != self.trial.number
                and covers(t.params, self.search_space)
            ),
            key=lambda t: t.number,
        )

    @functools.cached_property
    def pending_params(self) -> list[dict[str, Any]]:
        """Configurations being evaluated or queued by other trials.

        The parameters of running trials and the fixed parameters of waiting (enqueued) ones.
        """
        pending = []
        for t in self.trials:
            if t.number == self.trial.number:
                continue
            if t.state == TrialState.RUNNING and t.params:
                pending.append(dict(t.params))
            elif t.state == TrialState.WAITING:
                pending.append(dict(t.system_attrs.get("fixed_params", {})))
        return [p for p in pending if covers(p, self.search_space)]

    @functools.cached_property
    def encoded_finished(self) -> np.ndarray:
        """:attr:`finished_trials` as rows of the unit cube (see ``mechanisms/_geometry.py``)."""
        return encode([t.params for t in self.finished_trials], self.search_space)

    @property
    def best_trial(self) -> FrozenTrial | None:
        complete = self.complete_trials
        if not complete:
            return None
        key = (lambda t: t.value) if self.minimize else (lambda t: -t.value)  # type: ignore[operator]
        return min(complete, key=key)

    def is_better(self, a: float, b: float) -> bool:
        """Whether value ``a`` improves on ``b`` in the study's direction."""
        return a < b if self.minimize else a > b

    def normalize(self, params: Mapping[str, Any]) -> np.ndarray:
        return normalize(params, self.search_space)

    def distance(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
        return distance(a, b, self.search_space)


class Mechanism:
    """Base class of mechanism samplers; override the hooks you need.

    Class attributes ``name`` (registry name, lowercase) and ``version`` identify a mechanism in
    the storage. Constructor arguments are keyword-only hyperparameters listed in
    :meth:`search_space`.
    """

    name: ClassVar[str] = "mechanism"
    version: ClassVar[str] = "1"
    #: ``True`` for code the sampler may call directly, without a time guard: the built-in
    #: mechanisms, and proxies that enforce their own limits (a guarded generated mechanism,
    #: whose code runs in another process). User classes default to ``False`` and are called
    #: under the sampler's ``hook_timeout``.
    trusted: ClassVar[bool] = False

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:
        """Hyperparameters the outer study may tune: constructor keyword -> distribution."""
        return {}

    def prepare(self, context: ProposalContext) -> None:
        """Shape the prompt context before the model is asked."""

    def review(self, candidate: dict[str, Any], context: ProposalContext) -> Review:
        """Accept, reject or replace one candidate."""
        return Review.accept()

    def choose(
        self, candidates: list[dict[str, Any]], context: ProposalContext
    ) -> list[dict[str, Any]]:
        """Order the accepted candidates; the first is evaluated now."""
        return candidates

    def after_trial(
        self,
        study: "optuna.Study",
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        """React to a finished trial."""

    def params(self) -> dict[str, Any]:
        """The hyperparameters this instance was built with (for the record)."""
        return {k: getattr(self, k) for k in self.search_space() if hasattr(self, k)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


#: Hook names in call order; used to count which hooks a mechanism overrides and calls.
HOOKS = ("prepare", "review", "choose", "after_trial")


def overridden_hooks(mechanism: Mechanism) -> tuple[str, ...]:
    """The hooks ``mechanism``'s class defines itself (the ones that can do anything)."""
    return tuple(h for h in HOOKS if getattr(type(mechanism), h) is not getattr(Mechanism, h))
