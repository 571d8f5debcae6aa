from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pytest
from chat_doubles import ScriptedChatModel
from chat_doubles import answer_json
from mechanism_context import config
from mechanism_context import make_context
from mechanism_context import make_study
from optuna.distributions import FloatDistribution

from bilevel_optuna import _attrs
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.samplers.mechanisms._candidate_choice import CandidateChoiceMechanism
from bilevel_optuna.samplers.mechanisms._candidate_choice import gp_posterior_mean
from bilevel_optuna.samplers.mechanisms._geometry import encode


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"criterion": "best"}, "criterion"),
        ({"keep": -1}, "keep"),
        ({"keep": 1.5}, "keep"),
        ({"length_scale": 0.0}, "length_scale"),
        ({"length_scale": float("inf")}, "length_scale"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs: dict[str, Any], arg: str) -> None:
    with pytest.raises(ValueError, match=arg):
        CandidateChoiceMechanism(**kwargs)


def test_gp_mean_interpolates_and_reverts_to_the_mean_far_away() -> None:
    space = {"x": FloatDistribution(0.0, 1.0)}
    xs = [{"x": v} for v in (0.1, 0.5, 0.9)]
    y = np.array([1.0, 3.0, 2.0])
    mean = gp_posterior_mean(
        encode(xs, space), y, encode(xs, space), space, length_scale=0.1, noise=1e-6
    )
    np.testing.assert_allclose(mean, y, atol=1e-3)
    constant = gp_posterior_mean(
        encode(xs, space), np.ones(3), encode([{"x": 0.3}], space), space, length_scale=0.1
    )
    np.testing.assert_allclose(constant, [1.0])


def test_novelty_puts_the_farthest_candidate_first() -> None:
    study = make_study([(config(x=0.0), 1.0), (config(x=1.0), 2.0)])
    candidates = [config(x=0.1), config(x=4.0), config(x=-2.0)]
    chosen = CandidateChoiceMechanism(criterion="novelty", keep=0).choose(
        candidates, make_context(study)
    )
    assert chosen == [config(x=4.0), config(x=-2.0), config(x=0.1)]


def _bowl_study(direction: str) -> optuna.Study:
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(20):
        x = float(rng.uniform(-5, 5))
        value = (x - 2.0) ** 2
        rows.append((config(x=x), value if direction == "minimize" else -value))
    return make_study(rows, direction=direction)


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_surrogate_puts_the_best_predicted_candidate_first(direction: str) -> None:
    ctx = make_context(_bowl_study(direction))
    candidates = [config(x=-4.0), config(x=2.1), config(x=4.5)]
    mech = CandidateChoiceMechanism(criterion="surrogate", keep=1, length_scale=0.1)
    assert mech.choose(candidates, ctx) == [config(x=2.1)]
    record = ctx.record["candidate_choice"]
    assert record["criterion"] == "surrogate" and record["chosen"] == 1 and record["dropped"] == 2


def test_surrogate_falls_back_to_novelty_with_few_trials() -> None:
    study = make_study([(config(x=0.0), 1.0), (config(x=1.0), 2.0)])
    ctx = make_context(study)
    chosen = CandidateChoiceMechanism(criterion="surrogate").choose(
        [config(x=0.2), config(x=-3.0)], ctx
    )
    assert chosen == [config(x=-3.0)]
    assert ctx.record["candidate_choice"]["criterion"] == "novelty"


@pytest.mark.parametrize("keep, n", [(0, 3), (1, 1), (2, 2), (5, 3)])
def test_keep(keep: int, n: int) -> None:
    ctx = make_context(make_study([(config(), 1.0)]))
    out = CandidateChoiceMechanism(criterion="novelty", keep=keep).choose(
        [config(x=1.0), config(x=2.0), config(x=3.0)], ctx
    )
    assert len(out) == n and out[0] == config(x=3.0)


# ----------------------------------------------------------------- in a study


def _objective(trial: optuna.Trial) -> float:
    return (trial.suggest_float("x", -5.0, 5.0) - 1.0) ** 2


def test_picks_among_the_models_candidates_and_queues_none() -> None:
    def answer(request: Any, index: int) -> str:
        return answer_json({"x": -5.0 + index * 0.01}, {"x": 4.0 - index * 0.3}, {"x": 0.0})

    model = ScriptedChatModel(answer)
    sampler = LLMSampler(
        preset="level0",
        model=model,
        search_space={"x": FloatDistribution(-5.0, 5.0)},
        seed=0,
        n_candidates=3,
        mechanisms=[("candidate_choice", {"criterion": "novelty", "keep": 1})],
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(_objective, n_trials=6)
    assert len(model.requests) == 6  # nothing was queued: every trial asked the model
    records = [t.user_attrs[_attrs.MECHANISMS]["candidate_choice"] for t in study.trials]
    assert all(r["hooks"]["choose"] == 1 and r["dropped"] == 2 for r in records)
    assert study.trials[0].params["x"] == -5.0  # nothing evaluated yet: the first, in order
    assert study.trials[1].params["x"] == pytest.approx(3.7)  # farthest from x=-5


def test_embedded_model_candidates_are_chosen_by_novelty() -> None:
    from mechanism_context import embedded_study

    study = embedded_study(
        [("candidate_choice", {"criterion": "novelty", "keep": 1})], n_trials=5, n_candidates=3
    )
    records = [t.user_attrs[_attrs.MECHANISMS]["candidate_choice"] for t in study.trials]
    chose = [r for r in records if r["hooks"]["choose"]]
    assert chose, records
    for r in chose:
        assert r["scores"][r["chosen"]] == max(r["scores"])
