"""compare(): every statistic of a comparison of arms, from values stored in a storage."""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

from bilevel_optuna._logging import get_logger
from bilevel_optuna._storage import open_storage
from bilevel_optuna._storage import storage_label
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.stats._anytime import anytime_curve
from bilevel_optuna.stats._anytime import best_so_far
from bilevel_optuna.stats._anytime import normalized_auc
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
from bilevel_optuna.stats._load import ArmsSpec
from bilevel_optuna.stats._load import StudyRecord
from bilevel_optuna.stats._load import load_arms
from bilevel_optuna.stats._noise import NoiseFloorResult
from bilevel_optuna.stats._noise import noise_floor as _noise_floor
from bilevel_optuna.stats._results import ArmSummary
from bilevel_optuna.stats._results import CompareResult
from bilevel_optuna.stats._results import PairwiseComparison
from bilevel_optuna.stats._summary import summarize

if TYPE_CHECKING:
    import optuna

_logger = get_logger(__name__)

_METRICS = ("auto", "best", "regret", "auc")
_PAIRED = ("auto", True, False)
NoiseFloorSpec = NoiseFloorResult | float | Sequence[float] | np.ndarray | str | None


def _validate(metric: str, paired: Any, alpha: float, noise_factor: float) -> None:
    if metric not in _METRICS:
        raise ValueError(f"`metric` must be one of {set(_METRICS)} but got {metric!r}.")
    if paired not in _PAIRED:
        raise ValueError(f"`paired` must be one of {set(map(str, _PAIRED))} but got {paired!r}.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1 (exclusive) but got {alpha}.")
    if not noise_factor > 0:
        raise ValueError(f"noise_factor must be positive but got {noise_factor}.")


def _resolve_metric(metric: str, records: list[StudyRecord]) -> tuple[str, str, str]:
    """(metric, curve quantity, direction): regret when every study knows its optimum."""
    no_optimum = [r.name for r in records if r.optimum is None]
    if metric == "regret" and no_optimum:
        raise ConfigurationError(
            f"metric='regret' needs the bilevel:optimum attribute, missing on "
            f"{len(no_optimum)} studies (e.g. {no_optimum[:3]}). Use metric='best'."
        )
    quantity = "value" if no_optimum else "regret"
    if metric == "auto":
        metric = "regret" if quantity == "regret" else "best"
    if metric == "best":
        quantity = "value"
    directions = {r.direction for r in records}
    if len(directions) > 1 and quantity != "regret":
        # Regret is lower-is-better whatever the direction; raw values are not comparable.
        raise ConfigurationError(
            "The studies mix directions (minimize and maximize); compare arms of one direction, "
            "or compare regret (metric='regret', with bilevel:optimum on every study)."
        )
    return metric, quantity, "minimize" if quantity == "regret" else directions.pop()


def _study_curve(record: StudyRecord, quantity: str) -> np.ndarray:
    if quantity == "value":
        return best_so_far(record.values, direction=record.direction)
    curve = best_so_far(record.values, direction=record.direction, true_values=record.true_values)
    assert record.optimum is not None
    return curve - record.optimum if record.direction == "minimize" else record.optimum - curve


def _study_metric(curve: np.ndarray, metric: str) -> float:
    if metric == "auc":
        return normalized_auc(curve)
    finite = curve[~np.isnan(curve)]
    return float(finite[-1]) if finite.size else float("nan")


def _resolve_noise_floor(
    spec: NoiseFloorSpec, noise_factor: float, backend: optuna.storages.BaseStorage
) -> NoiseFloorResult | None:
    if spec is None:
        return None
    if isinstance(spec, NoiseFloorResult):
        return spec
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        sd = float(spec)
        if not sd >= 0:
            raise ValueError(f"noise_floor as a standard deviation must be >= 0 but got {spec}.")
        nan = float("nan")
        return NoiseFloorResult(sd, nan, nan, 0, nan, noise_factor, "given")
    if isinstance(spec, str):
        from optuna.trial import TrialState

        try:
            study_id = backend.get_study_id_from_name(spec)
        except KeyError as err:
            raise ConfigurationError(
                f"noise_floor={spec!r}: no such study in the storage. Pass the name of a study "
                "whose trials all evaluate one configuration, or a list of values."
            ) from err
        trials = backend.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,))
        values = [t.values[0] for t in trials if t.values]
        return _noise_floor(values, noise_factor=noise_factor, source=f"study {spec}")
    return _noise_floor(np.asarray(spec, dtype=float), noise_factor=noise_factor)


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


def _finite(x: np.ndarray) -> np.ndarray:
    return np.asarray(x[~np.isnan(x)])


def compare(
    storage: str | optuna.storages.BaseStorage,
    *,
    run: str | None = None,
    arms: ArmsSpec = None,
    kind: str | Sequence[str] | None = None,
    objective: str | Sequence[str] | None = None,
    metric: str = "auto",
    n_trials: int | None = None,
    paired: str | bool = "auto",
    control: str | None = None,
    alpha: float = 0.05,
    noise_floor: NoiseFloorSpec = None,
    noise_factor: float = 2.0,
    confidence_level: float = 0.95,
    n_resamples: int = 2000,
    seed: int | None = 0,
) -> CompareResult:
    """Compare arms of studies stored in one storage.

    Per study, the metric is the best value found within the trial budget, its regret when the
    study knows its optimum, or the normalized area under its anytime curve. Per arm: n,
    median, IQR, mean with a bootstrap interval, anytime curve. Between arms: Wilcoxon
    signed-rank where the studies pair by (objective, seed), Mann-Whitney U where not; Friedman
    (paired) or Kruskal-Wallis (unpaired) across three or more arms, with Nemenyi's critical
    difference after Friedman; Holm's correction across all pairwise comparisons;
    Vargha-Delaney A12 with a bootstrap interval.

    Args:
        storage: Storage URL (``sqlite:///...``, ``postgresql://...``) or optuna storage.
        run: Compare the studies of this bilevel run, grouped by their ``bilevel:arm``
            attribute.
        arms: With ``run``: a list of arm names or glob patterns to keep. Without: a mapping
            ``{label: "glob-pattern-of-study-names"}`` or ``{label: ["study", ...]}``.
        kind: Keep only studies whose ``bilevel:kind`` is this (or one of these); by default
            every kind but ``"outer"``.
        objective: Keep only studies of this objective (``bilevel:objective``), or of these.
        metric: ``"best"``, ``"regret"`` (needs ``bilevel:optimum`` on every study),
            ``"auc"`` (of regret where every study knows its optimum, else of values), or
            ``"auto"``: regret where every study knows its optimum, else best.
        n_trials: Count only trials numbered below this (failed and pruned trials use the
            budget too), so arms of unequal length are compared at equal budgets. None: all.
        paired: ``"auto"`` pairs two arms when every study has a seed, keys are unique and one
            arm's keys include the other's; True requires that; False never pairs.
        control: Compare every arm with this one only (fewer comparisons, more power), instead
            of every pair.
        alpha: Significance level, applied to Holm-adjusted p-values.
        noise_floor: Repeated evaluations of one configuration: a list of values, the name of a
            study in ``storage`` whose complete trials all evaluate one configuration, a
            standard deviation, or a :class:`NoiseFloorResult`.
        noise_factor: A difference of medians below ``noise_factor * sd`` of the noise floor is
            labelled "inside noise floor" and never claimed as an improvement.
        confidence_level: Level of the bootstrap intervals.
        n_resamples: Bootstrap resamples.
        seed: Seed of the bootstraps, so a report is reproducible.

    Returns:
        A :class:`CompareResult`.

    Example:
        .. code-block:: python

            from bilevel_optuna.stats import compare

            result = compare("sqlite:///runs.db", arms={"tpe": "tpe-*", "random": "random-*"})
            print(result.to_text())
    """
    _validate(metric, paired, alpha, noise_factor)
    if isinstance(arms, str):
        arms = [arms]
    backend = open_storage(storage, read_only=True)
    loaded = load_arms(
        backend, run=run, arms=arms, kind=kind, objective=objective, n_trials=n_trials
    )
    if control is not None and control not in loaded:
        close = difflib.get_close_matches(control, list(loaded), n=3)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ConfigurationError(
            f"control={control!r} is not an arm.{hint} Arms: {sorted(loaded)}."
        )
    records = [r for group in loaded.values() for r in group]
    metric, quantity, direction = _resolve_metric(metric, records)
    floor = _resolve_noise_floor(noise_floor, noise_factor, backend)
    bootstrap = _Bootstrap(confidence_level=confidence_level, n_resamples=n_resamples, seed=seed)

    curves_by_study = {r.name: _study_curve(r, quantity) for r in records}
    metric_values = {r.name: _study_metric(curves_by_study[r.name], metric) for r in records}
    arm_summaries = {
        label: _arm_summary(label, group, curves_by_study, metric_values, quantity, bootstrap)
        for label, group in loaded.items()
    }
    curves = {
        label: anytime_curve([curves_by_study[r.name] for r in group if not r.missing])
        for label, group in loaded.items()
    }
    labels = list(loaded)
    pairs = (
        [(control, other) for other in labels if other != control]
        if control is not None
        else list(itertools.combinations(labels, 2))
    )
    tested = [
        _test_pair(a, b, loaded, arm_summaries, metric_values, paired, alpha) for a, b in pairs
    ]
    comparisons = _judge_all(
        tested, floor=floor, alpha=alpha, direction=direction, bootstrap=bootstrap
    )
    omnibus, posthoc, omnibus_notes = _omnibus(
        loaded, arm_summaries, metric_values, comparisons, paired=paired, alpha=alpha,
        direction=direction,
    )
    notes = _notes(arm_summaries, records, comparisons, quantity, metric, n_trials, alpha)
    notes += omnibus_notes
    settings = {
        "storage": storage_label(storage),
        "run": run,
        "arms": arms if not isinstance(arms, Mapping) else dict(arms),
        "kind": kind,
        "objective": objective,
        "metric": metric,
        "n_trials": n_trials,
        "paired": paired,
        "control": control,
        "alpha": alpha,
        "noise_factor": noise_factor,
        "confidence_level": confidence_level,
        "n_resamples": n_resamples,
        "seed": seed,
    }
    _logger.info("Compared %d arms over %d studies (%s).", len(labels), len(records), metric)
    return CompareResult(
        statistic=omnibus.statistic if omnibus else float("nan"),
        pvalue=omnibus.pvalue if omnibus else float("nan"),
        test=omnibus.test if omnibus else "none",
        arms=arm_summaries,
        comparisons=comparisons,
        posthoc=posthoc,
        curves=curves,
        noise_floor=floor,
        studies=records,
        metric=metric,
        direction=direction,
        curve_quantity=quantity,
        alpha=alpha,
        n_trials=n_trials,
        notes=notes,
        settings=settings,
        omnibus=omnibus,
    )


@dataclass(frozen=True)
class _Bootstrap:
    """The settings of every bootstrap interval of one comparison."""

    confidence_level: float
    n_resamples: int
    seed: int | None


def _arm_summary(
    label: str,
    group: list[StudyRecord],
    curves_by_study: dict[str, np.ndarray],
    metric_values: dict[str, float],
    quantity: str,
    bootstrap: _Bootstrap,
) -> ArmSummary:
    values = np.array([metric_values[r.name] for r in group], dtype=float)
    aucs = [normalized_auc(curves_by_study[r.name]) for r in group if not r.missing]
    lengths = [len(r.values) for r in group]
    summary = summarize(
        _finite(values),
        confidence_level=bootstrap.confidence_level,
        n_resamples=bootstrap.n_resamples,
        seed=bootstrap.seed,
    )
    return ArmSummary(
        **vars(summary),
        label=label,
        values=values,
        study_names=[r.name for r in group],
        n_studies=len(group),
        n_missing=sum(r.missing for r in group),
        n_complete=sum(r.n_complete for r in group),
        n_failed=sum(r.n_failed for r in group),
        n_pruned=sum(r.n_pruned for r in group),
        n_unfinished=sum(r.n_unfinished for r in group),
        min_trials=min(lengths),
        max_trials=max(lengths),
        auc_median=float(np.median(aucs)) if aucs else float("nan"),
        n_true_values=(
            sum(r.true_values is not None for r in group) if quantity == "regret" else 0
        ),
    )


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
        xa = _finite(arm_summaries[a].values)
        xb = _finite(arm_summaries[b].values)
        test = unpaired_test(xa, xb, alpha=alpha)
    dropped = len(loaded[a]) + len(loaded[b]) - xa.size - xb.size
    return _Tested(a, b, test, keys is not None, xa, xb, int(dropped))


def _judge_all(
    tested: list[_Tested],
    *,
    floor: NoiseFloorResult | None,
    alpha: float,
    direction: str,
    bootstrap: _Bootstrap,
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
        samples = [_finite(arm_summaries[label].values) for label in labels]
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


def _notes(
    arms: dict[str, ArmSummary],
    records: list[StudyRecord],
    comparisons: list[PairwiseComparison],
    quantity: str,
    metric: str,
    n_trials: int | None,
    alpha: float,
) -> list[str]:
    notes = [
        "Failed, pruned and unfinished trials are never values; they count toward the trial "
        "budget. A study with no complete trial within the budget is missing: it is left out "
        "of every statistic (and its partner with it, when paired)."
    ]
    missing = sum(a.n_missing for a in arms.values())
    if missing:
        studies = "1 study has" if missing == 1 else f"{missing} studies have"
        notes.append(f"{studies} no complete trial and counted as missing.")
    low = min(a.min_trials for a in arms.values())
    high = max(a.max_trials for a in arms.values())
    if n_trials is None and low != high:
        notes.append(
            f"Studies have unequal lengths ({low} to {high} trials) and no budget was set: "
            f"arms with longer studies had more chances. Set n_trials={low} to compare at an "
            "equal budget."
        )
    elif n_trials is not None and low < n_trials:
        notes.append(
            f"Some studies have fewer trials ({low}) than the budget n_trials={n_trials}."
        )
    if quantity == "regret":
        with_true = sum(a.n_true_values for a in arms.values())
        if with_true:
            notes.append(
                f"Regret of {with_true} of {len(records)} studies uses the stored noise-free "
                "value (trial user attribute bilevel:true_value) of the incumbent, the trial "
                "with the best observed value."
            )
        if any(np.nanmin(a.values) < 0 for a in arms.values() if np.any(~np.isnan(a.values))):
            notes.append(
                "Some regrets are negative: an observed noisy value beat the known optimum."
            )
    testable = [c for c in comparisons if not math.isnan(c.pvalue)]
    if testable:
        m = len(testable)
        smallest = min(c.result.min_pvalue for c in testable)
        if smallest > alpha / m:
            notes.append(
                f"With {m} comparisons Holm's first threshold is alpha/{m} = {alpha / m:.3g}, "
                f"below the smallest attainable p-value {smallest:.3g}: no comparison can be "
                "significant. More repeats (seeds), or fewer comparisons (control=...), are "
                "needed."
            )
    no_power = [c for c in comparisons if c.no_power]
    if no_power:
        notes.append(
            f"Comparisons without power: {len(no_power)} of {len(comparisons)} (too few values "
            f"for any outcome to reach p < {alpha:g}); their p-values are reported as NaN, not "
            "as evidence."
        )
    return notes
