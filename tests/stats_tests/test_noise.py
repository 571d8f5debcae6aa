"""The noise floor."""

from __future__ import annotations

import math

import pytest
import scipy.stats

from bilevel_optuna.stats import DegenerateDataWarning
from bilevel_optuna.stats import noise_floor


def test_noise_floor_hand_computed() -> None:
    # hand: mean 1.05, squared deviations 0.0025 + 0.0225 + 0.0225 + 0.0025 = 0.05, / 3.
    nf = noise_floor([1.0, 1.2, 0.9, 1.1])
    assert nf.sd == pytest.approx(math.sqrt(0.05 / 3))
    assert nf.mean == pytest.approx(1.05) and nf.n == 4
    # chi-square interval: sqrt(3 s^2 / chi2.ppf(0.975, 3)) to sqrt(3 s^2 / chi2.ppf(0.025, 3)).
    assert nf.ci_low == pytest.approx(math.sqrt(0.05 / scipy.stats.chi2.ppf(0.975, 3)))
    assert nf.ci_high == pytest.approx(math.sqrt(0.05 / scipy.stats.chi2.ppf(0.025, 3)))


@pytest.mark.parametrize(
    ("difference", "inside"),
    [(0.0, True), (0.32, True), (-0.32, True), (0.33, False)],  # threshold 0.3266
)
def test_noise_floor_rule(difference: float, inside: bool) -> None:
    nf = noise_floor([0.0, 0.2, -0.2, 0.0], noise_factor=2.0)  # sd = sqrt(0.08 / 3) = 0.1633
    assert nf.threshold == pytest.approx(2 * math.sqrt(0.08 / 3))
    assert nf.contains(difference) is inside


def test_noise_floor_needs_two_values() -> None:
    with pytest.warns(DegenerateDataWarning):
        nf = noise_floor([1.0])
    assert math.isnan(nf.sd) and nf.n == 1


def test_noise_floor_validates_factor() -> None:
    with pytest.raises(ValueError, match="noise_factor"):
        noise_floor([1.0, 2.0], noise_factor=0.0)
