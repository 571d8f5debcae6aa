"""Per-arm summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bilevel_optuna.stats import DegenerateDataWarning
from bilevel_optuna.stats import summarize


def test_summary_hand_computed() -> None:
    # hand, numpy's linear interpolation on [1, 2, 3, 4, 5, 7]: q25 at position 1.25 -> 2.25,
    # median 3.5, q75 at position 3.75 -> 4.75; mean 22 / 6.
    s = summarize([1.0, 2.0, 3.0, 4.0, 5.0, 7.0, float("nan")])
    assert (s.n, s.median, s.q25, s.q75, s.iqr) == (6, 3.5, 2.25, 4.75, 2.5)
    assert s.mean == pytest.approx(22 / 6)
    assert s.mean_ci_low < s.mean < s.mean_ci_high


def test_summary_interval_close_to_t_interval_for_normal_data() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(10.0, 2.0, size=200)
    s = summarize(x, seed=1)
    half = 1.97 * x.std(ddof=1) / math.sqrt(x.size)  # t quantile 0.975 at 199 dof is 1.972
    assert s.mean_ci_low == pytest.approx(x.mean() - half, abs=0.1)
    assert s.mean_ci_high == pytest.approx(x.mean() + half, abs=0.1)


def test_summary_constant_values() -> None:
    s = summarize([4.0, 4.0, 4.0])
    assert (s.median, s.iqr, s.mean_ci_low, s.mean_ci_high) == (4.0, 0.0, 4.0, 4.0)


@pytest.mark.parametrize("values", [[1.0, 2.0], []])
def test_summary_too_few_values(values: list[float]) -> None:
    with pytest.warns(DegenerateDataWarning):
        s = summarize(values)
    assert s.n == len(values) and math.isnan(s.mean_ci_low)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"confidence_level": 1.0}, "confidence_level"), ({"n_resamples": 10}, "n_resamples")],
)
def test_summary_validates(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        summarize([1.0, 2.0, 3.0], **kwargs)  # type: ignore[arg-type]
