"""The run's progress from its task table: what the bar in the run and ``status`` show."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import optuna
import pytest

from bilevel_optuna.studies import BilevelSettings
from bilevel_optuna.studies import OuterSettings
from bilevel_optuna.studies import OuterSpace
from bilevel_optuna.studies import run_bilevel_study
from bilevel_optuna.studies._progress import format_seconds
from bilevel_optuna.studies._progress import progress_bar_default
from bilevel_optuna.studies._progress import run_progress
from bilevel_optuna.studies._settings import RunSettings
from bilevel_optuna.studies._workqueue import Task

# A run's stored settings as version 1 wrote them (flat): read as they are still stored.
SETTINGS = RunSettings.from_dict(
    {
        "objectives": ["branin"],
        "objective_names": ["branin"],
        "heldout": ["hartmann6"],
        "heldout_names": ["hartmann6"],
        "base_dir": ".",
        "n_outer_trials": 3,
        "n_inner_trials": 5,
        "seeds": [0, 1],
        "heldout_seeds": [0, 1, 2],
        "aggregate": "regret",
        "baselines": ["random", "tpe"],
        "outer_sampler": "tpe",
        "space": None,
        "prune": True,
        "cost_objective": False,
        "seed": 0,
        "model": None,
        "stale_after": 60.0,
        "version": 1,
    }
)


def _task(key: str, kind: str, state: str, *, heartbeat: float | None = None, **payload) -> Task:
    return Task(
        id=key, run="r", key=key, kind=kind, priority=0, payload=payload, state=state,
        worker=None, attempts=0, heartbeat=heartbeat, outer_trial=None,
    )


def _start() -> list[Task]:
    """Baselines queued (2 arms x 2 seeds), one running; three outer slots waiting."""
    tasks = [
        _task(f"b{i}", "baseline", "done", heartbeat=100.0 + 10 * i, objective="branin")
        for i in range(3)
    ]
    tasks.append(_task("b3", "baseline", "running", objective="branin"))
    tasks += [_task(f"slot{k}", "outer", "waiting") for k in range(3)]
    return tasks


def test_the_total_counts_the_studies_every_part_of_the_run_will_hold() -> None:
    progress = run_progress(_start(), SETTINGS, outer_done=0)
    # 4 baselines + 3 outer trials x 2 repeats + held-out: 2 baselines x 3 seeds + 3 of the best.
    assert progress.total == 4 + 6 + 6 + 3
    assert (progress.done, progress.running, progress.n_outer) == (3, 1, 3)
    # The ETA reads the pace of the finished tasks: 10 s each, 16 studies left.
    assert progress.eta_s == pytest.approx(160.0)
    assert progress.line() == (
        "3 of 19 inner studies done, 1 running; outer trials 0 of 3 done; about 3 min left"
    )


def test_a_configuration_stopped_by_racing_leaves_the_total() -> None:
    tasks = _start()
    tasks[6] = _task("slot2", "outer", "done")
    tasks += [_task("c0", "inner", "done"), _task("c1", "inner", "cancelled")]
    progress = run_progress(tasks, SETTINGS, outer_done=1)
    assert progress.total == 4 + 1 + 2 * 2 + 6 + 3


def test_the_eta_grows_while_nothing_finishes_and_is_none_when_nothing_runs() -> None:
    tasks = _start()
    assert run_progress(tasks, SETTINGS, outer_done=0, now=400.0).eta_s == pytest.approx(
        16 * 100.0
    )
    idle = [t for t in tasks if t.state != "running"]
    assert run_progress(idle, SETTINGS, outer_done=0).eta_s is None


def test_format_seconds() -> None:
    assert [format_seconds(s) for s in (45, 600, 9000)] == ["45 s", "10 min", "2.5 h"]


def test_the_bar_is_on_in_a_terminal_only_unless_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress_bar_default(None) is False
    assert progress_bar_default(True) is True

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert progress_bar_default(None) is True
    assert progress_bar_default(False) is False


TINY = dict(
    run_name="bar",
    n_outer_trials=1,
    n_inner_trials=2,
    n_repeats=1,
    settings=BilevelSettings(
        outer=OuterSettings(
            baselines=("random",),
            space=OuterSpace(
                temperature=0.3, history_size=15, history_order="best", template="minimal",
                n_candidates=1, mechanisms=[],
            ),
        )
    ),
)


def test_a_run_shows_one_bar_and_no_optuna_info_lines_then_restores_the_verbosity(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    optuna.logging.set_verbosity(optuna.logging.DEBUG)
    try:
        run_bilevel_study(
            "branin", storage=f"sqlite:///{tmp_path}/r.db", show_progress_bar=True, **TINY
        )
        assert optuna.logging.get_verbosity() == optuna.logging.DEBUG
    finally:
        optuna.logging.set_verbosity(optuna.logging.INFO)
    err = capfd.readouterr().err
    assert "Trial 0 finished" not in err
    # One bar over the run: random's study, then the outer trial's; it ends full.
    assert "bar: 100%" in err and "2/2" in err, err[-2000:]
    assert "outer 1/1" in err


def test_optuna_verbosity_brings_optunas_lines_back(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    run_bilevel_study(
        "branin",
        storage=f"sqlite:///{tmp_path}/r.db",
        show_progress_bar=False,
        optuna_verbosity=optuna.logging.INFO,
        **TINY,
    )
    err = capfd.readouterr().err
    assert "Trial 0 finished" in err
    assert "100%" not in err
