"""LLMSampler on real studies with the embedded model (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import multiprocessing
import uuid

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna.chat._replay import ReplayChatModel
from bilevel_optuna.samplers import LLMSampler

BRANIN_SPACE = {"x1": FloatDistribution(-5.0, 10.0), "x2": FloatDistribution(0.0, 15.0)}
MIXED_SPACE = {
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "layers": IntDistribution(1, 8),
    "width": IntDistribution(16, 256, step=16),
    "activation": CategoricalDistribution(["relu", "gelu", "tanh"]),
}


def branin(trial: optuna.Trial) -> float:
    import math

    x1 = trial.suggest_float("x1", -5.0, 10.0)
    x2 = trial.suggest_float("x2", 0.0, 15.0)
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def mixed(trial: optuna.Trial) -> float:
    import math

    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    layers = trial.suggest_int("layers", 1, 8)
    width = trial.suggest_int("width", 16, 256, step=16)
    act = trial.suggest_categorical("activation", ["relu", "gelu", "tanh"])
    return (
        (math.log10(lr) + 3) ** 2
        + (layers - 4) ** 2 / 4
        + abs(width - 128) / 64
        + (0.0 if act == "gelu" else 0.5)
    )


def _check_trials(study: optuna.Study, space: dict) -> None:
    # Candidates queued by the last call wait for the next run of the study; all else finished.
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) < max(study.sampler.n_candidates, 1)
    for t in study.get_trials(
        states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING, TrialState.PRUNED)
    ):
        assert t.state == TrialState.COMPLETE
        assert t.user_attrs[_attrs.SOURCE] in ("llm", "repaired", "fallback")
        for name, dist in space.items():
            assert dist._contains(dist.to_internal_repr(t.params[name]))


def test_branin_study_with_the_embedded_model() -> None:
    sampler = LLMSampler(
        preset="level0",
        model="local",
        description="The Branin function of two variables.",
        search_space=BRANIN_SPACE,
        seed=0,
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(branin, n_trials=12)
    _check_trials(study, BRANIN_SPACE)
    sources = [t.user_attrs[_attrs.SOURCE] for t in study.trials]
    # The model answers; the grammar keeps it JSON, so fallback must stay rare.
    assert sources.count("fallback") <= 2, sources
    assert all(
        t.user_attrs[_attrs.PROMPT_TOKENS] > 0
        for t in study.trials
        if t.user_attrs[_attrs.SOURCE] != "fallback"
    )
    assert study.best_value < 60.0  # Branin's values on this box reach about 308


def test_mixed_int_categorical_log_space_with_the_embedded_model() -> None:
    sampler = LLMSampler(
        preset="level0",
        model="local",
        description="Train a small network: learning rate, depth, width and activation.",
        search_space=MIXED_SPACE,
        n_candidates=2,
        seed=1,
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(mixed, n_trials=10)
    _check_trials(study, MIXED_SPACE)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 10
    assert any("llm:queued_by" in t.user_attrs for t in study.trials)


def test_replay_reproduces_a_finished_study_without_a_model(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/replay.db"
    kwargs = dict(search_space=BRANIN_SPACE, description="Branin.", seed=5, history_size=5)
    first = optuna.create_study(
        storage=url, study_name="recorded", sampler=LLMSampler(preset="level0", model="local", **kwargs)
    )
    first.optimize(branin, n_trials=6)
    replay = ReplayChatModel.from_storage(url, "recorded")
    second = optuna.create_study(
        storage=url, study_name="replayed", sampler=LLMSampler(preset="level0", model=replay, **kwargs)
    )
    second.optimize(branin, n_trials=6)
    assert [t.params for t in second.trials] == [t.params for t in first.trials]
    assert [t.value for t in second.trials] == [t.value for t in first.trials]
    assert [t.user_attrs[_attrs.SOURCE] for t in second.trials] == [
        t.user_attrs[_attrs.SOURCE] for t in first.trials
    ]


def _worker(url: str, name: str, n_trials: int, seed: int) -> None:
    from bilevel_optuna.studies._bilevel import make_storage

    sampler = LLMSampler(preset="level0", model="local", search_space=BRANIN_SPACE, n_candidates=3, seed=seed)
    storage, _ = make_storage(url)  # on SQLite: transactions that lock at BEGIN
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    study.optimize(branin, n_trials=n_trials)


def _run_workers(url: str) -> optuna.Study:
    name = f"workers-{uuid.uuid4().hex[:8]}"
    optuna.create_study(storage=url, study_name=name)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(url, name, 6, seed)) for seed in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    return optuna.load_study(study_name=name, storage=url)


def _check_workers(study: optuna.Study) -> None:
    finished = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(finished) == 12
    for t in finished:
        assert t.user_attrs[_attrs.SOURCE] in ("llm", "repaired", "fallback")
    # Queued candidates are WAITING trials: each popped at most once, none running forever.
    assert not study.get_trials(states=(TrialState.RUNNING,))
    queued = [t for t in finished if "llm:queued_by" in t.user_attrs]
    assert queued, "k=3 should have queued candidates"


def test_parallel_workers_on_sqlite(tmp_path) -> None:
    _check_workers(_run_workers(f"sqlite:///{tmp_path}/workers.db"))


@pytest.mark.parametrize(
    "url_fixture",
    [
        pytest.param("postgres_url", marks=pytest.mark.postgres, id="postgresql"),
        pytest.param("mysql_url", marks=pytest.mark.mysql, id="mariadb"),
    ],
)
def test_parallel_workers_on_a_server_database(
    url_fixture: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(url_fixture)
    study = _run_workers(url)
    try:
        _check_workers(study)
    finally:
        optuna.delete_study(study_name=study.study_name, storage=url)
