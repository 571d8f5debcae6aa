"""The endpoint breaker: a dead endpoint under ``on_model_error="fallback"`` is rested, not asked
on every trial, and asked again after the rest."""

from __future__ import annotations

import optuna
import pytest
from chat_doubles import ScriptedChatModel
from chat_doubles import answer_json
from optuna.distributions import FloatDistribution

from bilevel_optuna import _attrs
from bilevel_optuna.chat._base import ChatRequest
from bilevel_optuna.exceptions import ChatAnswerError
from bilevel_optuna.exceptions import ChatConnectionError
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.samplers._breaker import FAILURES_TO_OPEN
from bilevel_optuna.samplers._breaker import FIRST_REST_S
from bilevel_optuna.samplers._breaker import LONGEST_REST_S
from bilevel_optuna.samplers._breaker import EndpointBreaker

SPACE = {"x": FloatDistribution(-5.0, 5.0)}


def objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", -5.0, 5.0) ** 2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_failures_in_a_row_and_rests_longer_each_time() -> None:
    clock = Clock()
    breaker = EndpointBreaker(clock=clock)
    opened = [breaker.failed("ChatConnectionError: refused") for _ in range(FAILURES_TO_OPEN)]
    assert opened == [False] * (FAILURES_TO_OPEN - 1) + [True]
    why = breaker.resting()
    assert why is not None and "3 times in a row" in why and "refused" in why
    assert f"in {FIRST_REST_S:.0f} s" in why
    clock.now += FIRST_REST_S
    assert breaker.resting() is None  # the rest is over: ask once more
    rests = []
    for _ in range(8):
        assert breaker.failed("ChatConnectionError: refused")  # one failure reopens it
        rests.append(breaker.rest_s)
        clock.now += breaker.rest_s
    assert rests[:3] == [2 * FIRST_REST_S, 4 * FIRST_REST_S, 8 * FIRST_REST_S]
    assert max(rests) == LONGEST_REST_S


def test_an_answer_closes_it_and_the_count_starts_over() -> None:
    clock = Clock()
    breaker = EndpointBreaker(clock=clock)
    for _ in range(FAILURES_TO_OPEN - 1):
        breaker.failed("ChatTimeoutError: no answer")
    breaker.answered()
    assert not breaker.failed("ChatTimeoutError: no answer")  # counts from one again
    assert breaker.resting() is None and breaker.rest_s == 0


def test_a_dead_endpoint_is_rested_then_asked_again_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    up = {"now": False}

    def answer(request: ChatRequest, i: int) -> str | Exception:
        if up["now"]:
            return answer_json({"x": 0.5})
        return ChatConnectionError("Cannot reach http://127.0.0.1:9/v1 (refused).")

    model = ScriptedChatModel(answer)
    sampler = LLMSampler(
        preset="level0", model=model, search_space=SPACE, on_model_error="fallback", seed=0
    )
    clock = Clock()
    sampler._breaker = EndpointBreaker(clock=clock)
    study = optuna.create_study(sampler=sampler)
    with caplog.at_level("WARNING", logger="bilevel_optuna"):
        study.optimize(objective, n_trials=10)
    # Three trials asked and failed; the other seven were not asked at all.
    assert len(model.requests) == FAILURES_TO_OPEN
    assert all(t.user_attrs[_attrs.SOURCE] == "fallback" for t in study.trials)
    rested = study.trials[FAILURES_TO_OPEN].user_attrs[_attrs.ERROR]
    assert rested.startswith("endpoint error: the endpoint failed 3 times in a row")
    assert study.user_attrs["llm:fallback"]["why"] == {"endpoint error": 10}
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Resting")]
    assert len(said) == 1 and "asked again in 30 s" in said[0] and "TPESampler" in said[0]

    clock.now += FIRST_REST_S  # the rest is over, still down: asked once, rested twice as long
    study.optimize(objective, n_trials=3)
    assert len(model.requests) == FAILURES_TO_OPEN + 1
    assert sampler._breaker.rest_s == 2 * FIRST_REST_S

    up["now"] = True
    clock.now += 2 * FIRST_REST_S  # back up: the next trial's answer closes the breaker
    study.optimize(objective, n_trials=3)
    assert len(model.requests) == FAILURES_TO_OPEN + 4
    assert [t.user_attrs[_attrs.SOURCE] for t in study.trials[-3:]] == ["llm"] * 3
    assert sampler._breaker.resting() is None and sampler._breaker.rest_s == 0


def test_unusable_answers_are_not_endpoint_failures() -> None:
    def answer(request: ChatRequest, i: int) -> str | Exception:
        return ChatAnswerError("not JSON", raw="hello")

    model = ScriptedChatModel(answer)
    sampler = LLMSampler(
        preset="level0",
        model=model,
        search_space=SPACE,
        on_model_error="fallback",
        max_attempts=1,
        seed=0,
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=2 * FAILURES_TO_OPEN)
    assert len(model.requests) == 2 * FAILURES_TO_OPEN  # every trial still asks
    assert sampler._breaker.resting() is None


def test_samplers_of_one_spec_share_a_breaker_and_model_objects_do_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The inner studies of a bilevel run each build a sampler from the same spec string: what
    # one learns of the endpoint, the next knows.
    spec = "openai:m@http://127.0.0.1:9/v1"
    first = LLMSampler(model=spec, search_space=SPACE, on_model_error="fallback")
    second = LLMSampler(model=f" {spec} ", search_space=SPACE, on_model_error="fallback")
    other = LLMSampler(model="openai:m@http://127.0.0.1:10/v1", search_space=SPACE)
    assert first._breaker is second._breaker and first._breaker is not other._breaker
    monkeypatch.setenv("BILEVEL_OPTUNA_CHAT_MODEL", spec)
    assert LLMSampler(search_space=SPACE)._breaker is first._breaker  # None: the env's spec
    model = ScriptedChatModel(lambda r, i: answer_json({"x": 0.5}))
    assert LLMSampler(model=model)._breaker is not LLMSampler(model=model)._breaker


def test_two_spellings_of_one_endpoint_share_a_breaker(monkeypatch: pytest.MonkeyPatch) -> None:
    # A server that is down is down for every model name and every spelling of its URL.
    first = LLMSampler(model="openai:a@http://127.0.0.1:11/v1", search_space=SPACE)
    for spec in ("openai:b@http://127.0.0.1:11/v1/", "openai:a@http://127.0.0.1:11/v1/"):
        assert LLMSampler(model=spec, search_space=SPACE)._breaker is first._breaker, spec
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11/v1")
    assert LLMSampler(model="openai:c", search_space=SPACE)._breaker is first._breaker
    other_path = LLMSampler(model="openai:a@http://127.0.0.1:11/v2", search_space=SPACE)
    assert other_path._breaker is not first._breaker
