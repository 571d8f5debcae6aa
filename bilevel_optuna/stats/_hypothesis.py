"""Significance tests between arms, with the "no power" rule and Holm's correction.

Each test wraps its scipy.stats routine and adds what a report needs: the smallest p-value the
test can give at this sample size. When that smallest p-value is above ``alpha``, no outcome of
the data could be significant, so the p-value is returned as NaN, ``no_power`` is True and a
:class:`NoPowerWarning` is issued: a report then says "no power" instead of printing a p-value
as if it meant something. The statistic is still computed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.stats

from bilevel_optuna.exceptions import DegenerateDataWarning
from bilevel_optuna.exceptions import NoPowerWarning
from bilevel_optuna._warnings import warn as _warn

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import ArrayLike

_NAN = float("nan")


@dataclass(frozen=True)
class SignificanceResult:
    """Outcome of one significance test.

    Attributes:
        statistic: The test statistic (Wilcoxon: the smaller of the signed-rank sums; Mann-Whitney:
            U of the first sample; Friedman and Kruskal-Wallis: the chi-square statistic). NaN
            for degenerate data.
        pvalue: Two-sided p-value; NaN for degenerate data or when the test has no power.
        test: ``"wilcoxon"``, ``"mannwhitneyu"``, ``"friedman"`` or ``"kruskal"``.
        n: Sample size the test used: pairs with a nonzero difference (Wilcoxon), total values
            (Mann-Whitney, Kruskal-Wallis), blocks (Friedman).
        min_pvalue: The smallest p-value the test can give at this sample size.
        no_power: True when ``min_pvalue > alpha``.
        degenerate: True when the statistic is undefined (no data, all values equal).
        note: One line saying why the p-value is NaN, or empty.
    """

    statistic: float
    pvalue: float
    test: str
    n: int
    min_pvalue: float
    no_power: bool
    degenerate: bool
    note: str


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1 (exclusive) but got {alpha}.")


def _degenerate(test: str, n: int, note: str) -> SignificanceResult:
    _warn(f"{test}: {note}; statistic and p-value are NaN.", DegenerateDataWarning)
    return SignificanceResult(_NAN, _NAN, test, n, _NAN, False, True, note)


def _finish(
    test: str, statistic: float, pvalue: float, n: int, min_p: float, alpha: float, what: str
) -> SignificanceResult:
    if min_p > alpha:
        note = (
            f"no power: with {what} the smallest attainable p-value is {min_p:.3g} > "
            f"alpha = {alpha:g}"
        )
        _warn(f"{test}: {note}; the p-value is NaN.", NoPowerWarning)
        return SignificanceResult(float(statistic), _NAN, test, n, min_p, True, False, note)
    return SignificanceResult(float(statistic), float(pvalue), test, n, min_p, False, False, "")


def wilcoxon_min_pvalue(n: int) -> float:
    """Smallest two-sided p-value of the exact Wilcoxon signed-rank test on ``n`` pairs.

    All ``n`` differences with one sign is the most extreme outcome, with probability
    ``2**-n`` on each side: ``min(1, 2 / 2**n)``. (Ties among the differences can only make it
    larger.)
    """
    return min(1.0, 2.0 / 2.0**n) if n > 0 else 1.0


def mannwhitneyu_min_pvalue(n1: int, n2: int) -> float:
    """Smallest two-sided p-value of the exact Mann-Whitney U test: ``2 / C(n1 + n2, n1)``."""
    if n1 == 0 or n2 == 0:
        return 1.0
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))


def friedman_min_pvalue(n_blocks: int, k: int) -> float:
    """Smallest p-value of the Friedman test (chi-square approximation, as scipy computes it).

    The statistic is largest, ``n_blocks * (k - 1)``, when every block ranks the arms alike.
    """
    return float(scipy.stats.chi2.sf(n_blocks * (k - 1), k - 1))


def kruskal_min_pvalue(sizes: Sequence[int]) -> float:
    """Smallest p-value of the Kruskal-Wallis test (chi-square approximation, as scipy's).

    H is largest when the groups occupy consecutive blocks of ranks; the order of the blocks
    matters for unequal sizes, so every order is tried (up to 7 groups; beyond, sizes sorted).
    """
    sizes = [int(s) for s in sizes]
    total = sum(sizes)
    orders = itertools.permutations(sizes) if len(sizes) <= 7 else [sorted(sizes)]
    best = 0.0
    for order in orders:
        start, acc = 0, 0.0
        for size in order:
            rank_sum = size * (2 * start + size + 1) / 2.0
            acc += rank_sum**2 / size
            start += size
        best = max(best, 12.0 / (total * (total + 1)) * acc - 3.0 * (total + 1))
    return float(scipy.stats.chi2.sf(best, len(sizes) - 1))


def _clean_pairs(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=float).ravel()
    y = np.asarray(b, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"Paired samples must have equal lengths but got {x.size} and {y.size}.")
    keep = ~(np.isnan(x) | np.isnan(y))
    return x[keep], y[keep]


def _clean(a: ArrayLike) -> np.ndarray:
    x = np.asarray(a, dtype=float).ravel()
    return np.asarray(x[~np.isnan(x)])


def paired_test(a: ArrayLike, b: ArrayLike, *, alpha: float = 0.05) -> SignificanceResult:
    """Two-sided Wilcoxon signed-rank test on paired samples (pairs with a NaN are dropped).

    Zero differences are dropped (scipy's ``zero_method="wilcox"``), so ``n`` counts the
    nonzero differences; the exact distribution is used up to 50 pairs without ties, the normal
    approximation otherwise (scipy's ``method="auto"``).

    Example:
        >>> from bilevel_optuna.stats import paired_test
        >>> paired_test([1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 6, 7.5]).pvalue
        0.03125
    """
    _check_alpha(alpha)
    x, y = _clean_pairs(a, b)
    d = x - y
    n = int(np.count_nonzero(d))
    if x.size == 0:
        return _degenerate("wilcoxon", 0, "no complete pairs")
    if n == 0:
        return _degenerate("wilcoxon", 0, "all paired differences are zero")
    res = scipy.stats.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
    min_p = wilcoxon_min_pvalue(n)
    return _finish(
        "wilcoxon", res.statistic, res.pvalue, n, min_p, alpha, f"{n} nonzero paired differences"
    )


def unpaired_test(a: ArrayLike, b: ArrayLike, *, alpha: float = 0.05) -> SignificanceResult:
    """Two-sided Mann-Whitney U test on independent samples (NaN values are dropped).

    scipy's ``method="auto"``: exact for samples under 8 without ties, normal approximation
    with tie and continuity corrections otherwise.

    Example:
        >>> from bilevel_optuna.stats import unpaired_test
        >>> round(unpaired_test([1, 2, 3, 4], [5, 6, 7, 8]).pvalue, 4)
        0.0286
    """
    _check_alpha(alpha)
    x, y = _clean(a), _clean(b)
    n = int(x.size + y.size)
    if x.size == 0 or y.size == 0:
        return _degenerate("mannwhitneyu", n, "one sample is empty")
    both = np.concatenate([x, y])
    if np.all(both == both[0]):
        return _degenerate("mannwhitneyu", n, "all values are equal")
    res = scipy.stats.mannwhitneyu(x, y, alternative="two-sided")
    min_p = mannwhitneyu_min_pvalue(x.size, y.size)
    return _finish(
        "mannwhitneyu",
        res.statistic,
        res.pvalue,
        n,
        min_p,
        alpha,
        f"samples of {x.size} and {y.size}",
    )


def friedman_test(blocks: ArrayLike, *, alpha: float = 0.05) -> SignificanceResult:
    """Friedman test on an ``(n_blocks, k)`` table: one row per seed, one column per arm.

    Rows with a NaN are dropped. Needs ``k >= 3`` arms; blocks whose arms all tie carry no
    information but stay in (scipy's tie correction handles them).
    """
    _check_alpha(alpha)
    table = np.asarray(blocks, dtype=float)
    if table.ndim != 2:
        raise ValueError(f"blocks must be a 2-D table (blocks x arms) but got {table.ndim} dims.")
    k = table.shape[1]
    if k < 3:
        raise ValueError(f"The Friedman test needs at least 3 arms but got {k}.")
    table = table[~np.isnan(table).any(axis=1)]
    n = int(table.shape[0])
    if n < 2:
        return _degenerate("friedman", n, f"{n} complete block(s); at least 2 are needed")
    if np.all(table == table[:, :1]):
        return _degenerate("friedman", n, "every block ties all arms")
    res = scipy.stats.friedmanchisquare(*table.T)
    min_p = friedman_min_pvalue(n, k)
    return _finish(
        "friedman", res.statistic, res.pvalue, n, min_p, alpha, f"{n} blocks of {k} arms"
    )


def kruskal_test(*samples: ArrayLike, alpha: float = 0.05) -> SignificanceResult:
    """Kruskal-Wallis H test across independent samples (the unpaired omnibus test)."""
    _check_alpha(alpha)
    if len(samples) < 2:
        raise ValueError(f"kruskal_test needs at least 2 samples but got {len(samples)}.")
    clean = [_clean(s) for s in samples]
    n = int(sum(s.size for s in clean))
    if any(s.size == 0 for s in clean):
        return _degenerate("kruskal", n, "a sample is empty")
    both = np.concatenate(clean)
    if np.all(both == both[0]):
        return _degenerate("kruskal", n, "all values are equal")
    res = scipy.stats.kruskal(*clean)
    min_p = kruskal_min_pvalue([s.size for s in clean])
    sizes = ", ".join(str(s.size) for s in clean)
    return _finish("kruskal", res.statistic, res.pvalue, n, min_p, alpha, f"samples of {sizes}")


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values.

    NaN entries (tests with no power or no data) are not tests: they stay NaN and do not count
    in the family size ``m``. Sorted ascending, the i-th p-value (from 0) is multiplied by
    ``m - i``; adjusted values are made non-decreasing and capped at 1.

    Example:
        >>> from bilevel_optuna.stats import holm
        >>> holm([0.01, 0.04, 0.03, 0.005]).tolist()
        [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(pvalues, dtype=float).ravel()
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = p[order] * (m - np.arange(m))
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


@dataclass(frozen=True)
class NemenyiResult:
    """Nemenyi post-hoc test after Friedman, and its critical difference (Demsar 2006).

    Attributes:
        statistic: The critical difference: two arms whose average ranks differ by more are
            significantly different at ``alpha``.
        pvalue: ``(k, k)`` matrix of pairwise p-values (1 on the diagonal).
        arms: Arm labels, in the order of the rows and of ``average_ranks``.
        average_ranks: Average rank of each arm across blocks; rank 1 is the best.
        n_blocks: Blocks (paired seeds) used.
        q_alpha: The studentized range quantile over sqrt(2), Demsar's ``q_alpha``.
        alpha: Significance level of the critical difference.
        licensed: Whether the Friedman test given to :func:`nemenyi_test` rejected at
            ``alpha``: Demsar (2006) licenses the post-hoc test only then. ``None`` when no
            Friedman result was given.
    """

    statistic: float
    pvalue: np.ndarray
    arms: list[str]
    average_ranks: np.ndarray
    n_blocks: int
    q_alpha: float
    alpha: float
    licensed: bool | None = None

    @property
    def critical_difference(self) -> float:
        return self.statistic


def nemenyi_test(
    blocks: ArrayLike,
    *,
    arms: Sequence[str] | None = None,
    alpha: float = 0.05,
    friedman: SignificanceResult | None = None,
) -> NemenyiResult:
    """Nemenyi test on an ``(n_blocks, k)`` table of values where lower is better.

    Ranks within each block (ties get average ranks), average over blocks, and compare the
    differences with ``CD = q_alpha * sqrt(k (k + 1) / (6 N))``, where ``q_alpha`` is the
    studentized range quantile for ``k`` groups and infinite degrees of freedom divided by
    sqrt(2). Pairwise p-values come from the same distribution.

    The post-hoc test is licensed only after Friedman's test on the same blocks rejects
    (Demsar 2006): pass that result as ``friedman`` and the result says whether it is
    (:attr:`NemenyiResult.licensed`).
    """
    _check_alpha(alpha)
    table = np.asarray(blocks, dtype=float)
    if table.ndim != 2:
        raise ValueError(f"blocks must be a 2-D table (blocks x arms) but got {table.ndim} dims.")
    table = table[~np.isnan(table).any(axis=1)]
    n, k = table.shape
    labels = list(arms) if arms is not None else [str(i) for i in range(k)]
    if len(labels) != k:
        raise ValueError(f"arms has {len(labels)} labels for {k} columns.")
    if k < 2:
        raise ValueError(f"The Nemenyi test needs at least 2 arms but got {k}.")
    q_alpha = float(scipy.stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))
    licensed = None if friedman is None else bool(friedman.pvalue < alpha)
    if n == 0:
        _warn("nemenyi: no complete blocks; ranks and p-values are NaN.", DegenerateDataWarning)
        return NemenyiResult(
            _NAN, np.full((k, k), np.nan), labels, np.full(k, np.nan), 0, q_alpha, alpha,
            licensed,
        )
    ranks = scipy.stats.rankdata(table, axis=1)
    average = ranks.mean(axis=0)
    se = math.sqrt(k * (k + 1) / (6.0 * n))
    cd = q_alpha * se
    diff = np.abs(average[:, None] - average[None, :])
    pvalues = scipy.stats.studentized_range.sf(diff / se * math.sqrt(2), k, np.inf)
    pvalues = np.clip(pvalues, 0.0, 1.0)
    np.fill_diagonal(pvalues, 1.0)
    return NemenyiResult(float(cd), pvalues, labels, average, int(n), q_alpha, alpha, licensed)
