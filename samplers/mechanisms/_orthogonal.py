"""Orthogonal exploration: force variation along the least-explored parameters."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution

from bilevel_optuna._checks import check_int
from bilevel_optuna.samplers._prompt import format_value
from bilevel_optuna.samplers.mechanisms._base import Mechanism
from bilevel_optuna.samplers.mechanisms._base import ProposalContext
from bilevel_optuna.samplers.mechanisms._base import Review
from bilevel_optuna.samplers.mechanisms._geometry import denormalize

#: Discrete parameters with at most this many values are binned exactly by enumeration.
_MAX_ENUMERATED = 10_000
_ON_MISS = ("replace", "reject")


@dataclasses.dataclass
class ParameterBins:
    """How one parameter's range is cut into bins.

    Numeric parameters are cut into ``n`` equal bins of the normalized range (log where the
    parameter is); a categorical has one bin per choice. ``values`` lists the grid values of
    each bin for discrete parameters (``None`` for continuous ones); a bin that holds no grid
    value is unreachable and never a target.
    """

    name: str
    dist: BaseDistribution
    n: int
    values: list[list[Any]] | None

    @classmethod
    def build(cls, name: str, dist: BaseDistribution, n_bins: int) -> "ParameterBins":
        if isinstance(dist, CategoricalDistribution):
            return cls(name, dist, len(dist.choices), [[c] for c in dist.choices])
        grid = _grid(dist)
        n = n_bins if grid is None else max(1, min(n_bins, len(grid)))
        bins = cls(name, dist, n, None)
        if grid is not None:
            values: list[list[Any]] = [[] for _ in range(n)]
            for v, b in zip(grid, bins._bins_of_numbers(np.asarray(grid, dtype=float))):
                values[int(b)].append(v)
            bins.values = values
        return bins

    def bin_of(self, value: Any) -> int:
        if isinstance(self.dist, CategoricalDistribution):
            return self.dist.choices.index(value)
        return int(self._bins_of_numbers(np.array([float(value)]))[0])

    def _bins_of_numbers(self, x: np.ndarray) -> np.ndarray:
        """Bins of numeric values, vectorized; the same as :func:`normalize` then cutting."""
        dist = self.dist
        assert isinstance(dist, (FloatDistribution, IntDistribution))
        low, high = float(dist.low), float(dist.high)
        if dist.log:
            x, low, high = np.log(x), math.log(low), math.log(high)
        u = np.zeros_like(x) if high == low else (x - low) / (high - low)
        return np.clip(np.floor(u * self.n), 0, self.n - 1).astype(int)

    def reachable(self) -> list[int]:
        if self.values is None:
            return list(range(self.n))
        return [b for b, vs in enumerate(self.values) if vs]

    def describe(self, b: int) -> str:
        """The bin as the model reads it: a choice, or a closed range of values."""
        if isinstance(self.dist, CategoricalDistribution):
            return format_value(self.dist.choices[b])
        if self.values is not None:
            lo, hi = self.values[b][0], self.values[b][-1]
        else:
            lo, hi = denormalize(b / self.n, self.dist), denormalize((b + 1) / self.n, self.dist)
        return f"[{format_value(lo)}, {format_value(hi)}]"

    def sample(self, b: int, rng: np.random.Generator) -> Any:
        """A value drawn uniformly from bin ``b``."""
        if self.values is not None:
            return self.values[b][int(rng.integers(len(self.values[b])))]
        # Stay strictly inside the bin so that rounding cannot move the value out of it.
        return denormalize((b + 0.05 + 0.9 * rng.random()) / self.n, self.dist)


def _grid(dist: BaseDistribution) -> list[Any] | None:
    """Every value of a discrete numeric parameter, or ``None`` if continuous or too many."""
    if isinstance(dist, IntDistribution):
        if (dist.high - dist.low) // dist.step + 1 > _MAX_ENUMERATED:
            return None
        return list(range(dist.low, dist.high + 1, dist.step))
    assert isinstance(dist, FloatDistribution)
    if dist.step is None:
        return None
    k = int(math.floor((dist.high - dist.low) / dist.step + 1e-9)) + 1
    if k > _MAX_ENUMERATED:
        return None
    return [float(min(dist.low + i * dist.step, dist.high)) for i in range(k)]


def coverage(bins: ParameterBins, values: Sequence[Any]) -> np.ndarray:
    """Trials per bin."""
    counts = np.zeros(bins.n, dtype=int)
    for v in values:
        counts[bins.bin_of(v)] += 1
    return counts


class OrthogonalMechanism(Mechanism):
    """Force each proposal to vary the least-explored parameters into their emptiest bins.

    A model reading its history tends to vary the same parameter or two and leave the others
    where the best trial put them. Following the "orthogonal exploration" mechanism that the
    Level-2 loop of Bilevel Autoresearch generated, and the stratification
    idea of Latin hypercube sampling (McKay, Beckman and Conover, Technometrics 21(2), 1979),
    this mechanism measures how each parameter has been explored: its range is cut into
    ``n_bins`` bins (one per choice for a categorical) and the completed trials are counted per
    bin. The ``n_params`` parameters with the lowest share of covered bins (then the lowest
    entropy of the counts) are the targets and their least-visited bins the sub-ranges to
    explore. ``prepare`` names them in a note; ``review`` checks that a candidate puts each
    target in one of those bins, and otherwise replaces that value by one drawn from the
    nearest such bin (``on_miss="replace"``), or rejects the candidate with the sub-range to
    use (``on_miss="reject"``). A parameter already spread evenly over its bins is never a
    target. Coverage is recomputed from the stored trials on every call.

    Args:
        n_bins: Bins per numeric parameter.
        n_params: How many of the least-explored parameters are forced per proposal.
        on_miss: ``"replace"`` or ``"reject"`` a candidate that leaves a target in an
            explored bin.
        probability: Share of proposals the mechanism acts on (drawn with the trial's seeded
            generator), so the model is also left free to refine.
    """

    name = "orthogonal"
    version = "1"
    trusted = True

    def __init__(
        self,
        *,
        n_bins: int = 5,
        n_params: int = 1,
        on_miss: str = "replace",
        probability: float = 1.0,
    ) -> None:
        check_int("n_bins", n_bins, minimum=2)
        check_int("n_params", n_params, minimum=1)
        if on_miss not in _ON_MISS:
            raise ValueError(f"on_miss must be one of {_ON_MISS} but got {on_miss!r}.")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be between 0 and 1 but got {probability}.")
        self.n_bins = int(n_bins)
        self.n_params = int(n_params)
        self.on_miss = on_miss
        self.probability = float(probability)

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:
        return {
            "n_bins": IntDistribution(2, 10),
            "n_params": IntDistribution(1, 3),
            "on_miss": CategoricalDistribution(list(_ON_MISS)),
            "probability": FloatDistribution(0.2, 1.0),
        }

    def targets(self, context: ProposalContext) -> dict[str, tuple[ParameterBins, list[int]]]:
        """The least-explored parameters and, for each, its least-visited reachable bins."""
        complete = context.complete_trials
        if not complete:
            return {}
        scored = []
        for name, dist in context.search_space.items():
            bins = ParameterBins.build(name, dist, self.n_bins)
            reachable = bins.reachable()
            if len(reachable) < 2:
                continue
            counts = coverage(bins, [t.params[name] for t in complete])[reachable]
            if counts.min() == counts.max():
                continue  # spread evenly: nothing to force
            share = float(np.mean(counts > 0))
            p = counts / counts.sum()
            entropy = float(-np.sum(p[p > 0] * np.log(p[p > 0])) / math.log(len(counts)))
            emptiest = [b for b, c in zip(reachable, counts) if c == counts.min()]
            scored.append((share, entropy, float(context.rng.random()), name, bins, emptiest))
        scored.sort(key=lambda s: s[:3])
        return {s[3]: (s[4], s[5]) for s in scored[: self.n_params]}

    def _targets_of(self, context: ProposalContext) -> dict[str, tuple[ParameterBins, list[int]]]:
        record = context.record.get(self.name, {})
        if not record.get("active"):
            return {}
        return {
            name: (ParameterBins.build(name, context.search_space[name], self.n_bins), list(bs))
            for name, bs in record.get("targets", {}).items()
        }

    def prepare(self, context: ProposalContext) -> None:
        record = context.record.setdefault(self.name, {"replaced": 0, "rejected": 0})
        record["active"] = bool(context.rng.random() < self.probability)
        if not record["active"]:
            return
        targets = self.targets(context)
        record["targets"] = {name: [int(b) for b in bs] for name, (_, bs) in targets.items()}
        if not targets:
            return
        parts = []
        for name, (bins, emptiest) in targets.items():
            kind = "choices" if isinstance(bins.dist, CategoricalDistribution) else "sub-ranges"
            options = " or ".join(bins.describe(b) for b in emptiest)
            parts.append(f"{name} must be {options} (its least-tried {kind})")
        context.notes.append(
            "Explore the least-explored parameter"
            + ("s" if len(parts) > 1 else "")
            + ": "
            + "; ".join(parts)
            + "."
        )

    def review(self, candidate: dict[str, Any], context: ProposalContext) -> Review:
        targets = self._targets_of(context)
        missed = {
            name: (bins, emptiest)
            for name, (bins, emptiest) in targets.items()
            if bins.bin_of(candidate[name]) not in emptiest
        }
        if not missed:
            return Review.accept()
        record = context.record[self.name]
        if self.on_miss == "reject":
            record["rejected"] += 1
            return Review.reject(
                "; ".join(
                    f"{name}={format_value(candidate[name])} lies in an explored "
                    f"sub-range; {name} must be " + " or ".join(bins.describe(b) for b in emptiest)
                    for name, (bins, emptiest) in missed.items()
                )
            )
        replaced = dict(candidate)
        for name, (bins, emptiest) in missed.items():
            nearest = emptiest
            if not isinstance(bins.dist, CategoricalDistribution):
                current = bins.bin_of(candidate[name])
                gaps = [abs(b - current) for b in emptiest]
                nearest = [b for b, g in zip(emptiest, gaps) if g == min(gaps)]
            b = nearest[int(context.rng.integers(len(nearest)))]
            replaced[name] = bins.sample(b, context.rng)
        record["replaced"] += 1
        return Review.replace(
            replaced, reason="moved " + ", ".join(missed) + " into least-explored bins"
        )


# The name before 0.2 (deprecated with a warning in bilevel_optuna.samplers).
OrthogonalExplorationMechanism = OrthogonalMechanism
