"""Significance tests against hand-computed values and published tables.

Where each magic number comes from is said next to it: "hand" means computed on paper from the
definition (the working is in the comment), "Demsar" is Table 5(a) of Demsar (2006),
"Statistical comparisons of classifiers over multiple data sets", JMLR 7.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from bilevel_optuna.stats import DegenerateDataWarning
from bilevel_optuna.stats import NoPowerWarning
from bilevel_optuna.stats import friedman_test
from bilevel_optuna.stats import holm
from bilevel_optuna.stats import kruskal_test
from bilevel_optuna.stats import nemenyi_test
from bilevel_optuna.stats import paired_test
from bilevel_optuna.stats import unpaired_test
from bilevel_optuna.stats._hypothesis import friedman_min_pvalue
from bilevel_optuna.stats._hypothesis import kruskal_min_pvalue
from bilevel_optuna.stats._hypothesis import mannwhitneyu_min_pvalue
from bilevel_optuna.stats._hypothesis import wilcoxon_min_pvalue


def test_wilcoxon_all_one_sign() -> None:
    # hand: 6 differences all negative, W+ = 0; exact P(W+ = 0) = 2^-6 per side, p = 2/64.
    a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    b = [2.0, 3.0, 4.0, 5.0, 6.0, 7.5]
    res = paired_test(a, b)
    assert res.test == "wilcoxon"
    assert res.statistic == 0.0
    assert res.pvalue == pytest.approx(0.03125)
    assert res.n == 6 and not res.no_power


def test_wilcoxon_mixed_signs() -> None:
    # hand: d = [-1, 2, -3, 4, -5, -6, -7, -8], |d| ranks 1..8, W+ = 2 + 4 = 6.
    # Subsets of {1..8} with sum <= 6: sums 0,1,2 -> 1 each, 3 -> 2, 4 -> 2, 5 -> 3, 6 -> 4;
    # 14 in all, so p = 2 * 14 / 2^8 = 0.109375.
    b = np.zeros(8)
    a = np.array([-1, 2, -3, 4, -5, -6, -7, -8], dtype=float)
    res = paired_test(a, b)
    assert res.statistic == 6.0
    assert res.pvalue == pytest.approx(0.109375)


def test_wilcoxon_drops_zero_differences_and_nan_pairs() -> None:
    # Two zero differences and one NaN pair leave the 6 pairs of the first test.
    a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 9.0, 9.0, float("nan")]
    b = [2.0, 3.0, 4.0, 5.0, 6.0, 7.5, 9.0, 9.0, 1.0]
    res = paired_test(a, b)
    assert res.n == 6
    assert res.pvalue == pytest.approx(0.03125)


def test_wilcoxon_matches_scipy_with_ties() -> None:
    # Tied |d| force scipy's normal approximation; the p-value is scipy's.
    rng = np.random.default_rng(3)
    a = rng.integers(0, 5, size=20).astype(float)
    b = a + rng.choice([-2.0, -1.0, 1.0, 3.0], size=20)
    res = paired_test(a, b)
    assert res.pvalue == pytest.approx(scipy.stats.wilcoxon(a, b).pvalue)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, 1.0), (1, 1.0), (5, 0.0625), (6, 0.03125), (10, 2 / 1024)],  # hand: min(1, 2 / 2^n)
)
def test_wilcoxon_min_pvalue(n: int, expected: float) -> None:
    assert wilcoxon_min_pvalue(n) == pytest.approx(expected)


def test_wilcoxon_too_few_pairs_has_no_power() -> None:
    # 5 pairs all one sign: the most extreme outcome, yet 2/32 = 0.0625 > 0.05.
    with pytest.warns(NoPowerWarning, match="no power"):
        res = paired_test([1, 2, 3, 4, 5], [2, 3, 4, 5, 6.5])
    assert res.no_power
    assert math.isnan(res.pvalue)
    assert res.statistic == 0.0
    assert res.min_pvalue == pytest.approx(0.0625)


def test_wilcoxon_five_pairs_has_power_at_larger_alpha() -> None:
    res = paired_test([1, 2, 3, 4, 5], [2, 3, 4, 5, 6.5], alpha=0.1)
    assert not res.no_power
    assert res.pvalue == pytest.approx(0.0625)


@pytest.mark.parametrize(
    ("a", "b", "note"),
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], "all paired differences are zero"),
        ([float("nan")] * 3, [1.0, 2.0, 3.0], "no complete pairs"),
    ],
)
def test_wilcoxon_degenerate(a: list[float], b: list[float], note: str) -> None:
    with pytest.warns(DegenerateDataWarning, match=note):
        res = paired_test(a, b)
    assert res.degenerate and math.isnan(res.statistic) and math.isnan(res.pvalue)


def test_paired_lengths_must_match() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        paired_test([1.0, 2.0], [1.0])


@pytest.mark.parametrize(
    ("x", "y", "u", "p"),
    [
        # hand: complete separation, U = 0, exact p = 2 / C(8, 4) = 2/70.
        ([1, 2, 3, 4], [5, 6, 7, 8], 0.0, 2 / 70),
        # hand: one inversion (5 > 4), U = 1; P(U <= 1) = 2/70 (U = 0 and U = 1 once each),
        # two-sided p = 4/70.
        ([1, 2, 3, 5], [4, 6, 7, 8], 1.0, 4 / 70),
    ],
)
def test_mannwhitneyu_exact(x: list[float], y: list[float], u: float, p: float) -> None:
    res = unpaired_test(x, y)
    assert res.test == "mannwhitneyu"
    assert res.statistic == u
    assert res.pvalue == pytest.approx(p)


def test_mannwhitneyu_ties_match_scipy() -> None:
    x = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0]
    y = [2.0, 3.0, 3.0, 4.0, 4.0, 5.0, 5.0, 6.0, 6.0]
    expected = scipy.stats.mannwhitneyu(x, y, alternative="two-sided")
    res = unpaired_test(x, y)
    assert res.statistic == expected.statistic
    assert res.pvalue == pytest.approx(expected.pvalue)


@pytest.mark.parametrize(
    ("n1", "n2", "expected"),
    [(3, 3, 0.1), (4, 4, 2 / 70), (1, 9, 0.2), (0, 5, 1.0)],  # hand: 2 / C(n1 + n2, n1)
)
def test_mannwhitneyu_min_pvalue(n1: int, n2: int, expected: float) -> None:
    assert mannwhitneyu_min_pvalue(n1, n2) == pytest.approx(expected)


def test_mannwhitneyu_three_per_arm_has_no_power() -> None:
    with pytest.warns(NoPowerWarning):
        res = unpaired_test([1, 2, 3], [4, 5, 6])
    assert res.no_power and math.isnan(res.pvalue) and res.statistic == 0.0


@pytest.mark.parametrize(
    ("x", "y"), [([2.0, 2.0, 2.0, 2.0], [2.0, 2.0, 2.0, 2.0]), ([], [1.0, 2.0])]
)
def test_mannwhitneyu_degenerate(x: list[float], y: list[float]) -> None:
    with pytest.warns(DegenerateDataWarning):
        res = unpaired_test(x, y)
    assert res.degenerate and math.isnan(res.pvalue)


# Four blocks (rows) of three arms; lower is better.
_BLOCKS = [[1, 2, 3], [1, 3, 2], [1, 2, 3], [2, 1, 3]]


def test_friedman_hand_computed() -> None:
    # hand: rank sums 5, 8, 11; chi2 = 12 / (n k (k + 1)) * sum R^2 - 3 n (k + 1)
    #     = 12 / 48 * 210 - 48 = 4.5; with 2 degrees of freedom p = exp(-4.5 / 2).
    res = friedman_test(_BLOCKS)
    assert res.statistic == pytest.approx(4.5)
    assert res.pvalue == pytest.approx(math.exp(-2.25))
    assert res.n == 4


def test_friedman_drops_incomplete_blocks() -> None:
    res = friedman_test(_BLOCKS + [[1.0, float("nan"), 2.0]])
    assert res.n == 4 and res.statistic == pytest.approx(4.5)


def test_friedman_min_pvalue() -> None:
    # hand: the largest statistic is n (k - 1) = 8 for n = 4, k = 3, and sf = exp(-8 / 2).
    assert friedman_min_pvalue(4, 3) == pytest.approx(math.exp(-4.0))
    # 2 blocks of 3 arms: exp(-2) = 0.135 > 0.05, so no power.
    with pytest.warns(NoPowerWarning):
        res = friedman_test([[1, 2, 3], [1, 2, 3]])
    assert res.no_power


@pytest.mark.parametrize(
    ("blocks", "match"),
    [([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [5.0, 5.0, 5.0]], "ties"), ([[1.0, 2.0, 3.0]], "block")],
)
def test_friedman_degenerate(blocks: list[list[float]], match: str) -> None:
    with pytest.warns(DegenerateDataWarning, match=match):
        res = friedman_test(blocks)
    assert res.degenerate and math.isnan(res.statistic)


def test_friedman_needs_three_arms() -> None:
    with pytest.raises(ValueError, match="at least 3 arms"):
        friedman_test([[1.0, 2.0], [2.0, 1.0]])


def test_kruskal_hand_computed() -> None:
    # hand: rank sums 6, 15, 24 over N = 9; H = 12 / 90 * (36 + 225 + 576) / 3 - 30 = 7.2,
    # p = exp(-7.2 / 2) (2 degrees of freedom). Complete separation, so it is also min p.
    res = kruskal_test([1, 2, 3], [4, 5, 6], [7, 8, 9])
    assert res.statistic == pytest.approx(7.2)
    assert res.pvalue == pytest.approx(math.exp(-3.6))
    assert kruskal_min_pvalue([3, 3, 3]) == pytest.approx(math.exp(-3.6))


def test_kruskal_all_equal_is_degenerate() -> None:
    with pytest.warns(DegenerateDataWarning, match="all values are equal"):
        res = kruskal_test([1, 1], [1, 1], [1, 1])
    assert math.isnan(res.pvalue)


def test_holm_hand_computed() -> None:
    # hand: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04;
    # running maximum 0.02, 0.03, 0.06, 0.06; back in input order.
    assert holm([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_nan_is_not_a_test_and_values_cap_at_one() -> None:
    # Family of 2 (the NaN does not count): 0.3 * 2 = 0.6, max(0.6, 0.7 * 1) = 0.7.
    out = holm([0.7, float("nan"), 0.3])
    assert out[0] == pytest.approx(0.7) and math.isnan(out[1]) and out[2] == pytest.approx(0.6)
    assert holm([0.6, 0.9]).tolist() == [1.0, 1.0]
    assert holm([]).size == 0


@pytest.mark.parametrize(
    ("k", "q"), [(3, 2.343), (4, 2.569), (5, 2.728), (6, 2.850), (10, 3.164)]  # Demsar
)
def test_nemenyi_critical_difference(k: int, q: float) -> None:
    n = 12
    table = np.tile(np.arange(k, dtype=float), (n, 1))
    res = nemenyi_test(table)
    assert res.q_alpha == pytest.approx(q, abs=1e-3)
    assert res.critical_difference == pytest.approx(q * math.sqrt(k * (k + 1) / (6 * n)), rel=1e-3)
    assert res.average_ranks.tolist() == pytest.approx(list(range(1, k + 1)))


def test_nemenyi_pvalues() -> None:
    # hand: average ranks 1.25, 2, 2.75 (rank sums 5, 8, 11 over 4 blocks); se = sqrt(12/24).
    res = nemenyi_test(_BLOCKS, arms=["a", "b", "c"])
    assert res.average_ranks.tolist() == pytest.approx([1.25, 2.0, 2.75])
    assert res.critical_difference == pytest.approx(2.3437 * math.sqrt(0.5), abs=1e-3)
    # The p-value at a difference equal to CD is alpha by construction.
    se = math.sqrt(0.5)
    at_cd = scipy.stats.studentized_range.sf(
        res.critical_difference / se * math.sqrt(2), 3, np.inf
    )
    assert at_cd == pytest.approx(0.05, abs=1e-4)
    assert res.pvalue[0, 2] == pytest.approx(
        scipy.stats.studentized_range.sf(1.5 / se * math.sqrt(2), 3, np.inf)
    )
    assert np.allclose(res.pvalue, res.pvalue.T) and np.all(np.diag(res.pvalue) == 1.0)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1])
def test_alpha_is_validated(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        paired_test([1.0, 2.0], [2.0, 3.0], alpha=alpha)


def test_nemenyi_says_whether_friedman_licensed_it() -> None:
    # Demsar (2006): the post-hoc test is licensed only once Friedman rejects.
    separated = np.tile(np.arange(3, dtype=float), (12, 1))  # one order in every block
    shuffled = np.array([np.roll(np.arange(3.0), i) for i in range(12)])  # every rank equally
    rejected = friedman_test(separated)
    kept = friedman_test(shuffled)
    assert rejected.pvalue < 0.05 < kept.pvalue
    assert nemenyi_test(separated, friedman=rejected).licensed is True
    assert nemenyi_test(shuffled, friedman=kept).licensed is False
    assert nemenyi_test(separated).licensed is None
