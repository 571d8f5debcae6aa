"""Tabu search: keep proposals away from configurations already evaluated."""

from __future__ import annotations

from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial

from bilevel_optuna._checks import check_int
from bilevel_optuna.samplers._prompt import format_params
from bilevel_optuna.samplers.mechanisms._base import Mechanism
from bilevel_optuna.samplers.mechanisms._base import ProposalContext
from bilevel_optuna.samplers.mechanisms._base import Review
from bilevel_optuna.samplers.mechanisms._geometry import decode
from bilevel_optuna.samplers.mechanisms._geometry import distance_matrix
from bilevel_optuna.samplers.mechanisms._geometry import encode
from bilevel_optuna.samplers.mechanisms._geometry import normalize

_ON_REJECT = ("move", "ask")

#: Points tried per step size when moving a candidate off the tabu list.
N_MOVES = 48
#: Step sizes tried in turn, in multiples of the radius.
MOVE_SCALES = (1.5, 3.0, 6.0)


class TabuMechanism(Mechanism):
    """Keep candidates out of ``radius`` of a recently evaluated configuration.

    A small model asked for a new configuration tends to copy one it was shown. Tabu search
    (Glover, "Tabu Search - Part I", ORSA Journal on Computing 1(3), 1989) forbids moves back to
    recently visited solutions; here the visited solutions are the finished trials (complete,
    pruned or failed), closeness is :func:`~bilevel_optuna.samplers.distance` (normalized per
    range, log where the parameter is, categoricals equal or not).

    What happens to a candidate that is too close depends on ``on_reject``:

    - ``"move"`` (the default) replaces it with the nearest configuration outside every tabu
      ball that a seeded random search around it finds (``N_MOVES`` points at each of the
      step sizes ``MOVE_SCALES`` times the radius, on the parameters' grids): no further
      model call, so a study costs what the bare model costs. The trial's source is then
      ``"mechanism"``. Where no free point is found, the candidate is rejected as with
      ``"ask"``.
    - ``"ask"`` rejects it: the candidate goes back to the model with the trial it is too close
      to and the distance, so the next answer can move away; when every attempt is rejected,
      the sampler falls back to its ``base_sampler``. Each rejection costs a model call.

    The tabu list is rebuilt from the stored trials on every call.

    Args:
        radius: Candidates at a distance ``<= radius`` from a tabu configuration are rejected.
            ``0`` rejects exact repeats only.
        tenure: Only the last ``tenure`` finished trials (by number) are tabu; ``0`` makes every
            finished trial tabu.
        on_reject: ``"move"`` or ``"ask"``, see above.

    Example:

        .. code-block:: python

            sampler = LLMSampler(mechanisms=[("tabu", {"radius": 0.05, "tenure": 20})])
    """

    name = "tabu"
    version = "2"
    trusted = True

    def __init__(
        self, *, radius: float = 0.05, tenure: int = 0, on_reject: str = "move"
    ) -> None:
        if not 0.0 <= radius <= 1.0:
            raise ValueError(f"radius must be between 0 and 1 but got {radius}.")
        if on_reject not in _ON_REJECT:
            raise ValueError(f"on_reject must be one of {_ON_REJECT} but got {on_reject!r}.")
        self.radius = float(radius)
        self.tenure = check_int("tenure", tenure)
        self.on_reject = on_reject

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:
        return {
            "radius": FloatDistribution(0.0, 0.3),
            "tenure": IntDistribution(0, 50),
            "on_reject": CategoricalDistribution(list(_ON_REJECT)),
        }

    def tabu_trials(self, context: ProposalContext) -> list[FrozenTrial]:
        """The trials whose configurations are tabu for this proposal."""
        finished = context.finished_trials
        return finished[-self.tenure :] if self.tenure > 0 else finished

    def _tabu_points(self, context: ProposalContext) -> np.ndarray:
        points = context.encoded_finished
        return points[-self.tenure :] if self.tenure > 0 else points

    def move(self, u: np.ndarray, context: ProposalContext) -> dict[str, Any] | None:
        """The configuration nearest ``u`` (encoded) that lies outside every tabu ball, among
        seeded random steps around it; ``None`` if none is free."""
        space = context.search_space
        points = self._tabu_points(context)
        for scale in MOVE_SCALES:
            step = scale * max(self.radius, 0.02)
            pool = np.clip(u + context.rng.normal(0.0, step, (N_MOVES, len(u))), 0.0, 1.0)
            configs = [decode(row, space) for row in pool]
            encoded = encode(configs, space)
            free = distance_matrix(encoded, points, space).min(axis=1) > self.radius
            if free.any():
                shift = distance_matrix(encoded, u[None, :], space)[:, 0]
                shift[~free] = np.inf
                return configs[int(np.argmin(shift))]
        return None

    def review(self, candidate: dict[str, Any], context: ProposalContext) -> Review:
        tabu = self.tabu_trials(context)
        record = context.record.setdefault(self.name, {"rejected": 0, "moved": 0})
        record["tabu_size"] = len(tabu)
        if not tabu:
            return Review.accept()
        space = context.search_space
        u = normalize(candidate, space)
        distances = distance_matrix(u[None, :], self._tabu_points(context), space)[0]
        nearest = int(np.argmin(distances))
        d = float(distances[nearest])
        if d > self.radius:
            return Review.accept()
        close = tabu[nearest]
        if self.on_reject == "move":
            moved = self.move(u, context)
            if moved is not None:
                record["moved"] += 1
                return Review.replace(
                    moved,
                    reason=f"moved off trial {close.number} (distance {d:.3g} <= tabu radius "
                    f"{self.radius:.3g})",
                )
        record["rejected"] += 1
        what = "repeats" if d == 0.0 else "is too close to"
        return Review.reject(
            f"it {what} trial {close.number} {format_params(close.params, list(space))} "
            f"(distance {d:.3g} <= tabu radius {self.radius:.3g}); propose a configuration "
            "farther from every evaluated one"
        )
