"""Joining a run from the storage alone: settings, the outer space, a worker on SQLite."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna._storage import open_storage
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.studies import BilevelSettings
from bilevel_optuna.studies import OuterSettings
from bilevel_optuna.studies import OuterSpace
from bilevel_optuna.studies import run_bilevel_study
from bilevel_optuna.studies import run_worker
from bilevel_optuna.studies._settings import load_settings
from bilevel_optuna.studies._settings import safe_model_spec
from bilevel_optuna.studies._workqueue import DONE
from bilevel_optuna.studies._workqueue import WorkQueue

#: No mechanism, no racing, random search as the one baseline: the smallest run.
BARE = BilevelSettings(
    outer=OuterSettings(space=OuterSpace(mechanisms=[]), baselines=("random",), prune=False)
)

SPEC = """
[run]
name = "join"
model = "uniform"

[inner]
objectives = [{{name = "sleep", base = "branin", seconds = 0.05}}]
n_trials = 4
n_repeats = 2

[outer]
n_trials = {n_outer}
prune = false
baselines = ["random"]

[outer.space]
mechanisms = ["tabu"]
"""


def test_the_outer_space_travels_as_a_plain_table() -> None:
    space = OuterSpace(temperature=0.5, history_size=IntDistribution(3, 9), mechanisms=["tabu"])
    config = space.to_config()
    assert config is not None
    again = OuterSpace.from_config(config)
    assert again.distributions() == space.distributions()
    assert again.settings["temperature"] == 0.5
    assert list(again.mechanisms) == ["tabu"]


def test_credentials_in_a_model_url_are_not_stored() -> None:
    assert safe_model_spec("openai:m@https://user:sk-secret@host/v1") == "openai:m@https://host/v1"
    assert safe_model_spec("local") == "local"


def test_an_unknown_run_names_the_runs_there(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/runs.db"
    run_bilevel_study(
        "sleep", storage=url, run_name="there", n_outer_trials=1, n_inner_trials=2,
        n_repeats=1, model="uniform", settings=BARE,
    )
    with pytest.raises(ConfigurationError, match=r"No bilevel run named 'elsewhere'.*\['there'\]"):
        load_settings(open_storage(url), "elsewhere")
    with pytest.raises(ConfigurationError, match="No SQLite file"):
        run_worker(storage=f"sqlite:///{tmp_path}/missing.db", run_name="there")


def test_a_worker_process_joins_with_the_url_and_name_alone(tmp_path: Path) -> None:
    spec = tmp_path / "join.toml"
    # Trials that sleep 0.4 s: the run lasts long enough for the worker to join it.
    spec.write_text(SPEC.format(n_outer=3).replace("seconds = 0.05", "seconds = 0.4"))
    url = f"sqlite:///{tmp_path}/join.db?heartbeat_interval=1&grace_period=3"
    cli = [sys.executable, "-m", "bilevel_optuna"]
    run = subprocess.Popen(
        [*cli, "run", str(spec), "--storage", url, "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )
    # The worker joins once the run exists (an unknown run is an error); it may still come
    # before the run has written its tasks, and then waits for them.
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            load_settings(open_storage(url), "join")
            break
        except ConfigurationError:
            time.sleep(0.2)
    worker = subprocess.run(
        [*cli, "worker", "--storage", url, "--run", "join"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out
    assert worker.returncode == 0, worker.stdout + worker.stderr
    storage = open_storage(url)
    outer = optuna.load_study(study_name="join", storage=storage)
    finished = outer.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 3 and len(outer.trials) == 3  # the budget, whatever the workers
    queue = WorkQueue(storage, "join")
    tasks = queue.tasks()
    assert {t.state for t in tasks} == {DONE}
    assert all(t.attempts == 1 for t in tasks)  # nobody died: nothing claimed twice
    doers = {t.worker for t in tasks}
    assert len(doers) == 2, doers  # both processes took part
    for trial in finished:
        for name in trial.user_attrs[_attrs.INNER_STUDIES]:
            inner = optuna.load_study(study_name=name, storage=storage)
            assert len(inner.get_trials(states=(TrialState.COMPLETE,))) == 4
    # Only the process that ran `run` reports; the worker says the run is complete.
    assert "best proposer configuration" in out
    assert "the run is complete" in worker.stdout


def test_a_journal_file_runs_in_one_process(tmp_path: Path) -> None:
    result = run_bilevel_study(
        "sleep", storage=str(tmp_path / "run.log"), run_name="journal", n_outer_trials=2,
        n_inner_trials=2, n_repeats=1, model="uniform", settings=BARE,
    )
    assert len(result.outer_study.get_trials(states=(TrialState.COMPLETE,))) == 2


def test_ctrl_c_hands_the_claim_back_at_once(tmp_path: Path) -> None:
    spec = tmp_path / "join.toml"
    spec.write_text(SPEC.format(n_outer=2).replace("seconds = 0.05", "seconds = 0.5"))
    url = f"sqlite:///{tmp_path}/join.db"
    run = subprocess.Popen(
        [sys.executable, "-m", "bilevel_optuna", "run", str(spec), "--storage", url, "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        # A shell's background job starts with SIGINT ignored, and Python then keeps ignoring
        # it: give the child the default, so that Python turns it into KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    running = []
    while time.time() < deadline and not running:
        time.sleep(0.3)
        try:
            running = [t for t in WorkQueue(open_storage(url), "join").tasks()
                       if t.state == "running"]
        except Exception:  # noqa: BLE001 - the run is still creating its tables
            continue
    assert running, "the run never claimed a task"
    run.send_signal(signal.SIGINT)
    out, _ = run.communicate(timeout=60)
    assert run.returncode == 130, out
    (task,) = [t for t in WorkQueue(open_storage(url), "join").tasks() if t.key == running[0].key]
    assert task.state == "waiting" and task.worker is None  # no grace period to wait out
    assert not [t for t in WorkQueue(open_storage(url), "join").tasks() if t.state == "running"]
