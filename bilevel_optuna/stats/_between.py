"""Tests between the arms of one comparison: each pair, then every arm at once.

Pairs are tested paired (Wilcoxon) where their studies pair by (objective, seed), unpaired
(Mann-Whitney) where not, and judged together (Holm's correction, A12, the noise floor, a
verdict); three or more arms get an omnibus test (Friedman or Kruskal-Wallis) and, after
Friedman, Nemenyi's critical difference.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.stats._effect import A12Result
from bilevel_optuna.stats._effect import vargha_delaney_a12
from bilevel_optuna.stats._hypothesis import NemenyiResult
from bilevel_optuna.stats._hypothesis import SignificanceResult
from bilevel_optuna.stats._hypothesis import friedman_test
from bilevel_optuna.stats._hypothesis import holm
from bilevel_optuna.stats._hypothesis import kruskal_test
from bilevel_optuna.stats._hypothesis import nemenyi_test
from bilevel_optuna.stats._hypothesis import paired_test
from bilevel_optuna.stats._hypothesis import unpaired_test
from bilevel_optuna.stats._load import StudyRecord
from bilevel_optuna.stats._noise import NoiseFloorResult
from bilevel_optuna.stats._results import ArmSummary
from bilevel_optuna.stats._results import PairwiseComparison
from bilevel_optuna.stats._settings import CompareSettings


@dataclass(frozen=True)
class Between:
    """What the tests between arms found: the pairs, the omnibus test, its post-hoc, notes."""

    comparisons: list[PairwiseComparison]
    omnibus: SignificanceResult | None
    posthoc: NemenyiResult | None
    notes: list[str]


def between_arms(
    loaded: dict[str, list[StudyRecord]],
    arm_summaries: dict[str, ArmSummary],
    metric_values: dict[str, float],
    *,
    settings: CompareSettings,
    floor: NoiseFloorResult | None,
    direction: str,
) -> Between:
    """Every pair of arms (or each arm against ``settings.control``), then all arms at once."""
    labels = list(loaded)
    control = settings.control
    pairs = (
        [(control, other) for other in labels if other != control]
        if control is not None
        else list(itertools.combinations(labels, 2))
    )
    tested = [
        _test_pair(a, b, loaded, arm_summaries, metric_values, settings.paired, settings.alpha)
        for a, b in pairs
    ]
    comparisons = _judge_all(
        tested, floor=floor, alpha=settings.alpha, direction=direction, bootstrap=settings
    )
    omnibus, posthoc, notes = _omnibus(
        loaded, arm_summaries, metric_values, comparisons, paired=settings.paired,
        alpha=settings.alpha, direction=direction,
    )  # fmt: skip
    return Between(comparisons, omnibus, posthoc, notes)


def _pairing(a: list[StudyRecord], b: list[StudyRecord]) -> list[Any] | None:
    """Common (objective, seed) keys when the arms can be paired, else None.

    Pairable: every study carries a seed, keys are unique within each arm, and one arm's keys
    are a subset of the other's (so no study of the smaller arm is dropped for lack of partner).
    """
    keys_a = [r.key for r in a]
    keys_b = [r.key for r in b]
    if any(r.seed is None for r in a + b):
        return None
    if len(set(keys_a)) != len(keys_a) or len(set(keys_b)) != len(keys_b):
        return None
    common = set(keys_a) & set(keys_b)
    if not common or not (common == set(keys_a) or common == set(keys_b)):
        return None
    return sorted(common, key=repr)


def _by_key(
    records: list[StudyRecord], metric_values: dict[str, float], keys: list[Any]
) -> np.ndarray:
    lookup = {r.key: metric_values[r.name] for r in records}
    return np.array([lookup[k] for k in keys], dtype=float)


def finite(x: np.ndarray) -> np.ndarray:
    return np.asarray(x[~np.isnan(x)])




@dataclass(frozen=True)
class _Tested:
    """One pair of arms and its test, before the Holm adjustment across every pair."""

    arm_a: str
    arm_b: str
    test: SignificanceResult
    paired: bool
    xa: np.ndarray
    xb: np.ndarray
    n_dropped: int


def _test_pair(
    a: str,
    b: str,
    loaded: dict[str, list[StudyRecord]],
    arm_summaries: dict[str, ArmSummary],
    metric_values: dict[str, float],
    paired: Any,
    alpha: float,
) -> _Tested:
    keys = None if paired is False else _pairing(loaded[a], loaded[b])
    if paired is True and keys is None:
        raise ConfigurationError(
            f"paired=True but arms {a!r} and {b!r} cannot be paired: every study needs a "
            "bilevel:seed, unique per arm, and one arm's (objective, seed) keys must include "
            "the other's. Use paired='auto'."
        )
    if keys is not None:
        xa = _by_key(loaded[a], metric_values, keys)
        xb = _by_key(loaded[b], metric_values, keys)
        keep = ~(np.isnan(xa) | np.isnan(xb))
        xa, xb = xa[keep], xb[keep]
        test = paired_test(xa, xb, alpha=alpha)
    else:
        xa = finite(arm_summaries[a].values)
        xb = finite(arm_summaries[b].values)
        test = unpaired_test(xa, xb, alpha=alpha)
    dropped = len(loaded[a]) + len(loaded[b]) - xa.size - xb.size
    return _Tested(a, b, test, keys is not None, xa, xb, int(dropped))


def _judge_all(
    tested: list[_Tested],
    *,
    floor: NoiseFloorResult | None,
    alpha: float,
    direction: str,
    bootstrap: CompareSettings,
) -> list[PairwiseComparison]:
    """Each pair's comparison, complete: Holm-adjusted p, A12, noise-floor label, verdict."""
    adjusted = holm([t.test.pvalue for t in tested]) if tested else np.empty(0)
    comparisons = []
    for t, p_holm in zip(tested, adjusted):
        a12 = vargha_delaney_a12(
            t.xa,
            t.xb,
            direction=direction,
            paired=t.paired,
            confidence_level=bootstrap.confidence_level,
            n_resamples=bootstrap.n_resamples,
            seed=bootstrap.seed,
        )
        med_a = float(np.median(t.xa)) if t.xa.size else float("nan")
        med_b = float(np.median(t.xb)) if t.xb.size else float("nan")
        difference = med_a - med_b
        inside = None if floor is None or math.isnan(floor.sd) else floor.contains(difference)
        significant = bool(not math.isnan(p_holm) and p_holm < alpha)
        better, verdict = _verdict(
            t, a12, difference, inside=inside, significant=significant, direction=direction
        )
        comparisons.append(
            PairwiseComparison(
                statistic=t.test.statistic,
                pvalue=t.test.pvalue,
                pvalue_holm=float(p_holm),
                arm_a=t.arm_a,
                arm_b=t.arm_b,
                test=t.test.test,
                paired=t.paired,
                n_a=int(t.xa.size),
                n_b=int(t.xb.size),
                n_dropped=t.n_dropped,
                a12=a12,
                median_a=med_a,
                median_b=med_b,
                difference=difference,
                inside_noise_floor=inside,
                significant=significant,
                better=better,
                verdict=verdict,
                result=t.test,
            )
        )
    return comparisons


def _verdict(
    t: _Tested,
    a12: A12Result,
    difference: float,
    *,
    inside: bool | None,
    significant: bool,
    direction: str,
) -> tuple[str | None, str]:
    """(the better arm or None, the one-line verdict) of a comparison."""
    if t.test.degenerate:
        return None, "no test: " + t.test.note
    if t.test.no_power:
        return None, "no power, inside noise floor" if inside else "no power"
    if not significant:
        return None, "inside noise floor" if inside else "no significant difference"
    a_better = a12.statistic > 0.5
    if a12.statistic == 0.5:  # A12 cannot tell: use the medians
        a_better = (difference < 0) == (direction == "minimize")
    winner = t.arm_a if a_better else t.arm_b
    if inside:
        return None, f"{winner} ahead, but inside noise floor"
    return winner, f"{winner} better"


def _omnibus(
    loaded: dict[str, list[StudyRecord]],
    arm_summaries: dict[str, ArmSummary],
    metric_values: dict[str, float],
    comparisons: list[PairwiseComparison],
    *,
    paired: Any,
    alpha: float,
    direction: str,
) -> tuple[SignificanceResult | None, NemenyiResult | None, list[str]]:
    """The omnibus test across every arm, Nemenyi's post-hoc after Friedman, and notes.

    Two arms: the pairwise test. Three or more: Friedman where every pair of arms pairs,
    Kruskal-Wallis where not. Nemenyi's critical difference is licensed only where Friedman
    rejects (Demsar 2006); otherwise it is kept, labelled as not licensed.
    """
    labels = list(loaded)
    if len(labels) < 2:
        return None, None, []
    if len(labels) == 2:
        return (comparisons[0].result if comparisons else None), None, []
    blocks = _friedman_blocks(loaded, metric_values, labels) if paired is not False else None
    if blocks is None:
        samples = [finite(arm_summaries[label].values) for label in labels]
        return kruskal_test(*samples, alpha=alpha), None, []
    notes = []
    omnibus = friedman_test(blocks, alpha=alpha)
    posthoc = None
    if not omnibus.degenerate:
        sign = 1.0 if direction == "minimize" else -1.0  # Nemenyi ranks: lower is better
        posthoc = nemenyi_test(sign * blocks, arms=labels, alpha=alpha, friedman=omnibus)
        if not posthoc.licensed:
            notes.append(
                f"Friedman's test did not reject at alpha = {alpha:g}, so Nemenyi's critical "
                "difference is not licensed (Demsar 2006): it is shown for reference only and "
                "supports no claim."
            )
    dropped = sum(len(g) for g in loaded.values()) - blocks.size
    if dropped:
        notes.append(
            f"Friedman used the {blocks.shape[0]} seeds complete in every arm; "
            f"{dropped} studies outside those blocks were left out of it."
        )
    return omnibus, posthoc, notes


def _friedman_blocks(
    loaded: dict[str, list[StudyRecord]], metric_values: dict[str, float], labels: list[str]
) -> np.ndarray | None:
    """``(seeds, arms)`` table over the keys every arm has, or None if the arms do not pair."""
    for a, b in itertools.combinations(labels, 2):
        if _pairing(loaded[a], loaded[b]) is None:
            return None
    common = set.intersection(*[{r.key for r in loaded[label]} for label in labels])
    keys = sorted(common, key=repr)
    table = np.column_stack([_by_key(loaded[label], metric_values, keys) for label in labels])
    return np.asarray(table[~np.isnan(table).any(axis=1)])
