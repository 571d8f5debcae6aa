"""The result types of :func:`~bilevel_optuna.stats.compare`, as scipy.stats returns them.

Renderings are functions over a result, as in ``optuna.visualization``:
:func:`~bilevel_optuna.stats.to_text`, :func:`~bilevel_optuna.stats.to_markdown` and
:func:`~bilevel_optuna.stats.write_plots`; the methods of :class:`CompareResult` are thin
aliases of them. Imports go one way: this module uses the report and plot modules, which
name these types for type checking only.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

from bilevel_optuna.stats import _plots
from bilevel_optuna.stats import _report
from bilevel_optuna.stats._anytime import AnytimeCurve
from bilevel_optuna.stats._effect import A12Result
from bilevel_optuna.stats._hypothesis import NemenyiResult
from bilevel_optuna.stats._hypothesis import SignificanceResult
from bilevel_optuna.stats._load import StudyRecord
from bilevel_optuna.stats._noise import NoiseFloorResult
from bilevel_optuna.stats._summary import Summary

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True)
class ArmSummary(Summary):
    """:class:`Summary` of one arm's per-study metric, plus how its studies were counted.

    Attributes:
        label: The arm.
        values: Per-study metric, in the order of ``study_names`` (NaN for a missing study).
        study_names: The arm's studies.
        n_studies: Studies selected for the arm.
        n_missing: Studies with no complete trial within the budget: they have no value and are
            left out of every statistic.
        n_complete: Complete trials over the arm's studies, within the budget.
        n_failed: Failed trials (counted in the budget, never as values).
        n_pruned: Pruned trials (likewise).
        n_unfinished: Running or waiting trials (likewise).
        min_trials: Fewest trials a study of the arm has within the budget.
        max_trials: Most trials.
        auc_median: Median over studies of the normalized area under the anytime curve.
        n_true_values: Studies whose regret used stored true values.
    """

    label: str = ""
    values: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    study_names: list[str] = field(default_factory=list, repr=False)
    n_studies: int = 0
    n_missing: int = 0
    n_complete: int = 0
    n_failed: int = 0
    n_pruned: int = 0
    n_unfinished: int = 0
    min_trials: int = 0
    max_trials: int = 0
    auc_median: float = float("nan")
    n_true_values: int = 0


@dataclass(frozen=True)
class PairwiseComparison:
    """One comparison between two arms.

    Attributes:
        statistic: The test statistic (see :class:`SignificanceResult`).
        pvalue: The raw two-sided p-value (NaN with no power or degenerate data).
        pvalue_holm: The Holm-adjusted p-value across all comparisons of the result.
        arm_a: First arm.
        arm_b: Second arm.
        test: ``"wilcoxon"`` (paired by seed) or ``"mannwhitneyu"``.
        paired: Whether the studies were paired by (objective, seed).
        n_a: Values of ``arm_a`` used (pairs, when paired).
        n_b: Values of ``arm_b`` used.
        n_dropped: Studies of the two arms left out: missing, or without a partner when paired.
        a12: Vargha-Delaney A12 of ``arm_a`` over ``arm_b`` (above 0.5: ``arm_a`` better).
        median_a: Median of ``arm_a``'s values used.
        median_b: Median of ``arm_b``'s values used.
        difference: ``median_a - median_b``.
        inside_noise_floor: Whether ``|difference|`` is below the noise-floor threshold; None
            without a noise floor.
        significant: ``pvalue_holm < alpha``.
        better: The better arm when significant and outside the noise floor, else None.
        verdict: One line for tables: "tpe better", "no significant difference", "no power",
            "inside noise floor", ...
        result: The underlying :class:`SignificanceResult` (n, smallest attainable p, note).
    """

    statistic: float
    pvalue: float
    pvalue_holm: float
    arm_a: str
    arm_b: str
    test: str
    paired: bool
    n_a: int
    n_b: int
    n_dropped: int
    a12: A12Result
    median_a: float
    median_b: float
    difference: float
    inside_noise_floor: bool | None
    significant: bool
    better: str | None
    verdict: str
    result: SignificanceResult = field(repr=False)

    @property
    def no_power(self) -> bool:
        return self.result.no_power

    @property
    def degenerate(self) -> bool:
        return self.result.degenerate


@dataclass(frozen=True)
class CompareResult:
    """Outcome of :func:`compare`.

    Attributes:
        statistic: The omnibus statistic: Friedman (paired, 3+ arms), Kruskal-Wallis (unpaired,
            3+ arms), or the single pairwise test (2 arms). NaN with one arm.
        pvalue: Its p-value.
        test: Its name, or ``"none"``.
        arms: Per-arm summaries, by label.
        comparisons: Pairwise comparisons, Holm-adjusted together.
        posthoc: Nemenyi test and critical difference after Friedman, else None.
        curves: Anytime curve per arm (best so far, or regret, by trial number).
        noise_floor: The noise floor used, or None.
        studies: Every study read, in arm order.
        metric: The metric compared: ``"best"``, ``"regret"`` or ``"auc"``.
        direction: Direction of the metric (regret is always minimized).
        curve_quantity: What the curves and AUC are in: ``"value"`` or ``"regret"``.
        alpha: Significance level.
        n_trials: The trial budget, or None for all trials.
        notes: Sentences on how data were counted and what limits the conclusions.
        settings: The options of the call (the storage URL without its password).
    """

    statistic: float
    pvalue: float
    test: str
    arms: dict[str, ArmSummary]
    comparisons: list[PairwiseComparison]
    posthoc: NemenyiResult | None
    curves: dict[str, AnytimeCurve]
    noise_floor: NoiseFloorResult | None
    studies: list[StudyRecord] = field(repr=False)
    metric: str
    direction: str
    curve_quantity: str
    alpha: float
    n_trials: int | None
    notes: list[str]
    settings: dict[str, Any] = field(repr=False)
    omnibus: SignificanceResult | None = field(default=None, repr=False)

    def comparison(self, arm_a: str, arm_b: str) -> PairwiseComparison:
        """The comparison of two arms, in either order (A12 and the difference follow the order
        stored: check ``arm_a``)."""
        for c in self.comparisons:
            if {c.arm_a, c.arm_b} == {arm_a, arm_b}:
                return c
        raise KeyError(f"No comparison between {arm_a!r} and {arm_b!r}.")

    @property
    def claims(self) -> list[str]:
        """Sentences for the comparisons that show an improvement (see :meth:`CompareResult.to_markdown`)."""
        return _report.claims(self)

    def to_text(self) -> str:
        """Aligned plain-text tables for a terminal."""
        return _report.to_text(self)

    def to_markdown(self, *, plots: Mapping[str, str | Path] | None = None) -> str:
        """A Markdown report; ``plots`` maps figure names to image paths to link."""
        return _report.to_markdown(self, plots=plots)

    def plot(
        self,
        directory: str | Path,
        *,
        formats: Sequence[str] = ("png", "html"),
        plotlyjs: str = "embed",
    ) -> dict[str, Path]:
        """Write the figures (anytime curves, distributions, critical difference diagram).

        PNG needs matplotlib and HTML needs plotly (``pip install matplotlib plotly``). Returns
        ``{name: path}`` of the files written.
        """
        return _plots.write_plots(self, directory, formats=formats, plotlyjs=plotlyjs)
