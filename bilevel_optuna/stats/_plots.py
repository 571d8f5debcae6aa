"""Figures of a comparison: PNG through matplotlib, interactive HTML through plotly.

Both libraries are imported only here, when a figure is asked for, so the statistics work
without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

from bilevel_optuna._logging import get_logger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bilevel_optuna.stats._results import CompareResult

_logger = get_logger(__name__)
_FORMATS = ("png", "html")
_PLOTLYJS = ("embed", "cdn")
_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def _require(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = module.split(".")[0]
        raise ImportError(
            f"{what} needs {package}: pip install {package} "
            "(or pip install 'bilevel-optuna[plots]')."
        ) from err


def _color(i: int) -> str:
    return _COLORS[i % len(_COLORS)]


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _y_label(result: CompareResult) -> str:
    return "regret" if result.curve_quantity == "regret" else "best value"


def _metric_label(result: CompareResult) -> str:
    return {"best": "best value", "regret": "regret", "auc": f"AUC ({result.curve_quantity})"}[
        result.metric
    ]


def _cd_title(result: CompareResult, newline: str) -> str:
    ph = result.posthoc
    assert ph is not None
    title = f"Critical difference diagram (Nemenyi, alpha = {ph.alpha:g}); rank 1 is best"
    if ph.licensed is False:  # Demsar 2006: only after Friedman rejects
        title += (
            f"{newline}NOT LICENSED: Friedman p = {result.pvalue:.3g} >= alpha; reference only"
        )
    return title


def cd_groups(ranks: np.ndarray, cd: float) -> list[tuple[int, int]]:
    """Maximal runs (i, j) of arms sorted by rank whose rank range is within ``cd``.

    Arms inside one run are not significantly different by Nemenyi's test; the diagram joins
    them with a bar. Indices refer to the ascending sort of ``ranks``.
    """
    r = np.sort(np.asarray(ranks, dtype=float))
    groups: list[tuple[int, int]] = []
    last_end = -1
    for i in range(r.size):
        j = i
        while j + 1 < r.size and r[j + 1] - r[i] <= cd:
            j += 1
        if j > i and j > last_end:
            groups.append((i, j))
            last_end = j
    return groups


# --- matplotlib (PNG) -------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    figure_module = _require("matplotlib.figure", "PNG plots")
    return figure_module.Figure(figsize=(width, height), dpi=120, layout="constrained")


def _png_anytime(result: CompareResult, path: Path) -> None:
    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    for i, (label, curve) in enumerate(result.curves.items()):
        ax.plot(curve.trials, curve.median, color=_color(i), label=f"{label} (median)")
        ax.fill_between(
            curve.trials, curve.low, curve.high, color=_color(i), alpha=0.2, linewidth=0
        )
    q_low, q_high = next(iter(result.curves.values())).quantiles if result.curves else (0.25, 0.75)
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{_y_label(result)} so far")
    ax.set_title(f"Anytime curves: median, band {q_low:.0%} to {q_high:.0%}")
    if result.curve_quantity == "regret" and _all_positive(result):
        ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.savefig(path)


def _all_positive(result: CompareResult) -> bool:
    lows = [c.low[~np.isnan(c.low)] for c in result.curves.values()]
    return all(x.size == 0 or np.all(x > 0) for x in lows) and any(x.size for x in lows)


def _png_distributions(result: CompareResult, path: Path) -> None:
    fig = _figure(max(4.0, 1.2 * len(result.arms) + 2), 4.5)
    ax = fig.add_subplot()
    labels = list(result.arms)
    data = [a.values[~np.isnan(a.values)] for a in result.arms.values()]
    ax.boxplot(data, tick_labels=labels, showfliers=False, widths=0.5)
    rng = np.random.default_rng(0)
    for i, values in enumerate(data):
        x = i + 1 + rng.uniform(-0.12, 0.12, size=values.size)
        ax.scatter(x, values, s=14, color=_color(i), alpha=0.7, zorder=3)
    ax.set_ylabel(_metric_label(result))
    better = "lower" if result.direction == "minimize" else "higher"
    ax.set_title(f"Per-study {_metric_label(result)} ({better} is better)")
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path)


def _png_critical_difference(result: CompareResult, path: Path) -> None:
    ph = result.posthoc
    assert ph is not None
    k = len(ph.arms)
    order = np.argsort(ph.average_ranks, kind="stable")
    ranks = ph.average_ranks[order]
    names = [ph.arms[i] for i in order]
    half = (k + 1) // 2
    fig = _figure(7, 1.2 + 0.35 * half)
    ax = fig.add_subplot()
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(-(half + 1.5), 1.6)
    ax.axis("off")
    ax.plot([1, k], [0, 0], color="black", linewidth=1)
    for r in range(1, k + 1):
        ax.plot([r, r], [0, 0.12], color="black", linewidth=1)
        ax.text(r, 0.2, str(r), ha="center", va="bottom", fontsize=9)
    # The critical difference, drawn to scale from rank 1.
    ax.plot([1, 1 + ph.statistic], [1.2, 1.2], color="black", linewidth=2)
    ax.text(1 + ph.statistic / 2, 1.3, f"CD = {ph.statistic:.2f}", ha="center", fontsize=9)
    for i, (name, r) in enumerate(zip(names, ranks)):
        left = i < half
        row = -(i + 1) if left else -(k - i)
        x_text = 0.6 if left else k + 0.4
        ax.plot([r, r, x_text], [0, row, row], color="black", linewidth=0.8)
        ax.text(
            x_text,
            row + 0.1,
            f"{name} ({r:.2f})",
            ha="left" if left else "right",
            va="bottom",
            fontsize=9,
        )
    for n, (i, j) in enumerate(cd_groups(ranks, ph.statistic)):
        y = -0.35 - 0.18 * n
        ax.plot([ranks[i] - 0.03, ranks[j] + 0.03], [y, y], color="#444444", linewidth=3)
    ax.set_title(_cd_title(result, "\n"), fontsize=10)
    fig.savefig(path)


# --- plotly (HTML) ----------------------------------------------------------------------------


def _plotly_anytime(result: CompareResult) -> Any:
    go = _require("plotly.graph_objects", "HTML plots")
    fig = go.Figure()
    for i, (label, curve) in enumerate(result.curves.items()):
        x = curve.trials.tolist()
        fig.add_trace(
            go.Scatter(
                x=x,
                y=curve.high.tolist(),
                mode="lines",
                line={"width": 0},
                legendgroup=label,
                showlegend=False,
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=curve.low.tolist(),
                mode="lines",
                line={"width": 0},
                fill="tonexty",
                fillcolor=_rgba(_color(i), 0.2),
                legendgroup=label,
                showlegend=False,
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=curve.median.tolist(),
                mode="lines",
                name=label,
                legendgroup=label,
                line={"color": _color(i)},
                customdata=np.column_stack([curve.low, curve.high, curve.n]).tolist(),
                hovertemplate=(
                    f"{label}<br>trial %{{x}}<br>median %{{y:.4g}}<br>"
                    "band %{customdata[0]:.4g} to %{customdata[1]:.4g}<br>"
                    "studies %{customdata[2]}<extra></extra>"
                ),
            )
        )
    fig.update_layout(
        title="Anytime curves: median and 25-75% band",
        xaxis_title="trial",
        yaxis_title=f"{_y_label(result)} so far",
        template="plotly_white",
    )
    if result.curve_quantity == "regret" and _all_positive(result):
        fig.update_yaxes(type="log")
    return fig


def _plotly_distributions(result: CompareResult) -> Any:
    go = _require("plotly.graph_objects", "HTML plots")
    fig = go.Figure()
    for i, (label, arm) in enumerate(result.arms.items()):
        finite = ~np.isnan(arm.values)
        names = [n for n, f in zip(arm.study_names, finite) if f]
        fig.add_trace(
            go.Box(
                y=arm.values[finite].tolist(),
                name=label,
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                marker={"color": _color(i)},
                text=names,
                hovertemplate="%{text}: %{y:.4g}<extra></extra>",
            )
        )
    fig.update_layout(
        title=f"Per-study {_metric_label(result)}",
        yaxis_title=_metric_label(result),
        template="plotly_white",
        showlegend=False,
    )
    return fig


def _plotly_critical_difference(result: CompareResult) -> Any:
    go = _require("plotly.graph_objects", "HTML plots")
    ph = result.posthoc
    assert ph is not None
    k = len(ph.arms)
    order = np.argsort(ph.average_ranks, kind="stable")
    ranks = ph.average_ranks[order]
    names = [ph.arms[i] for i in order]
    half = (k + 1) // 2
    fig = go.Figure()
    line = {"color": "black", "width": 1}
    fig.add_trace(go.Scatter(x=[1, k], y=[0, 0], mode="lines", line=line, hoverinfo="skip"))
    fig.add_trace(
        go.Scatter(
            x=[1, 1 + ph.statistic],
            y=[1, 1],
            mode="lines",
            line={"color": "black", "width": 3},
            hoverinfo="skip",
        )
    )
    fig.add_annotation(
        x=1 + ph.statistic / 2, y=1.3, text=f"CD = {ph.statistic:.2f}", showarrow=False
    )
    for r in range(1, k + 1):
        fig.add_annotation(x=r, y=0.3, text=str(r), showarrow=False)
    for i, (name, r) in enumerate(zip(names, ranks)):
        left = i < half
        row = -(i + 1) if left else -(k - i)
        x_text = 0.6 if left else k + 0.4
        fig.add_trace(
            go.Scatter(
                x=[r, r, x_text],
                y=[0, row, row],
                mode="lines",
                line=line,
                hovertemplate=f"{name}: average rank {r:.3f}<extra></extra>",
            )
        )
        fig.add_annotation(
            x=x_text,
            y=row + 0.25,
            text=f"{name} ({r:.2f})",
            showarrow=False,
            xanchor="left" if left else "right",
        )
    for n, (i, j) in enumerate(cd_groups(ranks, ph.statistic)):
        y = -0.35 - 0.18 * n
        fig.add_trace(
            go.Scatter(
                x=[ranks[i] - 0.03, ranks[j] + 0.03],
                y=[y, y],
                mode="lines",
                line={"color": "#444444", "width": 5},
                hoverinfo="skip",
            )
        )
    fig.update_layout(
        title=_cd_title(result, "<br>"),
        showlegend=False,
        template="plotly_white",
        height=220 + 30 * half,
        xaxis={"visible": False, "range": [0.3, k + 0.7]},
        yaxis={"visible": False, "range": [-(half + 1), 1.6]},
    )
    return fig


def write_plots(
    result: CompareResult,
    directory: str | Path,
    *,
    formats: Sequence[str] = _FORMATS,
    plotlyjs: str = "embed",
) -> dict[str, Path]:
    """Write ``anytime``, ``distributions`` and (after Friedman) ``critical_difference``.

    PNG files go one per figure; HTML goes into one ``compare.html`` holding every figure,
    with plotly.js embedded once (``plotlyjs="embed"``, works offline) or loaded from the CDN.
    """
    unknown = set(formats) - set(_FORMATS)
    if unknown:
        raise ValueError(
            f"`formats` must be a subset of {set(_FORMATS)} but got {sorted(unknown)}."
        )
    if plotlyjs not in _PLOTLYJS:
        raise ValueError(f"`plotlyjs` must be one of {set(_PLOTLYJS)} but got {plotlyjs!r}.")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    has_cd = result.posthoc is not None
    if "png" in formats:
        figures = [("anytime", _png_anytime), ("distributions", _png_distributions)]
        if has_cd:
            figures.append(("critical_difference", _png_critical_difference))
        for name, draw in figures:
            path = out / f"{name}.png"
            draw(result, path)
            written[name] = path
    if "html" in formats:
        builders = [_plotly_anytime, _plotly_distributions]
        if has_cd:
            builders.append(_plotly_critical_difference)
        parts = []
        for i, build in enumerate(builders):
            include: str | bool = (True if plotlyjs == "embed" else "cdn") if i == 0 else False
            parts.append(build(result).to_html(full_html=False, include_plotlyjs=include))
        html = (
            '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
            "<title>bilevel-optuna comparison</title></head><body>\n"
            + "\n".join(parts)
            + "\n</body></html>\n"
        )
        path = out / "compare.html"
        path.write_text(html, encoding="utf-8")
        written["interactive"] = path
    _logger.info("Wrote %d plot files to %s.", len(written), out)
    return written
