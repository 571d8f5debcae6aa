"""Figures: PNG through matplotlib, one interactive HTML through plotly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bilevel_optuna.stats import compare
from bilevel_optuna.stats._plots import cd_groups


@pytest.mark.parametrize(
    ("ranks", "cd", "groups"),
    [
        ([1.0, 1.5, 3.0, 3.2], 1.0, [(0, 1), (2, 3)]),  # two cliques
        ([1.0, 1.5, 2.2, 3.0], 1.0, [(0, 1), (1, 2), (2, 3)]),  # overlapping runs
        ([1.0, 2.5, 4.0], 1.0, []),  # every pair differs
        ([2.0, 1.0, 3.0], 5.0, [(0, 2)]),  # all alike; ranks sorted first
    ],
)
def test_cd_groups(ranks: list[float], cd: float, groups: list[tuple[int, int]]) -> None:
    assert cd_groups(ranks, cd) == groups


def test_plots_png_and_html(demo_url: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    pytest.importorskip("plotly")
    result = compare(demo_url, run="demo")
    written = result.plot(tmp_path)
    assert set(written) == {"anytime", "distributions", "critical_difference", "interactive"}
    for name in ("anytime", "distributions", "critical_difference"):
        assert written[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = written["interactive"].read_text()
    assert html.count("Plotly.newPlot") == 3  # three figures, one embedded plotly.js
    assert "Critical difference diagram" in html
    assert 'src="https://cdn.plot.ly' not in html  # embedded: works offline
    cdn = result.plot(tmp_path / "cdn", formats=["html"], plotlyjs="cdn")
    assert set(cdn) == {"interactive"}
    assert 'src="https://cdn.plot.ly' in cdn["interactive"].read_text()
    assert cdn["interactive"].stat().st_size < written["interactive"].stat().st_size / 10


def test_two_arms_have_no_critical_difference_diagram(demo_url: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = compare(demo_url, run="demo", arms=["near", "far"])
    assert set(result.plot(tmp_path, formats=["png"])) == {"anytime", "distributions"}


def test_missing_matplotlib_names_the_pip_command(
    demo_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if absent
    result = compare(demo_url, run="demo", arms=["near", "far"])
    with pytest.raises(ImportError, match="pip install matplotlib"):
        result.plot(tmp_path, formats=["png"])


def test_plot_options_are_validated(demo_url: str, tmp_path: Path) -> None:
    result = compare(demo_url, run="demo", arms=["near", "far"])
    with pytest.raises(ValueError, match="formats"):
        result.plot(tmp_path, formats=["svg"])
    with pytest.raises(ValueError, match="plotlyjs"):
        result.plot(tmp_path, plotlyjs="inline")
