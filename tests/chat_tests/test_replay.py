"""ReplayChatModel: recorded answers served back by request hash, from memory or a storage."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from bilevel_optuna import _attrs
from bilevel_optuna.chat import ChatReply
from bilevel_optuna.chat import ChatRequest
from bilevel_optuna.chat import ReplayChatModel
from bilevel_optuna.chat import get_chat_model
from bilevel_optuna.exceptions import ChatAnswerError
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.exceptions import ReplayMissError

SCHEMA = {"type": "object", "properties": {"x": {"type": "number", "maximum": 10}}}


def _request(content: str, seed: int = 0) -> ChatRequest:
    return ChatRequest(
        messages=({"role": "user", "content": content},), json_schema=SCHEMA, seed=seed
    )


def _reply(text: str, model: str = "SmolLM2") -> ChatReply:
    return ChatReply(
        text=text,
        prompt_tokens=30,
        completion_tokens=5,
        latency_s=0.7,
        model=model,
        finish_reason="stop",
    )


def _record(
    storage: str, study_name: str, exchanges: list[list[tuple[ChatRequest, ChatReply]]]
) -> None:
    study = optuna.create_study(study_name=study_name, storage=storage)
    for per_trial in exchanges:
        attrs = {
            _attrs.EXCHANGES: [{"hash": q.hash(), "reply": r.to_dict()} for q, r in per_trial]
        }
        study.add_trial(optuna.trial.create_trial(value=0.0, system_attrs=attrs))


def test_serves_recorded_answers_by_hash() -> None:
    first, second = _request("a"), _request("a", seed=1)
    model = ReplayChatModel({first.hash(): _reply('{"x": 1}'), second.hash(): _reply('{"x": 2}')})
    assert model.complete(first) == _reply('{"x": 1}')  # as recorded, latency included
    assert model.complete(second).text == '{"x": 2}'
    assert model.name == "replay:SmolLM2" and len(model) == 2


def test_accepts_reply_dicts() -> None:
    request = _request("a")
    model = ReplayChatModel({request.hash(): _reply('{"x": 1}').to_dict()})
    assert model.complete(request) == _reply('{"x": 1}')


def test_miss_says_the_request_was_never_recorded() -> None:
    model = ReplayChatModel({_request("a").hash(): _reply('{"x": 1}')})
    missing = _request("b")
    with pytest.raises(ReplayMissError) as info:
        model.complete(missing)
    message = str(info.value)
    assert missing.hash()[:16] in message and "never recorded (1 answers on record)" in message
    assert "same configuration and seeds" in message


def test_recorded_bad_answer_fails_again() -> None:
    request = _request("a")
    model = ReplayChatModel({request.hash(): _reply('[1]')})
    with pytest.raises(ChatAnswerError, match="is not of type 'object'"):
        model.complete(request)
    # Out of bounds only: marked as the live backend marked it.
    marked = ReplayChatModel({request.hash(): _reply('{"x": 99}')}).complete(request)
    assert marked.schema_errors == ("at $.x: 99 is greater than the maximum of 10",)
    assert (
        ReplayChatModel({request.hash(): _reply('{"x": 99}')}, validate="none")
        .complete(request)
        .text
        == '{"x": 99}'
    )


def test_rejects_keys_that_are_not_hashes() -> None:
    with pytest.raises(ValueError, match="keyed by request hash"):
        ReplayChatModel({1: _reply("{}")})  # type: ignore[dict-item]


def test_from_storage_reads_every_trial(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'runs.db'}"
    a, b, c = _request("a"), _request("b"), _request("c")
    _record(
        storage,
        "inner",
        [[(a, _reply('{"x": 1}')), (b, _reply('{"x": 2}'))], [], [(c, _reply('{"x": 3}'))]],
    )
    _record(storage, "other", [[(_request("z"), _reply('{"x": 9}'))]])
    model = ReplayChatModel.from_storage(storage, "inner")
    assert len(model) == 3
    assert [model.complete(q).text for q in (a, b, c)] == ['{"x": 1}', '{"x": 2}', '{"x": 3}']
    with pytest.raises(ReplayMissError):
        model.complete(_request("z"))


def test_from_storage_keeps_the_earliest_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = f"sqlite:///{tmp_path / 'runs.db'}"
    a = _request("a")
    _record(storage, "inner", [[(a, _reply('{"x": 1}'))], [(a, _reply('{"x": 2}'))]])
    assert ReplayChatModel.from_storage(storage, "inner").complete(a).text == '{"x": 1}'
    assert "more than once with different answers" in caplog.text


def test_spec_reads_the_storage(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'runs.db'}"
    a = _request("a")
    _record(storage, "inner-0", [[(a, _reply('{"x": 1}'))]])
    model = get_chat_model(f"replay:{storage}#inner-0")
    assert isinstance(model, ReplayChatModel) and model.complete(a).text == '{"x": 1}'


def test_unknown_study_lists_the_studies(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'runs.db'}"
    _record(storage, "inner-0", [])
    with pytest.raises(ConfigurationError, match="No study named 'nope'.*Studies there: inner-0"):
        ReplayChatModel.from_storage(storage, "nope")


def test_malformed_exchange(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'runs.db'}"
    study = optuna.create_study(study_name="bad", storage=storage)
    attrs = {_attrs.EXCHANGES: [{"hash": "abc"}]}
    study.add_trial(optuna.trial.create_trial(value=0.0, system_attrs=attrs))
    with pytest.raises(ConfigurationError, match="Trial 0 of study 'bad' holds a malformed"):
        ReplayChatModel.from_storage(storage, "bad")


@pytest.mark.postgres
def test_from_postgres_storage_hides_the_password(postgres_url: str) -> None:
    import uuid

    # The test server trusts local connections, so any password gets in; none may be shown.
    storage = postgres_url.replace("postgres@", "postgres:secretpw@")
    name = f"replay-{uuid.uuid4().hex}"
    a = _request("a")
    _record(storage, name, [[(a, _reply('{"x": 1}'))]])
    try:
        assert ReplayChatModel.from_storage(storage, name).complete(a).text == '{"x": 1}'
        with pytest.raises(ConfigurationError) as info:
            ReplayChatModel.from_storage(storage, name + "-missing")
        assert "secretpw" not in str(info.value) and "postgres:***@" in str(info.value)
    finally:
        optuna.delete_study(study_name=name, storage=storage)
