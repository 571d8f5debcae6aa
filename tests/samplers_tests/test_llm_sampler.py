"""LLMSampler's protocol with a scripted chat model: retries, fallback, queueing, records.

Behaviour on real studies with the embedded model is in test_llm_sampler_behaviour.py.
"""

from __future__ import annotations

import json
import math

import optuna
import pytest
from chat_doubles import ScriptedChatModel
from chat_doubles import answer_json
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution

from bilevel_optuna import _attrs
from bilevel_optuna.chat._base import ChatRequest
from bilevel_optuna.exceptions import ChatAuthenticationError
from bilevel_optuna.exceptions import ChatConnectionError
from bilevel_optuna.exceptions import ChatModelError
from bilevel_optuna.exceptions import ChatModelNotFoundError
from bilevel_optuna.exceptions import ChatTimeoutError
from bilevel_optuna.samplers import LLMSampler

SPACE = {
    "x": FloatDistribution(-5.0, 5.0),
    "n": IntDistribution(1, 10),
    "c": CategoricalDistribution(["a", "b"]),
}


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5.0, 5.0)
    n = trial.suggest_int("n", 1, 10)
    c = trial.suggest_categorical("c", ["a", "b"])
    return x**2 + n + (c == "b")


def test_model_proposal_is_evaluated_and_recorded() -> None:
    model = ScriptedChatModel(lambda r, i: answer_json({"x": 1.5, "n": 2, "c": "a"}))
    sampler = LLMSampler(preset="level0", model=model, search_space=SPACE, seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=1)
    t = study.trials[0]
    assert t.params == {"x": 1.5, "n": 2, "c": "a"}
    assert t.user_attrs[_attrs.SOURCE] == "llm"
    assert t.user_attrs[_attrs.ATTEMPTS] == 1
    assert t.user_attrs[_attrs.RATIONALE] == "because"
    assert t.user_attrs[_attrs.PROMPT_TOKENS] == 100
    assert t.user_attrs[_attrs.MODEL] == "scripted"
    assert t.user_attrs[_attrs.REQUEST_HASH] == model.requests[0].hash()
    exchanges = t.system_attrs[_attrs.EXCHANGES]
    assert exchanges[0]["hash"] == model.requests[0].hash()
    assert json.loads(exchanges[0]["reply"]["text"])["candidates"][0]["x"] == 1.5


def test_out_of_range_answer_is_repaired_and_marked() -> None:
    model = ScriptedChatModel(lambda r, i: answer_json({"x": 20, "n": 2.4, "c": "B"}))
    study = optuna.create_study(sampler=LLMSampler(preset="level0", model=model, search_space=SPACE))
    study.optimize(objective, n_trials=1)
    t = study.trials[0]
    assert t.params == {"x": 5.0, "n": 2, "c": "b"}
    assert t.user_attrs[_attrs.SOURCE] == "repaired"
    assert len(t.user_attrs[_attrs.REPAIRS]) == 3


def test_invalid_answer_is_fed_back_then_accepted() -> None:
    answers = ["no json here", answer_json({"x": 0.5, "n": 1, "c": "a"})]
    model = ScriptedChatModel(lambda r, i: answers[i])
    study = optuna.create_study(sampler=LLMSampler(preset="level0", model=model, search_space=SPACE))
    study.optimize(objective, n_trials=1)
    t = study.trials[0]
    assert t.user_attrs[_attrs.SOURCE] == "llm"
    assert t.user_attrs[_attrs.ATTEMPTS] == 2
    second = model.requests[1].messages
    assert second[-2] == {"role": "assistant", "content": "no json here"}
    assert "not valid JSON" in second[-1]["content"]


def test_model_that_never_answers_validly_falls_back_and_study_goes_on() -> None:
    model = ScriptedChatModel(lambda r, i: '{"candidates": [{"x": "?"}]}')
    sampler = LLMSampler(preset="level0", model=model, search_space=SPACE, max_attempts=2, seed=1)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=3)
    assert len(model.requests) == 6
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert t.user_attrs[_attrs.SOURCE] == "fallback"
        assert "lacks" in t.user_attrs[_attrs.ERROR]
        for name, dist in SPACE.items():
            assert dist._contains(dist.to_internal_repr(t.params[name]))


def test_an_endpoint_error_stops_the_study_by_default() -> None:
    model = ScriptedChatModel(lambda r, i: ChatTimeoutError("no answer in 1 s"))
    study = optuna.create_study(sampler=LLMSampler(preset="level0", model=model, search_space=SPACE))
    with pytest.raises(ChatTimeoutError, match="no answer in 1 s"):
        study.optimize(objective, n_trials=2)
    assert len(model.requests) == 1
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]


def test_unreachable_endpoint_falls_back_without_retrying_where_asked_and_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = ScriptedChatModel(lambda r, i: ChatTimeoutError("no answer in 1 s"))
    sampler = LLMSampler(
        preset="level0", model=model, search_space=SPACE, on_model_error="fallback"
    )
    study = optuna.create_study(sampler=sampler)
    with caplog.at_level("WARNING", logger="bilevel_optuna"):
        study.optimize(objective, n_trials=2)
    assert len(model.requests) == 2
    assert all(t.user_attrs[_attrs.SOURCE] == "fallback" for t in study.trials)
    error = study.trials[0].user_attrs[_attrs.ERROR]
    assert error.startswith("endpoint error: ChatTimeoutError") and "no answer in 1 s" in error
    said = [r for r in caplog.records if "no answer in 1 s" in r.getMessage()]
    assert len(said) == 1 and "on_model_error='fallback'" in said[0].getMessage()
    summary = study.user_attrs["llm:fallback"]
    assert summary["trials"] == 2 and summary["why"] == {"endpoint error": 2}


def test_wrong_key_stops_the_study_with_our_error() -> None:
    model = ScriptedChatModel(lambda r, i: ChatAuthenticationError("401: set OPENAI_API_KEY"))
    study = optuna.create_study(sampler=LLMSampler(preset="level0", model=model, search_space=SPACE))
    with pytest.raises(ChatAuthenticationError, match="OPENAI_API_KEY"):
        study.optimize(objective, n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.FAIL


def test_extra_candidates_are_queued_and_evaluated_once_each() -> None:
    def answer(request: ChatRequest, i: int) -> str:
        base = 0.5 * i
        return answer_json(*({"x": base + 0.1 * j, "n": 1 + j, "c": "a"} for j in range(4)))

    model = ScriptedChatModel(answer)
    study = optuna.create_study(
        sampler=LLMSampler(preset="level0", model=model, search_space=SPACE, n_candidates=4)
    )
    study.optimize(objective, n_trials=8)
    assert len(model.requests) == 2
    configs = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(configs)) == 8
    queued = [t for t in study.trials if "llm:queued_by" in t.user_attrs]
    assert len(queued) == 6
    assert all(t.user_attrs[_attrs.SOURCE] == "llm" for t in queued)


def test_k_candidates_are_k_answers_of_one_request() -> None:
    def answer(request: ChatRequest, i: int) -> list[str]:
        return [answer_json({"x": 0.5 * i + 0.1 * j, "n": 1 + j, "c": "b"}) for j in range(request.n)]

    model = ScriptedChatModel(answer)
    study = optuna.create_study(
        sampler=LLMSampler(preset="level0", model=model, search_space=SPACE, n_candidates=3, seed=1)
    )
    study.optimize(objective, n_trials=6)
    assert len(model.requests) == 2 and all(r.n == 3 for r in model.requests)
    one = model.requests[0].json_schema["properties"]["candidates"]  # type: ignore[index]
    assert one["minItems"] == one["maxItems"] == 1
    assert [t.params["n"] for t in study.trials] == [1, 2, 3, 1, 2, 3]
    assert [t.user_attrs.get("llm:queued_by") for t in study.trials] == [None, 0, 0, None, 3, 3]
    # Every answer is stored with the request, so a replay gets all three back.
    exchange = study.trials[0].system_attrs[_attrs.EXCHANGES][0]
    assert len(exchange["reply"]["choices"]) == 3


def test_candidates_equal_to_pending_ones_are_dropped() -> None:
    same = {"x": 1.0, "n": 1, "c": "a"}
    model = ScriptedChatModel(lambda r, i: answer_json(same, same, {"x": 2.0, "n": 1, "c": "a"}))
    study = optuna.create_study(
        sampler=LLMSampler(preset="level0", model=model, search_space=SPACE, n_candidates=3)
    )
    study.optimize(objective, n_trials=2)
    assert [t.params["x"] for t in study.trials] == [1.0, 2.0]


def test_history_window_keeps_the_prompt_bounded() -> None:
    def answer(request: ChatRequest, i: int) -> str:
        return answer_json({"x": -5 + (i % 100) * 0.1, "n": 1 + i % 10, "c": "ab"[i % 2]})

    model = ScriptedChatModel(answer)
    sampler = LLMSampler(preset="level0", model=model, search_space=SPACE, history_size=10, seed=0)
    study = optuna.create_study(sampler=sampler)
    lengths = []
    for _ in range(60):
        study.optimize(objective, n_trials=1)
        lengths.append(len(model.requests[-1].messages[-1]["content"]))
    assert max(lengths[15:]) <= max(lengths[10:15]) + 20
    prompt = model.requests[-1].messages[-1]["content"]
    assert "Evaluated, best first" in prompt and "(10 of 59 evaluated shown.)" in prompt


def test_consecutive_prompts_share_the_history_as_a_prefix() -> None:
    # A local model reuses the computation of a shared prompt prefix, so what changes from one
    # trial to the next (the count of trials) comes after the history.
    model = ScriptedChatModel(lambda r, i: answer_json({"x": 4.0 + i * 0.01, "n": 1, "c": "a"}))
    sampler = LLMSampler(preset="level0", model=model, search_space=SPACE, history_size=3, seed=0)
    study = optuna.create_study(sampler=sampler)
    for x in (0.1, 0.2, 0.3):
        study.enqueue_trial({"x": x, "n": 1, "c": "a"})
    study.optimize(objective, n_trials=6)  # proposals at x >= 4 stay out of the best-3 window
    first, second = (r.messages[-1]["content"] for r in model.requests[-2:])
    assert first != second  # the count changed ...
    head = first.split("evaluated shown.)")[0].rsplit("\n", 1)[0]
    assert second.startswith(head) and head.count("{\"x\"") == 3  # ... after the same history


def test_prompt_states_types_bounds_scale_and_direction() -> None:
    model = ScriptedChatModel(lambda r, i: answer_json({"lr": 0.01, "k": 3}))
    space = {"lr": FloatDistribution(1e-5, 1e-1, log=True), "k": IntDistribution(1, 9, step=2)}
    sampler = LLMSampler(
        preset="level0",
        model=model, search_space=space, description="Train a net.", metric_name="val loss"
    )
    study = optuna.create_study(sampler=sampler, direction="maximize")
    study.optimize(lambda t: t.suggest_float("lr", 1e-5, 1e-1, log=True), n_trials=1)
    prompt = model.requests[0].messages[1]["content"]
    assert "Task: Train a net." in prompt
    assert "Goal: maximize val loss." in prompt
    assert "- lr: float in [1.000e-05, 0.1], log scale" in prompt
    assert "- k: integer in [1, 9], step 2" in prompt


def test_failed_trials_and_their_reason_reach_the_prompt() -> None:
    model = ScriptedChatModel(lambda r, i: answer_json({"x": float(i), "n": 1, "c": "a"}))
    study = optuna.create_study(sampler=LLMSampler(preset="level0", model=model, search_space=SPACE))

    def crashing(trial: optuna.Trial) -> float:
        value = objective(trial)
        if trial.params["x"] == 0.0:
            trial.set_user_attr(_attrs.FAILURE_REASON, "exit code 1: out of memory")
            raise RuntimeError("boom")
        return value

    study.optimize(crashing, n_trials=2, catch=(RuntimeError,))
    prompt = model.requests[1].messages[1]["content"]
    assert '{"x": 0, "n": 1, "c": "a"} -> failed: exit code 1: out of memory' in prompt


def test_nan_and_inf_objective_values_do_not_stop_the_study() -> None:
    model = ScriptedChatModel(lambda r, i: answer_json({"x": float(i % 3), "n": 1, "c": "a"}))
    study = optuna.create_study(sampler=LLMSampler(preset="level0", model=model, search_space=SPACE))
    values = iter([math.nan, math.inf, 1.0, 2.0])
    study.optimize(lambda t: objective(t) * 0 + next(values), n_trials=4)
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    assert study.best_value == 1.0


def test_multi_objective_gets_a_clear_error() -> None:
    model = ScriptedChatModel(lambda r, i: answer_json({"x": 1.0, "n": 1, "c": "a"}))
    study = optuna.create_study(
        sampler=LLMSampler(preset="level0", model=model, search_space=SPACE), directions=["minimize"] * 2
    )
    with pytest.raises(ValueError, match="single-objective"):
        study.optimize(lambda t: (objective(t), 1.0), n_trials=1)


def test_without_declared_space_first_trial_uses_base_sampler() -> None:
    model = ScriptedChatModel(lambda r, i: answer_json({"x": 0.25, "n": 4, "c": "b"}))
    study = optuna.create_study(sampler=LLMSampler(preset="level0", model=model, seed=3))
    study.optimize(objective, n_trials=2)
    assert _attrs.SOURCE not in study.trials[0].user_attrs
    assert study.trials[1].params == {"x": 0.25, "n": 4, "c": "b"}


def test_conditional_parameters_go_to_the_base_sampler() -> None:
    model = ScriptedChatModel(lambda r, i: answer_json({"x": 0.5, "n": 2, "c": "a"}))
    study = optuna.create_study(sampler=LLMSampler(preset="level0", model=model, search_space=SPACE, seed=0))

    def conditional(trial: optuna.Trial) -> float:
        value = objective(trial)
        if trial.params["c"] == "a":
            value += trial.suggest_float("extra", 0.0, 1.0)
        return value

    study.optimize(conditional, n_trials=2)
    assert all(0.0 <= t.params["extra"] <= 1.0 for t in study.trials)


def test_threads_share_one_sampler_without_duplicate_queue_pops() -> None:
    def answer(request: ChatRequest, i: int) -> str:
        return answer_json(*({"x": -4.5 + 0.2 * i + 0.01 * j, "n": 1, "c": "a"} for j in range(3)))

    model = ScriptedChatModel(answer)
    study = optuna.create_study(
        sampler=LLMSampler(preset="level0", model=model, search_space=SPACE, n_candidates=3)
    )
    study.optimize(objective, n_trials=24, n_jobs=4)
    configs = [tuple(sorted(t.params.items())) for t in study.trials if t.params]
    assert len(configs) == len(set(configs))


def test_same_seed_same_requests() -> None:
    def run() -> list[str]:
        model = ScriptedChatModel(lambda r, i: answer_json({"x": 0.1 * i, "n": 1, "c": "a"}))
        study = optuna.create_study(sampler=LLMSampler(preset="level0", model=model, search_space=SPACE, seed=7))
        study.optimize(objective, n_trials=5)
        return [r.hash() for r in model.requests]

    assert run() == run()


class _DownModel(ScriptedChatModel):
    """A model whose endpoint fails the check before the first trial."""

    def __init__(self, error: Exception) -> None:
        super().__init__(lambda r, i: answer_json({"x": 1.0, "n": 1, "c": "a"}))
        self.error = error
        self.checks = 0

    def check(self) -> None:
        self.checks += 1
        raise self.error


def test_the_endpoint_is_checked_before_the_first_trial_and_stops_the_study() -> None:
    model = _DownModel(ChatConnectionError("Cannot reach http://127.0.0.1:9/v1 (refused)."))
    study = optuna.create_study(sampler=LLMSampler(model=model, seed=0))  # no search space
    with pytest.raises(ChatConnectionError, match="Cannot reach"):
        study.optimize(objective, n_trials=3)
    assert model.requests == []
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs[_attrs.FAILURE_REASON].startswith("Cannot reach http://127.0.0.1:9")


def test_a_failed_check_falls_back_where_asked_without_asking_the_model(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = _DownModel(ChatModelNotFoundError("http://h/v1 does not serve model 'm'."))
    sampler = LLMSampler(model=model, search_space=SPACE, on_model_error="fallback", seed=0)
    study = optuna.create_study(sampler=sampler)
    with caplog.at_level("WARNING", logger="bilevel_optuna"):
        study.optimize(objective, n_trials=3)
    assert model.requests == [] and model.checks == 1
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert all(t.user_attrs[_attrs.SOURCE] == "fallback" for t in study.trials)
    assert study.trials[0].user_attrs[_attrs.ERROR].startswith("endpoint error: http://h/v1")
    said = [r.getMessage() for r in caplog.records if "does not serve model" in r.getMessage()]
    assert len(said) == 1 and "TPESampler" in said[0]
    assert study.user_attrs["llm:fallback"]["trials"] == 3
    assert study.user_attrs["llm:fallback"]["why"] == {"endpoint error": 3}


def test_token_cap_stops_asking_and_is_recorded_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Each call of the double spends 100 prompt + 20 completion tokens.
    model = ScriptedChatModel(lambda r, i: answer_json({"x": 0.1 * i, "n": 1 + i, "c": "a"}))
    sampler = LLMSampler(
        preset="level0", model=model, search_space=SPACE, max_tokens_total=250, seed=0
    )
    study = optuna.create_study(sampler=sampler)
    with caplog.at_level("WARNING", logger="bilevel_optuna"):
        study.optimize(objective, n_trials=6)
    assert len(model.requests) == 3  # 0, 120, 240 spent before each: the fourth would pass 250
    sources = [t.user_attrs[_attrs.SOURCE] for t in study.trials]
    assert sources == ["llm"] * 3 + ["fallback"] * 3
    assert study.trials[3].user_attrs[_attrs.ERROR].startswith("spend cap reached: max_tokens")
    assert study.user_attrs["llm:spend_cap"]["trial"] == 3
    assert "360 tokens spent" in study.user_attrs["llm:spend_cap"]["cap"]
    assert study.user_attrs["llm:fallback"]["why"] == {"spend cap reached": 3}
    said = [r.getMessage() for r in caplog.records if "Spend cap reached" in r.getMessage()]
    assert len(said) == 1 and "trial 3" in said[0]


def test_money_cap_counts_with_the_prices() -> None:
    model = ScriptedChatModel(lambda r, i: answer_json({"x": 0.1 * i, "n": 1 + i, "c": "a"}))
    # $1,000 per 1M tokens in and out: $0.12 a call; the cap of $0.2 allows two calls.
    sampler = LLMSampler(
        preset="level0",
        model=model,
        search_space=SPACE,
        max_cost=0.2,
        token_prices=(1000, 1000),
        seed=0,
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=4)
    assert len(model.requests) == 2
    assert "max_cost=0.2: 0.2400 spent" in study.user_attrs["llm:spend_cap"]["cap"]


def test_a_refused_request_falls_back_for_that_trial_and_is_counted() -> None:
    refusal = ChatModelError("The embedded model could not answer: prompt past n_ctx.")
    model = ScriptedChatModel(
        lambda r, i: refusal if i == 0 else answer_json({"x": 1.0, "n": 2, "c": "a"})
    )
    study = optuna.create_study(sampler=LLMSampler(preset="level0", model=model, search_space=SPACE))
    study.optimize(objective, n_trials=2)
    assert [t.user_attrs[_attrs.SOURCE] for t in study.trials] == ["fallback", "llm"]
    assert study.trials[0].user_attrs[_attrs.ERROR].startswith("request refused: ChatModelError")
    assert study.user_attrs["llm:fallback"]["why"] == {"request refused": 1}
