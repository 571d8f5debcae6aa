"""Anytime curves and their area."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bilevel_optuna.stats import anytime_curve
from bilevel_optuna.stats import best_so_far
from bilevel_optuna.stats import normalized_auc

nan = float("nan")


@pytest.mark.parametrize(
    ("values", "direction", "expected"),
    [
        ([3.0, nan, 1.0, 2.0], "minimize", [3.0, 3.0, 1.0, 1.0]),
        ([nan, 1.0, 3.0, 2.0], "maximize", [nan, 1.0, 3.0, 3.0]),
        ([nan, nan], "minimize", [nan, nan]),
        ([], "minimize", []),
    ],
)
def test_best_so_far(values: list[float], direction: str, expected: list[float]) -> None:
    np.testing.assert_array_equal(best_so_far(values, direction=direction), expected)


def test_best_so_far_follows_incumbent_true_value() -> None:
    observed = [5.0, 3.0, 4.0, 1.0]
    true = [5.5, 3.9, 2.0, nan]  # the third trial is truly better, but never the incumbent
    # Incumbents: trial 0, 1, 1, 3; trial 3 has no true value, so its observed value counts.
    np.testing.assert_array_equal(best_so_far(observed, true_values=true), [5.5, 3.9, 3.9, 1.0])


def test_anytime_curve_unequal_lengths() -> None:
    curves = [[4.0, 3.0, 2.0, 1.0], [6.0, 5.0], [nan, 2.0, 2.0]]
    c = anytime_curve(curves)
    np.testing.assert_array_equal(c.trials, [1, 2, 3, 4])
    np.testing.assert_array_equal(c.n, [2, 3, 2, 1])
    # hand: trial 1 over {4, 6}: median 5, q25 4.5, q75 5.5; trial 2 over {3, 5, 2}: median 3.
    assert (c.median[0], c.low[0], c.high[0]) == (5.0, 4.5, 5.5)
    assert c.median[1] == 3.0 and c.median[3] == 1.0


def test_anytime_curve_empty() -> None:
    assert anytime_curve([]).trials.size == 0


@pytest.mark.parametrize(
    ("curve", "expected"),
    [([4.0, 2.0, 2.0, 0.0], 2.0), ([nan, 3.0, 1.0], 2.0), ([nan], nan)],
)
def test_normalized_auc(curve: list[float], expected: float) -> None:
    got = normalized_auc(curve)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected
