"""The built-ins' common contract, and several mechanisms on one sampler: order and faults."""

from __future__ import annotations

import time
from typing import Any

import optuna
import pytest
from chat_doubles import ScriptedChatModel
from chat_doubles import answer_json
from optuna.distributions import FloatDistribution

from bilevel_optuna import _attrs
from bilevel_optuna.chat._base import ChatRequest
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.samplers import Mechanism
from bilevel_optuna.samplers import ProposalContext
from bilevel_optuna.samplers import Review

# ------------------------------------------------------------------- order

_SPACE = {"x": FloatDistribution(-5.0, 5.0), "y": FloatDistribution(-5.0, 5.0)}


def _objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", -5.0, 5.0) ** 2 + trial.suggest_float("y", -5.0, 5.0) ** 2


def _study_with_history(sampler: LLMSampler) -> optuna.Study:
    """Incumbent at (0, 0); a worse trial at (1, 0), where a projection of (4, 0) lands."""
    study = optuna.create_study(sampler=sampler)
    for x, value in ((0.0, 0.0), (1.0, 5.0)):
        study.add_trial(
            optuna.trial.create_trial(params={"x": x, "y": 0.0}, distributions=_SPACE, value=value)
        )
    return study


def _far_then_near(request: ChatRequest, index: int) -> str:
    return answer_json({"x": 4.0, "y": 0.0} if index == 0 else {"x": -0.5, "y": 0.5})


@pytest.mark.parametrize(
    "order, params, attempts",
    [
        # The projection (1, 0) is checked by tabu and rejected; the model's next answer is used.
        (["trust_region", "tabu"], {"x": -0.5, "y": 0.5}, 2),
        # Tabu passes (4, 0), then trust region projects it onto the evaluated (1, 0).
        (["tabu", "trust_region"], {"x": 1.0, "y": 0.0}, 1),
    ],
)
def test_review_hooks_run_in_the_given_order(
    order: list[str], params: dict[str, float], attempts: int
) -> None:
    mechanisms = [
        (
            ("trust_region", {"initial_radius": 0.1})
            if n == "trust_region"
            else ("tabu", {"radius": 0.0, "on_reject": "ask"})
        )
        for n in order
    ]
    model = ScriptedChatModel(_far_then_near)
    sampler = LLMSampler(preset="level0", model=model, search_space=_SPACE, seed=0, mechanisms=mechanisms)
    study = _study_with_history(sampler)
    study.optimize(_objective, n_trials=1)
    trial = study.trials[-1]
    assert trial.params == pytest.approx(params)
    assert trial.user_attrs[_attrs.ATTEMPTS] == attempts
    assert list(trial.user_attrs[_attrs.MECHANISMS]) == order


def test_prepare_notes_appear_in_order_and_a_take_over_stops_later_prepares() -> None:
    model = ScriptedChatModel(lambda r, i: answer_json({"x": 0.5, "y": 0.5}))
    sampler = LLMSampler(
        preset="level0",
        model=model,
        search_space=_SPACE,
        seed=0,
        mechanisms=[
            ("hybrid", {"sampler": "random", "n_warmup": 3}),
            ("trust_region", {"initial_radius": 0.2}),
            ("orthogonal", {"n_bins": 4}),
        ],
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(_objective, n_trials=4)
    warm = study.trials[2].user_attrs[_attrs.MECHANISMS]
    assert warm["hybrid"]["hooks"]["prepare"] == 1
    assert warm["trust_region"]["hooks"]["prepare"] == 0  # the trial was taken over first
    assert warm["orthogonal"]["hooks"]["prepare"] == 0
    prompt = model.requests[0].messages[1]["content"]
    assert prompt.index("Note: Trust region") < prompt.index("Note: Explore")


# ------------------------------------------------------------------- faults


class _Boom(Mechanism):
    name = "boom"

    def review(self, candidate: dict[str, Any], context: ProposalContext) -> Review:
        raise RuntimeError("boom")


class _Slow(Mechanism):
    name = "slow"

    def prepare(self, context: ProposalContext) -> None:
        time.sleep(0.5)
        context.notes.append("too late")


def test_a_raising_mechanism_is_switched_off_and_the_study_goes_on() -> None:
    model = ScriptedChatModel(lambda r, i: answer_json({"x": 0.5, "y": 0.5}))
    sampler = LLMSampler(preset="level0", model=model, search_space=_SPACE, seed=0, mechanisms=[_Boom(), ("tabu", {"on_reject": "ask"})])
    study = optuna.create_study(sampler=sampler)
    study.optimize(_objective, n_trials=3)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for t in study.trials:
        record = t.user_attrs[_attrs.MECHANISMS]
        assert record["boom"]["errors"] == ["review: RuntimeError: boom"]
        assert record["boom"]["off"] is True
        assert record["tabu"]["hooks"]["review"] >= 1  # the next mechanism still ran
    # Tabu, still on, rejected the model's repeats: the later trials fell back.
    assert study.trials[1].user_attrs[_attrs.SOURCE] == "fallback"


def test_a_slow_mechanism_times_out_and_the_study_goes_on() -> None:
    model = ScriptedChatModel(lambda r, i: answer_json({"x": 0.5 + i, "y": 0.5}))
    sampler = LLMSampler(
        preset="level0",
        model=model, search_space=_SPACE, seed=0, mechanisms=[_Slow()], hook_timeout=0.05
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(_objective, n_trials=2)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    record = study.trials[0].user_attrs[_attrs.MECHANISMS]["slow"]
    assert record["errors"] == ["prepare: HookFailure: timed out after 0.05 s"]
    assert record["off"] is True
    assert "too late" not in model.requests[0].messages[1]["content"]
