"""The classical sampler in control: who proposes each trial, the warm start, picking."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import optuna
import pytest
from chat_doubles import ScriptedChatModel

from bilevel_optuna import _attrs
from bilevel_optuna.chat import ChatRequest
from bilevel_optuna.samplers import ClassicalMechanism
from bilevel_optuna.samplers import LLMSampler

_SPACE = {
    "x": optuna.distributions.FloatDistribution(-5.0, 5.0),
    "n": optuna.distributions.IntDistribution(1, 10),
}


def _objective(trial: optuna.Trial) -> float:
    return (trial.suggest_float("x", -5.0, 5.0) - 1.0) ** 2 + trial.suggest_int("n", 1, 10)


def _model() -> ScriptedChatModel:
    def answer(request: ChatRequest, index: int) -> str:
        return json.dumps({"x": -4.0 + 0.37 * index, "n": 1 + index % 10})

    return ScriptedChatModel(answer)


def _study(model: ScriptedChatModel, n_trials: int, **params: Any) -> optuna.Study:
    sampler = LLMSampler(
        model=model,
        preset="level0",
        search_space=_SPACE,
        seed=0,
        mechanisms=[("classical", params)],
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(_objective, n_trials=n_trials)
    return study


def _by(study: optuna.Study) -> list[str]:
    return [t.user_attrs[_attrs.MECHANISMS]["classical"]["by"] for t in study.trials]


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"share": 1.5}, "share"),
        ({"role": "vote"}, "role"),
        ({"n_start": -1}, "n_start"),
        ({"n_pick": 1}, "n_pick"),
        ({"sampler": "gp"}, "sampler"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs: dict[str, Any], arg: str) -> None:
    with pytest.raises(ValueError, match=arg):
        ClassicalMechanism(**kwargs)


def test_warm_start_then_the_share_the_model_gets() -> None:
    model = _model()
    study = _study(model, 40, share=0.25, n_start=4)
    by = _by(study)
    assert by[:4] == ["model"] * 4
    later = by[4:]
    # A seeded draw per trial: about a quarter of the later trials are the model's.
    assert 3 <= later.count("model") <= 16
    assert len(model.requests) == by.count("model")
    for t, who in zip(study.trials, by):
        if who == "sampler":
            assert t.user_attrs[_attrs.SOURCE] == "mechanism"
            assert t.user_attrs[_attrs.TAKEN_BY] == "classical"
        else:
            assert t.user_attrs[_attrs.SOURCE] in ("llm", "repaired")


def test_share_zero_is_the_classical_sampler_after_the_warm_start() -> None:
    model = _model()
    study = _study(model, 15, share=0.0, n_start=3)
    assert _by(study) == ["model"] * 3 + ["sampler"] * 12
    assert len(model.requests) == 3


def test_the_same_seed_gives_the_same_study() -> None:
    a = _study(_model(), 12, share=0.5, n_start=2)
    b = _study(_model(), 12, share=0.5, n_start=2)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]


def test_pick_lists_the_sampler_candidates_and_evaluates_one_of_them() -> None:
    model = _model()
    study = _study(model, 8, share=1.0, n_start=0, role="pick", n_pick=3)
    for t, request in zip(study.trials, model.requests):
        record = t.user_attrs[_attrs.MECHANISMS]["classical"]
        picks = record["picks"]
        assert 1 <= len(picks) <= 3
        assert t.params in picks
        assert picks[record["picked"]] == t.params
        assert "Choose the most promising of these candidates" in request.messages[1]["content"]


_MIXED = {
    "x": optuna.distributions.FloatDistribution(-5.0, 5.0),
    "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
    "n": optuna.distributions.IntDistribution(1, 10),
    "c": optuna.distributions.CategoricalDistribution(["a", "b", "c"]),
}


def _mixed_objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5.0, 5.0)
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    n = trial.suggest_int("n", 1, 10)
    c = trial.suggest_categorical("c", ["a", "b", "c"])
    return (x - 1.0) ** 2 + (math.log10(lr) + 2) ** 2 + n + (c != "b")


def test_cmaes_in_control_runs_the_study_and_is_told_the_models_trials() -> None:
    def answer(request: ChatRequest, index: int) -> str:
        return json.dumps({"x": -4.0 + 0.37 * index, "lr": 1e-3, "n": 1 + index % 10, "c": "a"})

    model = ScriptedChatModel(answer)
    sampler = LLMSampler(
        model=model,
        preset="level0",
        search_space=_MIXED,
        seed=0,
        mechanisms=[("classical", {"sampler": "cmaes", "share": 0.3, "n_start": 3})],
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(_mixed_objective, n_trials=40)
    by = _by(study)
    assert by[:3] == ["model"] * 3 and by[3:].count("sampler") >= 20
    assert len(model.requests) == by.count("model")
    # Every trial from the second on is one of CMA-ES's population, the model's included
    # (the first has nothing for CMA-ES to start from), and generations were completed.
    generations = [t.system_attrs.get("cma:generation") for t in study.trials]
    assert generations[0] is None and None not in generations[1:]
    assert max(generations[1:]) >= 2
    # The categorical parameter comes from the seeded TPE beside CMA-ES, which learns that "b"
    # is best (random search would pick it a third of the time).
    late_c = [t.params["c"] for t, who in zip(study.trials[20:], by[20:]) if who == "sampler"]
    assert late_c.count("b") > 2 * len(late_c) / 3
    # CMA-ES moved towards the optimum, x = 1 and lr = 1e-2.
    late = [t.params["x"] for t, who in zip(study.trials[-10:], by[-10:]) if who == "sampler"]
    assert abs(float(np.median(late)) - 1.0) < 2.5


def test_cmaes_in_control_is_reproducible() -> None:
    def run() -> list[dict[str, Any]]:
        sampler = LLMSampler(
            model=_model(),
            preset="level0",
            search_space=_SPACE,
            seed=3,
            mechanisms=[("classical", {"sampler": "cmaes", "share": 0.3, "n_start": 2})],
        )
        study = optuna.create_study(sampler=sampler)
        study.optimize(_objective, n_trials=15)
        return [t.params for t in study.trials]

    assert run() == run()
