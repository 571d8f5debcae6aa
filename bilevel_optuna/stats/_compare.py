"""compare(): every statistic of a comparison of arms, from values stored in a storage."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
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
from bilevel_optuna.stats._between import Between
from bilevel_optuna.stats._between import between_arms
from bilevel_optuna.stats._between import finite
from bilevel_optuna.stats._hypothesis import SignificanceResult
from bilevel_optuna.stats._load import ArmsSpec
from bilevel_optuna.stats._load import StudyRecord
from bilevel_optuna.stats._load import load_arms
from bilevel_optuna.stats._noise import NoiseFloorResult
from bilevel_optuna.stats._noise import noise_floor as _noise_floor
from bilevel_optuna.stats._results import ArmSummary
from bilevel_optuna.stats._results import CompareResult
from bilevel_optuna.stats._results import PairwiseComparison
from bilevel_optuna.stats._settings import CompareSettings
from bilevel_optuna.stats._settings import NoiseFloorSpec
from bilevel_optuna.stats._settings import StudySelection
from bilevel_optuna.stats._settings import build
from bilevel_optuna.stats._summary import summarize

if TYPE_CHECKING:
    import optuna

_logger = get_logger(__name__)


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


def compare(
    storage: str | optuna.storages.BaseStorage,
    *,
    run: str | None = None,
    arms: ArmsSpec = None,
    n_trials: int | None = None,
    metric: str | None = None,
    control: str | None = None,
    selection: StudySelection | None = None,
    settings: CompareSettings | None = None,
    **deprecated: Any,
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
        run: The bilevel run whose studies are compared (``run`` of :class:`StudySelection`).
        arms: The arms to keep, or to make (``arms`` of :class:`StudySelection`).
        n_trials: The trial budget of every study (``n_trials`` of :class:`StudySelection`).
        metric: The per-study metric (``metric`` of :class:`CompareSettings`; ``"auto"``).
        control: Compare every arm with this one only (``control`` of :class:`CompareSettings`).
        selection: Which studies, as which arms; see :class:`StudySelection` (``kind``,
            ``objective``).
        settings: How they are tested; see :class:`CompareSettings` (``alpha``, ``paired``,
            the noise floor, the bootstrap).
        **deprecated: The keywords of earlier releases (``alpha``, ``paired``, ``kind``,
            ``noise_floor``, ...) still work with a :class:`FutureWarning` naming the field
            that replaces each.

    Returns:
        A :class:`CompareResult`.

    Example:
        .. code-block:: python

            from bilevel_optuna.stats import CompareSettings, compare

            result = compare(
                "sqlite:///runs.db",
                arms={"tpe": "tpe-*", "random": "random-*"},
                settings=CompareSettings(alpha=0.01),
            )
            print(result.to_text())
    """
    shortcuts = {"run": run, "arms": arms, "n_trials": n_trials, "metric": metric,
                 "control": control}  # fmt: skip
    selection, settings = build(selection, settings, shortcuts, deprecated)
    backend = open_storage(storage, read_only=True)
    loaded = load_arms(backend, **vars(selection))  # the selection's fields are its keywords
    _check_control(settings.control, loaded)
    measured = _measure(loaded, settings, backend)
    between = between_arms(
        loaded,
        measured.arm_summaries,
        measured.metric_values,
        settings=settings,
        floor=measured.floor,
        direction=measured.direction,
    )
    _logger.info(
        "Compared %d arms over %d studies (%s).",
        len(loaded), len(measured.records), measured.metric,
    )  # fmt: skip
    return _result(storage, selection, settings, loaded, measured, between)


@dataclass(frozen=True)
class _Measured:
    """Each study's curve and metric value, each arm's summary, and what they are measured in."""

    records: list[StudyRecord]
    metric: str
    quantity: str
    direction: str
    floor: NoiseFloorResult | None
    curves_by_study: dict[str, np.ndarray]
    metric_values: dict[str, float]
    arm_summaries: dict[str, ArmSummary]


def _measure(
    loaded: dict[str, list[StudyRecord]],
    settings: CompareSettings,
    backend: optuna.storages.BaseStorage,
) -> _Measured:
    records = [r for group in loaded.values() for r in group]
    metric, quantity, direction = _resolve_metric(settings.metric, records)
    floor = _resolve_noise_floor(settings.noise_floor, settings.noise_factor, backend)
    curves_by_study = {r.name: _study_curve(r, quantity) for r in records}
    metric_values = {r.name: _study_metric(curves_by_study[r.name], metric) for r in records}
    arm_summaries = {
        label: _arm_summary(label, group, curves_by_study, metric_values, quantity, settings)
        for label, group in loaded.items()
    }
    return _Measured(
        records, metric, quantity, direction, floor, curves_by_study, metric_values, arm_summaries
    )


def _result(
    storage: Any,
    selection: StudySelection,
    settings: CompareSettings,
    loaded: dict[str, list[StudyRecord]],
    m: _Measured,
    between: Between,
) -> CompareResult:
    notes = _notes(
        m.arm_summaries, m.records, between.comparisons, m.quantity, m.metric,
        selection.n_trials, settings.alpha,
    )  # fmt: skip
    return CompareResult(
        **_omnibus_fields(between.omnibus),
        arms=m.arm_summaries,
        comparisons=between.comparisons,
        posthoc=between.posthoc,
        curves={
            label: anytime_curve([m.curves_by_study[r.name] for r in group if not r.missing])
            for label, group in loaded.items()
        },
        noise_floor=m.floor,
        studies=m.records,
        metric=m.metric,
        direction=m.direction,
        curve_quantity=m.quantity,
        alpha=settings.alpha,
        n_trials=selection.n_trials,
        notes=notes + between.notes,
        settings=_record(storage, selection, settings, m.metric),
        omnibus=between.omnibus,
    )


def _omnibus_fields(omnibus: SignificanceResult | None) -> dict[str, Any]:
    """The result's own statistic, p-value and test name: the omnibus test's, where any."""
    if omnibus is None:
        return {"statistic": float("nan"), "pvalue": float("nan"), "test": "none"}
    return {"statistic": omnibus.statistic, "pvalue": omnibus.pvalue, "test": omnibus.test}


def _check_control(control: str | None, loaded: dict[str, list[StudyRecord]]) -> None:
    if control is not None and control not in loaded:
        close = difflib.get_close_matches(control, list(loaded), n=3)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ConfigurationError(
            f"control={control!r} is not an arm.{hint} Arms: {sorted(loaded)}."
        )


def _record(
    storage: Any, selection: StudySelection, settings: CompareSettings, metric: str
) -> dict[str, Any]:
    """The settings of a comparison as :attr:`CompareResult.settings` keeps them (the report
    prints them): the flat names of earlier releases, the metric as resolved."""
    arms = selection.arms
    return {
        "storage": storage_label(storage),
        "run": selection.run,
        "arms": arms if not isinstance(arms, Mapping) else dict(arms),
        "kind": selection.kind,
        "objective": selection.objective,
        "metric": metric,
        "n_trials": selection.n_trials,
        "paired": settings.paired,
        "control": settings.control,
        "alpha": settings.alpha,
        "noise_factor": settings.noise_factor,
        "confidence_level": settings.confidence_level,
        "n_resamples": settings.n_resamples,
        "seed": settings.seed,
    }


def _arm_summary(
    label: str,
    group: list[StudyRecord],
    curves_by_study: dict[str, np.ndarray],
    metric_values: dict[str, float],
    quantity: str,
    bootstrap: CompareSettings,
) -> ArmSummary:
    values = np.array([metric_values[r.name] for r in group], dtype=float)
    aucs = [normalized_auc(curves_by_study[r.name]) for r in group if not r.missing]
    lengths = [len(r.values) for r in group]
    summary = summarize(
        finite(values),
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
