from __future__ import annotations

import logging
import warnings
from typing import Any

import optuna
import pytest
from chat_doubles import ScriptedChatModel
from chat_doubles import answer_json
from optuna.distributions import FloatDistribution

from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.samplers import Mechanism
from bilevel_optuna.samplers import ProposalContext
from bilevel_optuna.samplers import Review
from bilevel_optuna.samplers import TabuMechanism
from bilevel_optuna.samplers._summary import MechanismInactiveWarning
from bilevel_optuna.samplers._summary import summarize_mechanisms

_SPACE = {"x": FloatDistribution(-5.0, 5.0)}


def _objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", -5.0, 5.0) ** 2


class _Idle(Mechanism):
    """Runs on every candidate and never changes anything."""

    name = "idle"

    def review(self, candidate: dict[str, Any], context: ProposalContext) -> Review:
        return Review.accept()


class _Flaky(Mechanism):
    name = "flaky"

    def review(self, candidate: dict[str, Any], context: ProposalContext) -> Review:
        if context.trial.number % 2:
            raise ValueError("odd trial")
        return Review.reject("even trial")


def _run(mechanisms: list[Any], n_trials: int = 4, **kwargs: Any) -> optuna.Study:
    model = ScriptedChatModel(lambda r, i: answer_json({"x": 1.0}, {"x": 2.0}))
    sampler = LLMSampler(
        preset="level0",
        model=model, search_space=_SPACE, seed=0, mechanisms=mechanisms, max_attempts=2, **kwargs
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(_objective, n_trials=n_trials)
    return study


def test_a_mechanism_that_acted_is_verified_quietly() -> None:
    study = _run([("tabu", {"on_reject": "ask"})])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (summary,) = summarize_mechanisms(study).values()
    assert summary.name == "tabu" and summary.status == "ok" and summary.verified
    assert summary.n_trials == summary.n_active == 4
    assert summary.n_changed == 3  # trials 1-3 rejected the repeat of x=1.0
    assert summary.calls["review"] == 1 + 3 * 2
    assert summary.changes == 3 * 2 and summary.n_errors == 0 and summary.versions == [TabuMechanism.version]


def test_a_mechanism_whose_hooks_never_ran_is_reported_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    study = _run(["candidate_choice"])  # n_candidates=1: choose is never called
    with caplog.at_level(logging.WARNING, logger="bilevel_optuna"):
        with pytest.warns(
            MechanismInactiveWarning, match="none of its hooks ever ran.*n_candidates"
        ):
            summary = summarize_mechanisms(study)["candidate_choice"]
    assert summary.status == "never_ran" and not summary.verified
    assert summary.n_trials == 4 and summary.n_active == 0 and summary.calls == {"choose": 0}
    assert "candidate_choice" in caplog.text


def test_the_same_mechanism_runs_when_the_sampler_asks_for_several_candidates() -> None:
    study = _run(["candidate_choice"], n_candidates=2)
    summary = summarize_mechanisms(study)["candidate_choice"]
    assert summary.status == "ok" and summary.calls == {"choose": 4}


def test_a_mechanism_that_never_changed_anything_is_reported_loudly() -> None:
    study = _run([_Idle()])
    with pytest.warns(MechanismInactiveWarning, match="never changed a proposal"):
        summary = summarize_mechanisms(study)["idle"]
    assert summary.status == "never_changed" and summary.calls == {"review": 4}


def test_a_configured_mechanism_without_records_is_reported() -> None:
    study = _run([("tabu", {"on_reject": "ask"})])
    with pytest.warns(MechanismInactiveWarning, match="'orthogonal' has no record"):
        summary = summarize_mechanisms(study, mechanisms=["tabu", "orthogonal"])
    assert summary["orthogonal"].status == "never_ran" and summary["orthogonal"].n_trials == 0
    assert summary["tabu"].status == "ok"


def test_errors_and_switched_off_trials_are_counted() -> None:
    study = _run([_Flaky()])
    summary = summarize_mechanisms(study)["flaky"]
    assert summary.n_off == 2 and summary.n_errors == 2
    assert summary.errors == [
        (1, "review: ValueError: odd trial"),
        (3, "review: ValueError: odd trial"),
    ]
    assert summary.status == "ok"  # it did reject on even trials


def test_take_overs_count_and_studies_add_up() -> None:
    studies = [_run([("hybrid", {"sampler": "random", "n_warmup": 2})]) for _ in range(2)]
    summary = summarize_mechanisms(studies)["hybrid"]
    assert summary.n_taken == 4 and summary.n_changed == 4 and summary.n_trials == 8


def test_warn_false_is_silent() -> None:
    study = _run([_Idle()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert summarize_mechanisms(study, warn=False)["idle"].status == "never_changed"
