"""Vargha-Delaney A12 effect size with a bootstrap confidence interval."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.stats

from bilevel_optuna.stats._summary import _check_confidence
from bilevel_optuna.exceptions import DegenerateDataWarning
from bilevel_optuna._warnings import warn as _warn

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

# Vargha & Delaney (2000), thresholds on |A12 - 0.5|: 0.56 / 0.64 / 0.71 for A12 itself.
_MAGNITUDES = ((0.06, "negligible"), (0.14, "small"), (0.21, "medium"))
_DIRECTIONS = ("minimize", "maximize")


@dataclass(frozen=True)
class A12Result:
    """Vargha-Delaney A12: the probability that a value of the first arm is better.

    ``A12 = P(a better than b) + 0.5 * P(a equal to b)`` over all pairs (one value of each arm),
    where "better" follows ``direction``. 0.5 means no effect; 1 means every value of ``a``
    beats every value of ``b``.

    Attributes:
        statistic: A12.
        ci_low: Lower end of the percentile bootstrap interval.
        ci_high: Upper end.
        magnitude: ``"negligible"``, ``"small"``, ``"medium"`` or ``"large"`` (Vargha and
            Delaney's thresholds 0.56, 0.64, 0.71 on ``max(A12, 1 - A12)``).
        confidence_level: Level of the interval.
    """

    statistic: float
    ci_low: float
    ci_high: float
    magnitude: str
    confidence_level: float


def _magnitude(a12: float) -> str:
    if np.isnan(a12):
        return "undefined"
    distance = abs(a12 - 0.5)
    for bound, name in _MAGNITUDES:
        if distance < bound:
            return name
    return "large"


def _a12_greater(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(x > y) + 0.5 P(x = y) along the last axis, from ranks (U / (n1 n2)); vectorized."""
    n1, n2 = x.shape[-1], y.shape[-1]
    ranks = scipy.stats.rankdata(np.concatenate([x, y], axis=-1), axis=-1)
    u1 = ranks[..., :n1].sum(axis=-1) - n1 * (n1 + 1) / 2.0
    return np.asarray(u1 / (n1 * n2))


def vargha_delaney_a12(
    a: ArrayLike,
    b: ArrayLike,
    *,
    direction: str = "minimize",
    paired: bool = False,
    confidence_level: float = 0.95,
    n_resamples: int = 2000,
    seed: int | None = 0,
) -> A12Result:
    """Vargha-Delaney A12 of ``a`` over ``b`` with a percentile bootstrap interval.

    Args:
        a: Values of the first arm (NaN values are dropped; with ``paired``, NaN pairs).
        b: Values of the second arm.
        direction: ``"minimize"`` (lower is better) or ``"maximize"``.
        paired: Resample pairs together (seed-paired studies) instead of each arm on its own.
            The statistic itself is the same either way.
        confidence_level: Level of the interval.
        n_resamples: Bootstrap resamples.
        seed: Seed of the bootstrap.

    Example:
        >>> from bilevel_optuna.stats import vargha_delaney_a12
        >>> vargha_delaney_a12([1, 2, 3], [2, 3, 4]).statistic  # 6 of 9 pairs better, 2 ties
        0.7777777777777778
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"`direction` must be one of {set(_DIRECTIONS)} but got {direction!r}.")
    _check_confidence(confidence_level, n_resamples)
    x = np.asarray(a, dtype=float).ravel()
    y = np.asarray(b, dtype=float).ravel()
    if paired:
        if x.shape != y.shape:
            raise ValueError(
                f"Paired samples must have equal lengths but got {x.size} and {y.size}."
            )
        keep = ~(np.isnan(x) | np.isnan(y))
        x, y = x[keep], y[keep]
    else:
        x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    if x.size == 0 or y.size == 0:
        _warn("vargha_delaney_a12: an arm has no values; A12 is NaN.", DegenerateDataWarning)
        nan = float("nan")
        return A12Result(nan, nan, nan, "undefined", confidence_level)
    if direction == "minimize":  # "better" is "smaller": flip the sign, keep one formula
        x, y = -x, -y
    statistic = float(_a12_greater(x, y))
    rng = np.random.default_rng(seed)
    if paired:
        index = rng.integers(0, x.size, size=(n_resamples, x.size))
        boot = _a12_greater(x[index], y[index])
    else:
        boot = _a12_greater(
            x[rng.integers(0, x.size, size=(n_resamples, x.size))],
            y[rng.integers(0, y.size, size=(n_resamples, y.size))],
        )
    tail = (1.0 - confidence_level) / 2.0
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    return A12Result(statistic, float(low), float(high), _magnitude(statistic), confidence_level)
