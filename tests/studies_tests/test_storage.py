"""Queued trials on one SQLite file shared by several processes: each runs exactly once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import optuna

from bilevel_optuna.studies._bilevel import make_storage


def _pop_all(url: str, out: str, serialize: bool) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(url)[0] if serialize else url
    study = optuna.load_study(study_name="queue", storage=storage)
    ran: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        ran.append(trial.number)
        return trial.suggest_float("x", 0, 1)

    while study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        try:
            study.optimize(objective, n_trials=1)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):  # another process ran it
            pass
    Path(out).write_text(",".join(map(str, ran)))


def _run(tmp_path: Path, serialize: bool) -> list[int]:
    url = f"sqlite:///{tmp_path}/queue.db"
    study = optuna.create_study(storage=url, study_name="queue")
    for i in range(150):
        study.enqueue_trial({"x": i / 150})
    ctx = multiprocessing.get_context("spawn")
    outs = [str(tmp_path / f"ran{i}.txt") for i in range(3)]
    procs = [ctx.Process(target=_pop_all, args=(url, out, serialize)) for out in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    ran: list[int] = []
    for out in outs:
        text = Path(out).read_text()
        ran += [int(n) for n in text.split(",") if n]
    return ran


def test_each_queued_trial_runs_once_across_processes_on_sqlite(tmp_path: Path) -> None:
    ran = _run(tmp_path, serialize=True)
    # A worker that finds the queue empty at its last pop runs one fresh trial (numbers >= 150).
    # Without the serialized transactions, queued trials ran twice here (160 runs for 150).
    assert sorted(n for n in ran if n < 150) == list(range(150))
