"""The noise floor: how much one configuration's value moves when evaluated again.

Rule used by :func:`compare`: a difference between two arms' medians smaller than
``noise_factor * sd`` (``noise_factor = 2`` by default, about the half-width of a 95% interval
of one noisy evaluation) is labelled "inside noise floor": it may be real, but it is no larger
than what re-running the same configuration produces, so it is not claimed as an improvement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.stats

from bilevel_optuna.exceptions import DegenerateDataWarning
from bilevel_optuna._warnings import warn as _warn

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


@dataclass(frozen=True)
class NoiseFloorResult:
    """Spread of repeated evaluations of one configuration.

    Attributes:
        statistic: The sample standard deviation (``ddof=1``): the noise floor.
        ci_low: Lower end of its chi-square confidence interval (assumes normal noise).
        ci_high: Upper end.
        n: Number of evaluations.
        mean: Their mean.
        noise_factor: Multiple of the standard deviation below which a difference is "inside".
        source: Where the evaluations came from (a study name, or "values").
    """

    statistic: float
    ci_low: float
    ci_high: float
    n: int
    mean: float
    noise_factor: float
    source: str = "values"

    @property
    def sd(self) -> float:
        return self.statistic

    @property
    def threshold(self) -> float:
        """Differences smaller than this are inside the noise floor."""
        return self.noise_factor * self.statistic

    def contains(self, difference: float) -> bool:
        """True when ``|difference|`` is smaller than :attr:`threshold`."""
        return bool(abs(difference) < self.threshold)


def noise_floor(
    values: ArrayLike,
    *,
    noise_factor: float = 2.0,
    confidence_level: float = 0.95,
    source: str = "values",
) -> NoiseFloorResult:
    """Estimate the noise floor from repeated evaluations of one configuration.

    Args:
        values: The repeated evaluations (NaN values are dropped).
        noise_factor: Multiple of the standard deviation used by :meth:`NoiseFloorResult.contains`.
        confidence_level: Level of the interval of the standard deviation.
        source: A label for reports.

    Example:
        >>> from bilevel_optuna.stats import noise_floor
        >>> round(noise_floor([1.0, 1.2, 0.9, 1.1]).sd, 4)
        0.1291
    """
    if not noise_factor > 0:
        raise ValueError(f"noise_factor must be positive but got {noise_factor}.")
    if not 0.0 < confidence_level < 1.0:
        raise ValueError(
            f"confidence_level must be between 0 and 1 (exclusive) but got {confidence_level}."
        )
    x = np.asarray(values, dtype=float).ravel()
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n < 2:
        _warn(
            f"A noise floor needs at least 2 repeated evaluations but got {n}; it is NaN.",
            DegenerateDataWarning,
        )
        nan = float("nan")
        return NoiseFloorResult(
            nan, nan, nan, n, float(np.mean(x)) if n else nan, noise_factor, source
        )
    sd = float(np.std(x, ddof=1))
    tail = (1.0 - confidence_level) / 2.0
    dof = n - 1
    low = float(np.sqrt(dof * sd**2 / scipy.stats.chi2.ppf(1.0 - tail, dof)))
    high = float(np.sqrt(dof * sd**2 / scipy.stats.chi2.ppf(tail, dof)))
    return NoiseFloorResult(sd, low, high, n, float(np.mean(x)), noise_factor, source)
