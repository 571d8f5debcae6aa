"""Anytime curves: best so far by trial number, per-arm median with a quantile band, and AUC."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import ArrayLike


@dataclass(frozen=True)
class AnytimeCurve:
    """One arm's anytime curve across its studies.

    Attributes:
        trials: Trial budget 1..T (the x axis).
        median: Median over studies of the best-so-far value after that many trials.
        low: Lower quantile (``quantiles[0]``) of the same.
        high: Upper quantile.
        n: Studies with a value at that budget (a study has none before its first complete
            trial, or beyond its last trial).
        quantiles: The band's quantiles, ``(0.25, 0.75)`` by default.
    """

    trials: np.ndarray
    median: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: np.ndarray
    quantiles: tuple[float, float]


def best_so_far(
    values: ArrayLike, *, direction: str = "minimize", true_values: ArrayLike | None = None
) -> np.ndarray:
    """Best value found after each trial; NaN marks trials that were not complete.

    Before the first complete trial the curve is NaN; a failed or pruned trial repeats the
    previous best. With ``true_values`` (noise-free values stored beside noisy objective
    values), the curve follows the incumbent chosen on the observed values and reports *its*
    true value: what a user of the optimizer would really get.

    Example:
        >>> from bilevel_optuna.stats import best_so_far
        >>> best_so_far([3.0, float("nan"), 1.0, 2.0]).tolist()
        [3.0, 3.0, 1.0, 1.0]
    """
    if direction not in ("minimize", "maximize"):
        raise ValueError(
            f"`direction` must be one of {{'minimize', 'maximize'}} but got {direction!r}."
        )
    x = np.asarray(values, dtype=float).ravel()
    sign = 1.0 if direction == "minimize" else -1.0
    if true_values is None:
        return sign * np.fmin.accumulate(sign * x) if x.size else x.copy()
    t = np.asarray(true_values, dtype=float).ravel()
    if t.shape != x.shape:
        raise ValueError(f"true_values has {t.size} entries for {x.size} values.")
    out = np.full_like(x, np.nan)
    best, incumbent = np.inf, np.nan
    for i, v in enumerate(sign * x):
        if not np.isnan(v) and v < best:
            best = v
            # No stored true value for this trial: fall back to its observed value.
            incumbent = t[i] if not np.isnan(t[i]) else x[i]
        out[i] = incumbent
    return out


def normalized_auc(curve: ArrayLike) -> float:
    """Area under a best-so-far curve divided by its length: the curve's mean over trials.

    In the units of the objective (or of regret), so arms with different budgets stay
    comparable. Trials before the first complete one (NaN) are left out; an all-NaN curve gives
    NaN.
    """
    c = np.asarray(curve, dtype=float).ravel()
    c = c[~np.isnan(c)]
    return float(np.mean(c)) if c.size else float("nan")


def anytime_curve(
    curves: Sequence[ArrayLike], *, quantiles: tuple[float, float] = (0.25, 0.75)
) -> AnytimeCurve:
    """Median and quantile band of several best-so-far curves, trial by trial.

    Curves of unequal length are padded with NaN: beyond its last trial a study no longer
    counts (``n`` drops) rather than being carried forward.
    """
    low_q, high_q = quantiles
    if not 0.0 <= low_q < high_q <= 1.0:
        raise ValueError(f"quantiles must be increasing within [0, 1] but got {quantiles}.")
    arrays = [np.asarray(c, dtype=float).ravel() for c in curves]
    length = max((a.size for a in arrays), default=0)
    table = np.full((len(arrays), length), np.nan)
    for i, a in enumerate(arrays):
        table[i, : a.size] = a
    n = np.sum(~np.isnan(table), axis=0)
    median = np.full(length, np.nan)
    low = np.full(length, np.nan)
    high = np.full(length, np.nan)
    has = n > 0
    if np.any(has):
        q = np.nanquantile(table[:, has], [low_q, 0.5, high_q], axis=0)
        low[has], median[has], high[has] = q[0], q[1], q[2]
    return AnytimeCurve(
        trials=np.arange(1, length + 1),
        median=median,
        low=low,
        high=high,
        n=n,
        quantiles=(low_q, high_q),
    )
