"""Trust region: keep proposals in a box around the incumbent that grows and shrinks (TuRBO)."""

from __future__ import annotations

import dataclasses
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial

from bilevel_optuna._checks import check_int
from bilevel_optuna.samplers._prompt import format_params
from bilevel_optuna.samplers._prompt import format_value
from bilevel_optuna.samplers.mechanisms._base import Mechanism
from bilevel_optuna.samplers.mechanisms._base import ProposalContext
from bilevel_optuna.samplers.mechanisms._base import Review
from bilevel_optuna.samplers.mechanisms._geometry import denormalize


@dataclasses.dataclass
class TrustRegionState:
    """The trust region after replaying the completed trials."""

    radius: float
    center: FrozenTrial | None
    successes: int = 0
    failures: int = 0
    restarts: int = 0


class TrustRegionMechanism(Mechanism):
    """Keep proposals in a box around the incumbent; grow it on success, shrink it on failure.

    The rule is TuRBO's (Eriksson et al., "Scalable Global Optimization via Local Bayesian
    Optimization", NeurIPS 2019): a trial that improves on the region's incumbent by more than
    ``1e-3 * |incumbent|`` is a success, any other completed trial a failure; after
    ``success_tolerance`` consecutive successes the radius doubles (up to ``max_radius``), after
    ``failure_tolerance`` consecutive failures it halves; when it falls below ``min_radius`` the
    region restarts at ``initial_radius``, centred on the best trial completed after the restart
    (the first proposal after a restart is unconstrained), as TuRBO restarts from fresh data.

    The radius is a half-width in normalized coordinates: the box is ``incumbent +- radius``
    per numeric parameter, clipped to the range (on a grid, the values nearest its edges are
    inside). The state is rebuilt on every call by replaying
    the completed trials in number order, so nothing is kept in memory. ``prepare`` tells the
    model the box; ``review`` replaces a candidate outside it by its projection into it (clipped
    in normalized space and mapped back to the grid); on projection, each categorical that
    differs from the incumbent's is set to the incumbent's with probability
    ``categorical_probability``. The radius is recorded on each trial.

    Args:
        initial_radius: Half-width of a new region, as a fraction of each range.
        min_radius: The region restarts below this.
        max_radius: The region never grows beyond this.
        success_tolerance: Consecutive successes that double the radius.
        failure_tolerance: Consecutive failures that halve it; ``None`` uses TuRBO's
            ``max(4, number of parameters)``.
        categorical_probability: Chance that a projected candidate takes the incumbent's value
            of a categorical parameter.
    """

    name = "trust_region"
    version = "1"
    trusted = True

    def __init__(
        self,
        *,
        initial_radius: float = 0.2,
        min_radius: float = 0.01,
        max_radius: float = 0.5,
        success_tolerance: int = 3,
        failure_tolerance: int | None = None,
        categorical_probability: float = 0.5,
    ) -> None:
        for arg, value in (
            ("initial_radius", initial_radius),
            ("min_radius", min_radius),
            ("max_radius", max_radius),
        ):
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{arg} must be in (0, 1] but got {value}.")
        if not min_radius <= initial_radius <= max_radius:
            raise ValueError(
                "initial_radius must lie between min_radius and max_radius but got "
                f"initial_radius={initial_radius}, min_radius={min_radius}, "
                f"max_radius={max_radius}."
            )
        check_int("success_tolerance", success_tolerance, minimum=1)
        check_int("failure_tolerance", failure_tolerance, minimum=1, allow_none=True)
        if not 0.0 <= categorical_probability <= 1.0:
            raise ValueError(
                "categorical_probability must be between 0 and 1 but got "
                f"{categorical_probability}."
            )
        self.initial_radius = float(initial_radius)
        self.min_radius = float(min_radius)
        self.max_radius = float(max_radius)
        self.success_tolerance = int(success_tolerance)
        self.failure_tolerance = None if failure_tolerance is None else int(failure_tolerance)
        self.categorical_probability = float(categorical_probability)

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:
        return {
            "initial_radius": FloatDistribution(0.05, 0.5),
            "success_tolerance": IntDistribution(1, 5),
            "failure_tolerance": IntDistribution(1, 10),
            "categorical_probability": FloatDistribution(0.0, 1.0),
        }

    # ------------------------------------------------------------------ state
    def state(self, context: ProposalContext) -> TrustRegionState:
        """Replay the completed trials in number order and return the region now."""
        fail_tol = self.failure_tolerance or max(4, len(context.search_space))
        state = TrustRegionState(radius=self.initial_radius, center=None)
        for t in sorted(context.complete_trials, key=lambda t: t.number):
            if t.number == context.trial.number:
                continue
            value = float(t.value)
            if state.center is None:
                state.center = t
                continue
            best = float(state.center.value)
            margin = 1e-3 * abs(best)
            improved = value < best - margin if context.minimize else value > best + margin
            if improved:
                state.successes, state.failures = state.successes + 1, 0
            else:
                state.successes, state.failures = 0, state.failures + 1
            if context.is_better(value, best):
                state.center = t
            if state.successes >= self.success_tolerance:
                state.radius = min(2.0 * state.radius, self.max_radius)
                state.successes = 0
            elif state.failures >= fail_tol:
                state.radius /= 2.0
                state.failures = 0
                if state.radius < self.min_radius:
                    state = TrustRegionState(
                        radius=self.initial_radius, center=None, restarts=state.restarts + 1
                    )
        return state

    def box(
        self, context: ProposalContext, state: TrustRegionState
    ) -> dict[str, tuple[float, float]]:
        """Normalized ``(low, high)`` per numeric parameter around the state's centre."""
        assert state.center is not None
        center = context.normalize(state.center.params)
        return {
            name: (max(0.0, c - state.radius), min(1.0, c + state.radius))
            for (name, dist), c in zip(context.search_space.items(), center)
            if not isinstance(dist, CategoricalDistribution)
        }

    def _record(self, context: ProposalContext, state: TrustRegionState) -> dict[str, Any]:
        record = context.record.setdefault(self.name, {"projected": 0})
        record.update(
            radius=state.radius,
            center=None if state.center is None else state.center.number,
            successes=state.successes,
            failures=state.failures,
            restarts=state.restarts,
        )
        return record

    # ------------------------------------------------------------------ hooks
    def prepare(self, context: ProposalContext) -> None:
        state = self.state(context)
        self._record(context, state)
        if state.center is None:
            return
        space = context.search_space
        parts = []
        for name, (lo, hi) in self.box(context, state).items():
            parts.append(
                f"{name} in [{format_value(denormalize(lo, space[name]))}, "
                f"{format_value(denormalize(hi, space[name]))}]"
            )
        text = (
            f"Trust region (radius {state.radius:.3g} of each range) around the best trial "
            f"{state.center.number} {format_params(state.center.params, list(space))}"
        )
        context.notes.append(text + (": stay within " + ", ".join(parts) if parts else "") + ".")

    def review(self, candidate: dict[str, Any], context: ProposalContext) -> Review:
        state = self.state(context)
        record = self._record(context, state)
        if state.center is None:
            return Review.accept()
        space = context.search_space
        box = self.box(context, state)
        u = context.normalize(candidate)
        projected = dict(candidate)
        moved = []
        for i, (name, dist) in enumerate(space.items()):
            if name not in box:
                continue
            lo, hi = box[name]
            if lo - 1e-12 <= u[i] <= hi + 1e-12:
                continue
            # On a grid, the box holds the grid values nearest its edges (the note says so).
            value = denormalize(min(max(u[i], lo), hi), dist)
            if value != candidate[name]:
                projected[name] = value
                moved.append(name)
        if not moved:
            return Review.accept()
        incumbent = state.center.params
        for name, dist in space.items():
            if isinstance(dist, CategoricalDistribution) and projected[name] != incumbent[name]:
                if context.rng.random() < self.categorical_probability:
                    projected[name] = incumbent[name]
        record["projected"] += 1
        return Review.replace(
            projected,
            reason=f"projected {', '.join(moved)} into the trust region of radius "
            f"{state.radius:.3g} around trial {state.center.number}",
        )
