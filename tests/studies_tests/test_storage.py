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


# --- open_storage: one function for URLs, journal files and storage objects ---

import pytest  # noqa: E402

from bilevel_optuna._storage import STORAGE_ENV  # noqa: E402
from bilevel_optuna._storage import has_heartbeat  # noqa: E402
from bilevel_optuna._storage import open_storage  # noqa: E402
from bilevel_optuna.exceptions import ConfigurationError  # noqa: E402


def test_the_storage_comes_from_optuna_storage_when_none_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/from-env.db"
    monkeypatch.setenv(STORAGE_ENV, url)
    storage = open_storage(None)
    assert isinstance(storage, optuna.storages.RDBStorage) and storage.url == url
    assert has_heartbeat(storage)


def test_a_journal_file_opens_without_heartbeats(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "run.log"))
    assert isinstance(storage, optuna.storages.JournalStorage)
    assert not has_heartbeat(storage)
    optuna.create_study(storage=storage, study_name="s").optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=2
    )
    reopened = open_storage(str(tmp_path / "run.log"), read_only=True)
    assert len(optuna.load_study(study_name="s", storage=reopened).trials) == 2


@pytest.mark.parametrize("as_object", [False, True])
def test_heartbeats_on_a_journal_storage_are_a_clear_error(
    tmp_path: Path, as_object: bool
) -> None:
    path = str(tmp_path / "run.log")
    storage = open_storage(path) if as_object else path
    with pytest.raises(ConfigurationError, match="no heartbeats.*RDB URL"):
        open_storage(storage, heartbeat=True)


def test_reading_a_journal_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="No journal file"):
        open_storage(str(tmp_path / "missing.log"), read_only=True)
    assert not (tmp_path / "missing.log").exists()


# --- a spec's [run] storage_options ---

from bilevel_optuna.studies import BilevelSpec  # noqa: E402
from bilevel_optuna.studies import load_spec  # noqa: E402

_SPEC = """
[run]
name = "t"
storage = "sqlite:///t.db"
{options}

[inner]
objectives = ["branin"]

[outer]
n_trials = 2
"""


def test_a_spec_passes_its_storage_options_on(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text(_SPEC.format(options="storage_options = {pool_size = 2, grace_period = 60}"))
    spec = load_spec(path)
    assert isinstance(spec, BilevelSpec)
    assert spec.storage_options == {"pool_size": 2, "grace_period": 60}
    assert spec.kwargs["storage_options"] == {"pool_size": 2, "grace_period": 60}


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ("storage_options = {pool_sise = 2}", r"'pool_sise' in \[run\] storage_options"),
        ("storage_options = {pool_size = -1}", r"pool_size in \[run\] storage_options must be"),
        ("storage_options = 3", r"storage_options. in \[run\] must be dict"),
    ],
)
def test_a_bad_storage_option_in_a_spec_fails_on_load(
    tmp_path: Path, options: str, match: str
) -> None:
    path = tmp_path / "spec.toml"
    path.write_text(_SPEC.format(options=options))
    with pytest.raises(ConfigurationError, match=match):
        load_spec(path)
