"""Vargha-Delaney A12 against hand-counted pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bilevel_optuna.stats import DegenerateDataWarning
from bilevel_optuna.stats import vargha_delaney_a12


@pytest.mark.parametrize(
    ("a", "b", "direction", "expected"),
    [
        # hand: pairs (a, b) with a < b: (1,2) (1,3) (1,4) (2,3) (2,4) (3,4) = 6, ties (2,2)
        # (3,3) = 2, of 9 pairs: (6 + 0.5 * 2) / 9 = 7/9.
        ([1, 2, 3], [2, 3, 4], "minimize", 7 / 9),
        # maximize: a > b in 1 pair (3,2) plus the same 2 ties: (1 + 1) / 9.
        ([1, 2, 3], [2, 3, 4], "maximize", 2 / 9),
        ([1, 2], [3, 4, 5], "minimize", 1.0),  # every a beats every b
        ([5, 5, 5], [5, 5], "minimize", 0.5),  # all ties
    ],
)
def test_a12_hand_counted(a: list[float], b: list[float], direction: str, expected: float) -> None:
    assert vargha_delaney_a12(a, b, direction=direction).statistic == pytest.approx(expected)


def test_a12_is_antisymmetric() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=15), rng.normal(0.5, size=11)
    forward = vargha_delaney_a12(a, b).statistic
    assert forward + vargha_delaney_a12(b, a).statistic == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("a12", "magnitude"),
    [
        (0.5, "negligible"),
        (0.55, "negligible"),
        (0.57, "small"),
        (0.37, "small"),
        (0.36, "medium"),
        (0.65, "medium"),
        (0.72, "large"),
        (0.0, "large"),
    ],
)
def test_a12_magnitude_thresholds(a12: float, magnitude: str) -> None:
    # Vargha and Delaney (2000): 0.56 small, 0.64 medium, 0.71 large, symmetric around 0.5.
    from bilevel_optuna.stats._effect import _magnitude

    assert _magnitude(a12) == magnitude


def test_a12_bootstrap_interval_brackets_the_estimate() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=20), rng.normal(0.8, size=20)
    res = vargha_delaney_a12(a, b, seed=3)
    assert res.ci_low <= res.statistic <= res.ci_high
    assert 0.0 <= res.ci_low < res.ci_high <= 1.0
    assert res == vargha_delaney_a12(a, b, seed=3)  # seeded: reproducible


def test_a12_paired_bootstrap_resamples_pairs() -> None:
    a = np.arange(10.0)
    b = a + 0.5  # a always better within its pair, but the arms overlap
    paired = vargha_delaney_a12(a, b, paired=True)
    unpaired = vargha_delaney_a12(a, b, paired=False)
    assert paired.statistic == unpaired.statistic
    assert (paired.ci_low, paired.ci_high) != (unpaired.ci_low, unpaired.ci_high)


def test_a12_empty_arm_is_nan() -> None:
    with pytest.warns(DegenerateDataWarning):
        res = vargha_delaney_a12([], [1.0])
    assert math.isnan(res.statistic) and res.magnitude == "undefined"


def test_a12_rejects_unknown_direction() -> None:
    with pytest.raises(ValueError, match="direction"):
        vargha_delaney_a12([1.0], [2.0], direction="lower")
