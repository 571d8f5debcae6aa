"""`bilevel-optuna compare` on a real SQLite storage."""

from __future__ import annotations

from pathlib import Path

import pytest
from stats_tests.conftest import Db

from bilevel_optuna.cli import main


def test_compare_prints_table_writes_report_and_plots(
    demo_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    pytest.importorskip("plotly")
    report = tmp_path / "out" / "report.md"
    plots = tmp_path / "out" / "plots"
    rc = main(
        [
            "compare",
            "--storage",
            demo_url,
            "--run",
            "demo",
            "--report",
            str(report),
            "--plots",
            str(plots),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "Friedman" in out and "far vs near" in out
    text = report.read_text()
    assert "## Claims" in text
    assert "![anytime](plots/anytime.png)" in text  # links relative to the report
    for name in ("anytime.png", "distributions.png", "critical_difference.png", "compare.html"):
        assert (plots / name).stat().st_size > 0


def test_compare_arms_by_pattern_and_by_list(
    demo_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        [
            "compare",
            "--storage",
            demo_url,
            "--metric",
            "best",
            "--n-trials",
            "5",
            "--arms",
            "near=demo-near-*",
            "far=" + ",".join(f"demo-far-{s}" for s in range(8)),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "best value, lower is better; budget: 5 trials" in out
    assert "near vs far" in out  # the order given and "Wilcoxon signed-rank" in out


def test_compare_with_noise_floor_values(
    demo_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        [
            "compare",
            "--storage",
            demo_url,
            "--run",
            "demo",
            "--arm",
            "near",
            "--arm",
            "mid",
            "--noise-floor",
            "0.1,0.3,0.2,0.25",
        ]
    )
    assert rc == 0
    assert "Noise floor: sd" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--run", "nope"], "No study of run 'nope'"),
        (["--arms", "x=zzz-*"], "no study name matches"),
        (["--run", "run", "--alpha", "3"], "alpha"),
    ],
)
def test_compare_errors_exit_1_with_a_message(
    db: Db, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db.add("a-0", [1.0], arm="a")
    rc = main(["compare", "--storage", db.url, *argv])
    assert rc == 1
    assert message in capsys.readouterr().err


def test_compare_needs_a_selection(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["compare", "--storage", "sqlite:///x.db"])
    assert "one of the arguments --run --arms is required" in capsys.readouterr().err
