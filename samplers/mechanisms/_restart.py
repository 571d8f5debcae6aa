"""Stagnation restart: after k trials without improvement, a burst of far-away exploration."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import IntDistribution
from optuna.trial import TrialState
from scipy.stats import qmc  # imported here, not in a hook, where it could overrun hook_timeout

from bilevel_optuna._checks import check_int
from bilevel_optuna.samplers.mechanisms._base import Mechanism
from bilevel_optuna.samplers.mechanisms._base import ProposalContext
from bilevel_optuna.samplers.mechanisms._geometry import distance_matrix
from bilevel_optuna.samplers.mechanisms._geometry import encode
from bilevel_optuna.samplers.mechanisms._geometry import from_unit

_ACTIONS = ("sobol", "random", "prompt")

#: Points drawn per burst trial; the one farthest from every evaluated configuration is taken.
N_POOL = 64


@dataclasses.dataclass
class StagnationState:
    """Where the study stands: trials since the last improvement, and whether to burst now."""

    since_improvement: int
    best_number: int | None
    burst: bool
    burst_index: int  # position of this trial in its burst (0-based), -1 outside a burst


class RestartMechanism(Mechanism):
    """After ``patience`` trials without improvement, explore far away for ``burst`` trials.

    A model that copies its best configurations stalls in one basin. Restarting a local search
    when it stagnates is the oldest remedy (iterated local search, Lourenço, Martin and Stützle,
    "Iterated Local Search", 2003; the restarts of CMA-ES, Auger and Hansen, CEC 2005): here,
    once ``patience`` trials in a row (by number) have not improved on the best value, the next
    ``burst`` trials are exploration, then the model gets ``patience`` more trials, and so on
    until something improves. With ``action="sobol"`` or ``"random"``, ``prepare`` takes a burst
    trial over: it draws ``N_POOL`` points from a scrambled Sobol sequence
    (:class:`scipy.stats.qmc.Sobol`) or uniformly, and evaluates the one farthest from every
    evaluated configuration (maximin :func:`~bilevel_optuna.samplers.distance`). With
    ``action="prompt"`` the model still proposes, but its history window is cut to the best
    trial and a note tells it to leave the explored region. The state is computed from the
    stored trials on every call.

    Args:
        patience: Trials without improvement that start a burst.
        burst: Trials in a burst.
        action: ``"sobol"``, ``"random"`` or ``"prompt"``.
        min_improvement: Relative improvement over the best value that counts as one.
    """

    name = "restart"
    version = "1"
    trusted = True

    def __init__(
        self,
        *,
        patience: int = 8,
        burst: int = 3,
        action: str = "sobol",
        min_improvement: float = 0.0,
    ) -> None:
        check_int("patience", patience, minimum=1)
        check_int("burst", burst, minimum=1)
        if action not in _ACTIONS:
            raise ValueError(f"action must be one of {_ACTIONS} but got {action!r}.")
        if not (min_improvement >= 0.0 and math.isfinite(min_improvement)):
            raise ValueError(
                f"min_improvement must be a finite number >= 0 but got {min_improvement}."
            )
        self.patience = int(patience)
        self.burst = int(burst)
        self.action = action
        self.min_improvement = float(min_improvement)

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:
        return {
            "patience": IntDistribution(3, 20),
            "burst": IntDistribution(1, 8),
            "action": CategoricalDistribution(list(_ACTIONS)),
        }

    def state(self, context: ProposalContext) -> StagnationState:
        """Count the trials before this one since the last improvement (all trials by number;
        only completed ones can improve) and place this trial in the burst cycle."""
        before = sorted(
            (t for t in context.trials if t.number < context.trial.number),
            key=lambda t: t.number,
        )
        best: float | None = None
        best_number: int | None = None
        since = 0
        for t in before:
            since += 1
            if t.state != TrialState.COMPLETE or t.value is None:
                continue
            value = float(t.value)
            if best is None or self._improves(value, best, context.minimize):
                best, best_number, since = value, t.number, 0
        if best is None:
            return StagnationState(since, None, False, -1)
        # Cycle: ``patience`` ordinary trials, then ``burst`` exploring ones, repeated.
        if since < self.patience:
            return StagnationState(since, best_number, False, -1)
        position = (since - self.patience) % (self.patience + self.burst)
        in_burst = position < self.burst
        return StagnationState(since, best_number, in_burst, position if in_burst else -1)

    def _improves(self, value: float, best: float, minimize: bool) -> bool:
        margin = self.min_improvement * abs(best)
        return value < best - margin if minimize else value > best + margin

    def far_configuration(self, context: ProposalContext) -> dict[str, Any]:
        """Of ``N_POOL`` Sobol or uniform points, the one farthest from every evaluated one."""
        space = context.search_space
        d = len(space)
        if self.action == "sobol":
            seed = int(context.rng.integers(2**63))
            points = qmc.Sobol(d, scramble=True, rng=np.random.default_rng(seed)).random(N_POOL)
        else:
            points = context.rng.random((N_POOL, d))
        pool = [
            {name: from_unit(u, dist) for u, (name, dist) in zip(row, space.items())}
            for row in points
        ]
        known = [t.params for t in context.finished_trials] + context.pending_params
        if not known:
            return pool[0]
        nearest = distance_matrix(encode(pool, space), encode(known, space), space).min(axis=1)
        return pool[int(np.argmax(nearest))]

    def prepare(self, context: ProposalContext) -> None:
        state = self.state(context)
        record = context.record.setdefault(self.name, {})
        record.update(since_improvement=state.since_improvement, burst=state.burst)
        if not state.burst:
            return
        record["burst_index"] = state.burst_index
        if self.action == "prompt":
            context.history[:] = [t for t in context.trials if t.number == state.best_number]
            context.notes.append(
                f"The search has not improved for {state.since_improvement} trials. Propose a "
                "configuration in a region far from every evaluated one: change every parameter "
                "substantially."
            )
            return
        context.params = self.far_configuration(context)
        record["action"] = self.action


# The name before 0.2 (deprecated with a warning in bilevel_optuna.samplers).
StagnationRestartMechanism = RestartMechanism
