"""Per-arm summaries: n, median, IQR, and the mean with a bootstrap confidence interval."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.stats

from bilevel_optuna.exceptions import DegenerateDataWarning
from bilevel_optuna._warnings import warn as _warn

if TYPE_CHECKING:
    from collections.abc import Sequence


@dataclass(frozen=True)
class Summary:
    """Location and spread of one arm's values.

    Attributes:
        n: Number of values (NaN values are left out).
        median: Median.
        q25: 25th percentile (linear interpolation, numpy's default).
        q75: 75th percentile.
        iqr: ``q75 - q25``.
        mean: Arithmetic mean.
        mean_ci_low: Lower end of the bootstrap confidence interval of the mean.
        mean_ci_high: Upper end.
        confidence_level: Level of that interval.
    """

    n: int
    median: float
    q25: float
    q75: float
    iqr: float
    mean: float
    mean_ci_low: float
    mean_ci_high: float
    confidence_level: float


def _check_confidence(confidence_level: float, n_resamples: int) -> None:
    if not 0.0 < confidence_level < 1.0:
        raise ValueError(
            f"confidence_level must be between 0 and 1 (exclusive) but got {confidence_level}."
        )
    if n_resamples < 100:
        raise ValueError(f"n_resamples must be at least 100 but got {n_resamples}.")


def summarize(
    values: Sequence[float] | np.ndarray,
    *,
    confidence_level: float = 0.95,
    n_resamples: int = 2000,
    seed: int | None = 0,
) -> Summary:
    """Summarize one arm's values.

    The confidence interval of the mean is scipy's bias-corrected and accelerated (BCa)
    bootstrap. With constant values the interval is that constant; with fewer than 3 values it is
    NaN (a bootstrap of 1 or 2 values says nothing), and a :class:`DegenerateDataWarning` says so.

    Args:
        values: The arm's values; NaN values are dropped.
        confidence_level: Level of the interval of the mean.
        n_resamples: Bootstrap resamples.
        seed: Seed of the bootstrap, so a report is reproducible.

    Returns:
        A :class:`Summary`.

    Example:
        >>> from bilevel_optuna.stats import summarize
        >>> summarize([1.0, 2.0, 3.0, 4.0]).median
        2.5
    """
    _check_confidence(confidence_level, n_resamples)
    x = np.asarray(values, dtype=float).ravel()
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        _warn("summarize() got no values; every field is NaN.", DegenerateDataWarning)
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan, nan, nan, nan, confidence_level)
    q25, median, q75 = (float(q) for q in np.quantile(x, [0.25, 0.5, 0.75]))
    mean = float(np.mean(x))
    if np.all(x == x[0]):
        low = high = mean
    elif n < 3:
        _warn(
            f"The bootstrap interval of the mean needs at least 3 values but got {n}; it is NaN.",
            DegenerateDataWarning,
        )
        low = high = float("nan")
    else:
        res = scipy.stats.bootstrap(
            (x,),
            np.mean,
            confidence_level=confidence_level,
            n_resamples=n_resamples,
            method="BCa",
            vectorized=True,
            rng=np.random.default_rng(seed),
        )
        low = float(res.confidence_interval.low)
        high = float(res.confidence_interval.high)
    return Summary(
        n=n,
        median=median,
        q25=q25,
        q75=q75,
        iqr=q75 - q25,
        mean=mean,
        mean_ci_low=low,
        mean_ci_high=high,
        confidence_level=confidence_level,
    )
