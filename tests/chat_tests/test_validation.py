"""validate_answer: JSON parsing and schema checks, with messages that say what to do."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bilevel_optuna.chat import ChatReply
from bilevel_optuna.chat import ChatRequest
from bilevel_optuna.chat import validate_answer
from bilevel_optuna.chat._validation import check_reply
from bilevel_optuna.exceptions import ChatAnswerError
from bilevel_optuna.exceptions import ConfigurationError

SCHEMA = {
    "type": "object",
    "properties": {
        "lr": {"type": "number", "minimum": 0.0001, "maximum": 1},
        "layers": {"type": "integer"},
        "act": {"enum": ["relu", "tanh"]},
    },
    "required": ["lr", "layers"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    "text,expected",
    [
        ('{"lr": 0.1, "layers": 2}', {"lr": 0.1, "layers": 2}),
        ('  {"lr": 1, "layers": 3, "act": "tanh"}\n', {"lr": 1, "layers": 3, "act": "tanh"}),
        ('```json\n{"lr": 0.5, "layers": 1}\n```', {"lr": 0.5, "layers": 1}),
        ('```\n{"lr": 0.5, "layers": 1}```', {"lr": 0.5, "layers": 1}),
    ],
)
def test_valid_answers(text: str, expected: dict[str, Any]) -> None:
    assert validate_answer(text, SCHEMA) == expected


@pytest.mark.parametrize(
    "text,phrases",
    [
        ("", ["not valid JSON", "structured output"]),
        ("I suggest lr=0.1", ["not valid JSON", "'I suggest lr=0.1'"]),
        ('{"lr": 2, "layers": 2}', ["at $.lr: 2 is greater than the maximum of 1"]),
        ('{"lr": 0.1}', ["at $: 'layers' is a required property"]),
        ('{"lr": 0.1, "layers": 1.5}', ["at $.layers: 1.5 is not of type 'integer'"]),
        ('{"lr": 0.1, "layers": 1, "act": "gelu"}', ["at $.act: 'gelu' is not one of"]),
        ('{"lr": 0.1, "layers": 1, "extra": 0}', ["Additional properties are not allowed"]),
        ("[1, 2]", ["at $: [1, 2] is not of type 'object'"]),
        ('{"lr": 5, "layers": "x", "act": 1, "b": 2}', ["; and 1 more"]),
    ],
)
def test_invalid_answers(text: str, phrases: list[str]) -> None:
    with pytest.raises(ChatAnswerError) as info:
        validate_answer(text, SCHEMA)
    assert info.value.raw == text
    for phrase in phrases:
        assert phrase in str(info.value)


def test_long_answers_are_quoted_short() -> None:
    text = "x" * 5000
    with pytest.raises(ChatAnswerError) as info:
        validate_answer(text)
    assert "(5000 characters)" in str(info.value) and len(str(info.value)) < 600
    assert info.value.raw == text


def test_cut_off_answer_says_so() -> None:
    with pytest.raises(ChatAnswerError, match="cut off at max_tokens=64: raise max_tokens"):
        validate_answer('{"lr": 0.', SCHEMA, finish_reason="length", max_tokens=64)


def test_no_schema_checks_only_json() -> None:
    assert validate_answer('{"anything": [1, 2]}') == {"anything": [1, 2]}


def test_invalid_schema_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="not a valid JSON schema"):
        validate_answer("{}", {"type": "no-such-type"})


def test_remote_refs_are_not_fetched() -> None:
    with pytest.raises(ConfigurationError, match="'http://x/y.json', which cannot be resolved"):
        validate_answer("{}", {"$ref": "http://x/y.json"})


def test_local_refs_resolve() -> None:
    schema = {
        "$defs": {"lr": {"type": "number", "maximum": 1}},
        "properties": {"lr": {"$ref": "#/$defs/lr"}},
    }
    assert validate_answer('{"lr": 0.5}', schema) == {"lr": 0.5}
    with pytest.raises(ChatAnswerError, match="maximum of 1"):
        validate_answer('{"lr": 5}', schema)


def _reply(text: str) -> ChatReply:
    return ChatReply(text=text, prompt_tokens=3, completion_tokens=4, latency_s=0.1, model="m")


@pytest.mark.parametrize(
    "validate,text,outcome",
    [
        ("schema", '{"lr": 0.1, "layers": 1}', '{"lr": 0.1, "layers": 1}'),
        ("schema", '```json\n{"lr": 0.1, "layers": 1}\n```', '{"lr": 0.1, "layers": 1}'),
        ("schema", '{"lr": 9, "layers": 1}', '{"lr": 9, "layers": 1}'),  # marked, not raised
        ("schema", '{"lr": 0.1}', ChatAnswerError),
        ("json", '{"lr": 9, "layers": 1}', '{"lr": 9, "layers": 1}'),
        ("json", "lr is 9", ChatAnswerError),
        ("none", "lr is 9", "lr is 9"),
    ],
)
def test_check_reply_modes(validate: Any, text: str, outcome: Any) -> None:
    request = ChatRequest(messages=({"role": "user", "content": "?"},), json_schema=SCHEMA)
    if outcome is ChatAnswerError:
        with pytest.raises(ChatAnswerError, match="from m ") as info:
            check_reply(_reply(text), request, validate)
        assert info.value.reply == _reply(text)
    else:
        assert check_reply(_reply(text), request, validate).text == outcome


def test_free_text_requests_are_not_checked() -> None:
    request = ChatRequest(messages=({"role": "user", "content": "?"},))
    assert check_reply(_reply("prose"), request, "schema").text == "prose"


@pytest.mark.parametrize(
    "text,unwrapped",
    [
        ('Here you go: {"lr": 0.1, "layers": 2} Good luck!', '{"lr": 0.1, "layers": 2}'),
        ('Sure!\n```json\n{"lr": 0.1, "layers": 2}\n```', '{"lr": 0.1, "layers": 2}'),
        ('{"lr": 0.1, "layers": 2}\nThat is my answer.', '{"lr": 0.1, "layers": 2}'),
    ],
)
def test_prose_around_one_object_is_dropped(text: str, unwrapped: str) -> None:
    request = ChatRequest(messages=({"role": "user", "content": "?"},), json_schema=SCHEMA)
    assert check_reply(_reply(text), request, "schema").text == unwrapped
    assert validate_answer(text, SCHEMA) == json.loads(unwrapped)


def test_prose_with_no_whole_object_still_fails() -> None:
    with pytest.raises(ChatAnswerError, match="not valid JSON"):
        validate_answer('I would try {"lr": 0.1, "layers": and see', SCHEMA)
