"""Plain-text and Markdown renderings of a :class:`CompareResult`."""

from __future__ import annotations

import datetime
import math
from typing import TYPE_CHECKING

from bilevel_optuna._version import __version__

if TYPE_CHECKING:
    from collections.abc import Mapping
    from collections.abc import Sequence
    from pathlib import Path

    from bilevel_optuna.stats._results import CompareResult

_TEST_NAMES = {
    "wilcoxon": "Wilcoxon signed-rank",
    "mannwhitneyu": "Mann-Whitney U",
    "friedman": "Friedman",
    "kruskal": "Kruskal-Wallis",
    "none": "none",
}
_SHORT_METRIC = {"best": "best value", "regret": "regret", "auc": "AUC"}
_METRIC_NAMES = {
    "best": "best value",
    "regret": "regret",
    "auc": "normalized area under the anytime curve",
}


def _num(x: float, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}g}"


def _p(x: float) -> str:
    if math.isnan(x):
        return "-"
    return "<1e-4" if x < 1e-4 else f"{x:.4f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: Sequence[str]) -> str:
        # First column (labels) left-aligned, numbers right-aligned.
        return "  ".join(
            c.ljust(w) if i == 0 or not _numeric(c) else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _numeric(cell: str) -> bool:
    try:
        float(cell.split(" ")[0].lstrip("<"))
    except ValueError:
        return False
    return True


def _metric_label(result: CompareResult) -> str:
    name = _METRIC_NAMES[result.metric]
    if result.metric == "auc":
        name += f" ({result.curve_quantity})"
    return f"{name}, {'lower' if result.direction == 'minimize' else 'higher'} is better"


def _arm_rows(result: CompareResult) -> list[list[str]]:
    rows = []
    for label, arm in result.arms.items():
        rows.append(
            [
                label,
                str(arm.n),
                str(arm.n_missing),
                _num(arm.median),
                f"{_num(arm.q25)} to {_num(arm.q75)}",
                f"{_num(arm.mean)} [{_num(arm.mean_ci_low)}, {_num(arm.mean_ci_high)}]",
                _num(arm.auc_median),
                (
                    f"{arm.min_trials}"
                    if arm.min_trials == arm.max_trials
                    else f"{arm.min_trials}-{arm.max_trials}"
                ),
                f"{arm.n_failed}/{arm.n_pruned}",
            ]
        )
    return rows


_ARM_HEADERS = [
    "arm",
    "n",
    "missing",
    "median",
    "IQR (q25 to q75)",
    "mean [95% CI]",
    "AUC median",
    "trials",
    "failed/pruned",
]


def _comparison_rows(result: CompareResult) -> list[list[str]]:
    rows = []
    for c in result.comparisons:
        n = f"{c.n_a} pairs" if c.paired else f"{c.n_a}+{c.n_b}"
        rows.append(
            [
                f"{c.arm_a} vs {c.arm_b}",
                _TEST_NAMES[c.test],
                n,
                _num(c.difference),
                _p(c.pvalue),
                _p(c.pvalue_holm),
                (
                    f"{c.a12.statistic:.2f} [{c.a12.ci_low:.2f}, {c.a12.ci_high:.2f}]"
                    if not math.isnan(c.a12.statistic)
                    else "-"
                ),
                c.verdict,
            ]
        )
    return rows


_COMPARISON_HEADERS = [
    "comparison",
    "test",
    "n",
    "median diff",
    "p",
    "p (Holm)",
    "A12 [95% CI]",
    "verdict",
]


def _omnibus_line(result: CompareResult) -> str:
    o = result.omnibus
    if o is None:
        return "Omnibus test: none (one arm)."
    name = _TEST_NAMES[o.test]
    if o.degenerate:
        return f"{name}: no test ({o.note})."
    unit = {"friedman": "blocks", "wilcoxon": "nonzero pairs"}.get(o.test, "values")
    if o.no_power:
        return f"{name}: statistic {_num(o.statistic)}, no power ({o.note})."
    return f"{name}: statistic {_num(o.statistic)}, p = {_p(o.pvalue)} ({o.n} {unit})."


def posthoc_caveat(result: CompareResult) -> str:
    """`` (not licensed: ...)`` where Friedman did not reject, else nothing (Demsar 2006)."""
    ph = result.posthoc
    if ph is None or ph.licensed is not False:
        return ""
    return (
        f" (not licensed: Friedman p = {_p(result.pvalue)} is not below alpha = "
        f"{result.alpha:g}; for reference only)"
    )


def claims(result: CompareResult) -> list[str]:
    """One sentence per comparison that shows an improvement, with n, test, p and A12."""
    out = []
    for c in result.comparisons:
        if c.better is None:
            continue
        loser = c.arm_b if c.better == c.arm_a else c.arm_a
        a12 = c.a12.statistic if c.better == c.arm_a else 1.0 - c.a12.statistic
        low, high = (
            (c.a12.ci_low, c.a12.ci_high)
            if c.better == c.arm_a
            else (1.0 - c.a12.ci_high, 1.0 - c.a12.ci_low)
        )
        med_w, med_l = (
            (c.median_a, c.median_b) if c.better == c.arm_a else (c.median_b, c.median_a)
        )
        n = f"n = {c.n_a} pairs" if c.paired else f"n = {c.n_a} and {c.n_b}"
        out.append(
            f"{c.better} beats {loser}: median {_SHORT_METRIC[result.metric]} {_num(med_w)} vs "
            f"{_num(med_l)} "
            f"({n}, {_TEST_NAMES[c.test]}, p = {_p(c.pvalue)}, Holm-adjusted p = "
            f"{_p(c.pvalue_holm)}, A12 = {a12:.2f} [{low:.2f}, {high:.2f}], {c.a12.magnitude})."
        )
    return out


def to_text(result: CompareResult) -> str:
    """Aligned tables and notes for a terminal."""
    parts = [
        f"Metric: {_metric_label(result)}; budget: "
        f"{result.n_trials if result.n_trials else 'all'} trials; alpha = {result.alpha:g} "
        "(Holm-adjusted)",
        "",
        _table(_ARM_HEADERS, _arm_rows(result), markdown=False),
        "",
        _omnibus_line(result),
    ]
    if result.comparisons:
        parts += ["", _table(_COMPARISON_HEADERS, _comparison_rows(result), markdown=False)]
    if result.posthoc is not None:
        ph = result.posthoc
        ranks = ", ".join(f"{a} {r:.2f}" for a, r in zip(ph.arms, ph.average_ranks))
        parts += [
            "",
            f"Nemenyi critical difference {ph.statistic:.3f}{posthoc_caveat(result)}; "
            f"average ranks: {ranks}",
        ]
    if result.noise_floor is not None:
        parts += ["", _noise_line(result)]
    found = claims(result)
    parts += [
        "",
        (
            "Claims:"
            if found
            else "Claims: none (no significant difference outside " "the noise floor)."
        ),
    ]
    parts += [f"  - {c}" for c in found]
    parts += ["", "Notes:"] + [f"  - {n}" for n in result.notes]
    return "\n".join(parts) + "\n"


def _noise_line(result: CompareResult) -> str:
    nf = result.noise_floor
    assert nf is not None
    if math.isnan(nf.sd):
        return "Noise floor: undefined (fewer than 2 repeated evaluations)."
    source = f"{nf.n} repeated evaluations ({nf.source})" if nf.n else "given"
    ci = "" if math.isnan(nf.ci_low) else f" [{_num(nf.ci_low)}, {_num(nf.ci_high)}]"
    return (
        f"Noise floor: sd {_num(nf.sd)}{ci} from {source}; differences of medians below "
        f"{nf.noise_factor:g} x sd = {_num(nf.threshold)} are labelled inside noise floor."
    )


def to_markdown(result: CompareResult, *, plots: Mapping[str, str | Path] | None = None) -> str:
    """A Markdown report: setup, data counts, summaries, tests, claims, plots, method."""
    out = _md_setup(result)
    out += [
        "## Arms",
        "",
        _table(_ARM_HEADERS, _arm_rows(result), markdown=True),
        "",
        "n: studies with a value; missing: studies with no complete trial; trials: trials per "
        "study within the budget; failed/pruned: trials over all the arm's studies.",
        "",
    ]
    out += _md_tests(result)
    found = claims(result)
    out += ["## Claims", ""]
    out += (
        [f"- {c}" for c in found]
        if found
        else ["No arm is better than another at this significance level outside the noise floor."]
    )
    out += [""]
    if plots:
        out += ["## Plots", ""]
        for name, path in plots.items():
            path = str(path)
            if path.endswith(".png"):
                out += [f"![{name}]({path})", ""]
            else:
                out += [f"- [{name}: every figure, interactive (HTML)]({path})", ""]
    out += ["## Notes", ""] + [f"- {n}" for n in result.notes] + [""]
    out += _MD_METHOD
    out += ["## Studies", "", _md_studies(result), ""]
    return "\n".join(out)


def _md_setup(result: CompareResult) -> list[str]:
    """The report's title and what was compared, how."""
    s = result.settings
    if s.get("run") is not None:
        selection = f"run `{s['run']}`" + (f", arms {s['arms']}" if s.get("arms") else "")
    else:
        selection = f"arms {s['arms']}"
    return [
        "# Comparison report",
        "",
        f"- Generated: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} by "
        f"bilevel-optuna {__version__}",
        f"- Storage: `{s['storage']}`",
        f"- Selection: {selection}" + (f", kind {s['kind']}" if s.get("kind") else ""),
        f"- Metric: {_metric_label(result)}",
        f"- Trial budget: {result.n_trials if result.n_trials else 'all trials'}",
        f"- Significance level: {result.alpha:g}, on Holm-adjusted p-values; bootstrap "
        f"intervals at {s['confidence_level']:g} with {s['n_resamples']} resamples (seed "
        f"{s['seed']})",
        "",
    ]


def _md_tests(result: CompareResult) -> list[str]:
    """The omnibus test, the pairwise table, the post-hoc ranks and the noise floor."""
    out = ["## Tests", "", _omnibus_line(result), ""]
    if result.comparisons:
        out += [_table(_COMPARISON_HEADERS, _comparison_rows(result), markdown=True), ""]
        out += [
            "A12 is the probability that a study of the first arm beats one of the second "
            "(0.5: no effect); median diff is first minus second.",
            "",
        ]
    if result.posthoc is not None:
        ph = result.posthoc
        out += [
            f"Nemenyi post-hoc: critical difference {ph.statistic:.3f} (q = {ph.q_alpha:.3f}, "
            f"{ph.n_blocks} blocks){posthoc_caveat(result)}; average ranks (1 is best): "
            + ", ".join(f"{a} {r:.2f}" for a, r in zip(ph.arms, ph.average_ranks)),
            "",
        ]
    if result.noise_floor is not None:
        out += [_noise_line(result), ""]
    return out


def _md_studies(result: CompareResult) -> str:
    """One row per study: its arm, counts and metric value."""
    return _table(
        ["arm", "study", "objective", "seed", "complete", "failed", "pruned", result.metric],
        [
            [
                r.arm,
                r.name,
                str(r.objective),
                str(r.seed),
                str(r.n_complete),
                str(r.n_failed),
                str(r.n_pruned),
                _num(result.arms[r.arm].values[i]),
            ]
            for r in result.studies
            for i in [result.arms[r.arm].study_names.index(r.name)]
        ],
        markdown=True,
    )


_MD_METHOD = [
    "## Method",
    "",
    "- Per study, the metric is computed from the trial values read from the storage: "
    "best value, regret (best minus the known optimum, direction-aware), or the mean of "
    "the best-so-far curve over the trials counted (normalized area under the curve).",
    "- Arms whose studies pair by (objective, seed) are compared with the two-sided "
    "Wilcoxon signed-rank test (zero differences dropped), others with the two-sided "
    "Mann-Whitney U test; three or more arms get a Friedman test (paired) with Nemenyi "
    "post-hoc ranks, or Kruskal-Wallis (unpaired). All pairwise p-values are adjusted "
    "together with Holm's method.",
    "- A test with no power (its smallest attainable p-value, e.g. 2/2^n for Wilcoxon on "
    "n pairs, is above alpha) gets no p-value.",
    "- A12 (Vargha-Delaney) with a percentile bootstrap interval; magnitude thresholds "
    "0.56 / 0.64 / 0.71.",
    "- An improvement is claimed only when the Holm-adjusted p-value is below alpha and the "
    "difference of medians is outside the noise floor (when one is given).",
    "",
]
