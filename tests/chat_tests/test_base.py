"""The chat protocol's data: requests with several answers, and replies that hold them."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest

from bilevel_optuna.chat import ChatModel
from bilevel_optuna.chat import ChatReply
from bilevel_optuna.chat import ChatRequest
from bilevel_optuna.chat._validation import check_reply
from bilevel_optuna.exceptions import ChatAnswerError

REQUEST = ChatRequest(messages=({"role": "user", "content": "x?"},), seed=3)
SCHEMA = {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}


def test_one_answer_hashes_as_before_n_existed() -> None:
    # Studies stored before ``n`` replay by these hashes: one answer must not change them.
    assert "n" not in json.loads(REQUEST.to_json())
    several = dataclasses.replace(REQUEST, n=4)
    assert json.loads(several.to_json())["n"] == 4
    assert several.hash() != REQUEST.hash()


def test_n_must_be_positive() -> None:
    with pytest.raises(ValueError, match="n must be >= 1"):
        ChatRequest(messages=({"role": "user", "content": "x?"},), n=0)


def test_reply_choices_round_trip_and_texts() -> None:
    one = ChatReply("a", 1, 2, 0.1, "m")
    assert one.texts == ("a",) and "choices" not in one.to_dict()
    assert ChatReply.from_dict(one.to_dict()) == one
    many = ChatReply("a", 1, 6, 0.1, "m", "stop", choices=("a", "b", "c"))
    assert many.texts == ("a", "b", "c")
    assert ChatReply.from_dict(json.loads(json.dumps(many.to_dict()))) == many


def test_every_answer_is_checked() -> None:
    request = dataclasses.replace(REQUEST, json_schema=SCHEMA, n=2)
    good = ChatReply('{"x": 1}', 1, 2, 0.1, "m", "stop", choices=('{"x": 1}', '```json\n{"x": 2}\n```'))
    checked = check_reply(good, request, "schema")
    assert checked.texts == ('{"x": 1}', '{"x": 2}')  # fences stripped from every answer
    assert checked.schema_errors == () and checked.rejected == ()
    # One answer of the wrong shape among usable ones: returned, that answer marked unusable.
    bad = dataclasses.replace(good, choices=('{"x": 1}', '{"y": 2}'))
    marked = check_reply(bad, request, "schema")
    assert marked.rejected == (1,) and marked.usable_texts == ('{"x": 1}',)
    assert marked.texts == ('{"x": 1}', '{"y": 2}')  # the record stays whole
    assert len(marked.schema_errors) == 1
    assert marked.schema_errors[0].startswith("answer 1: ")
    assert "'x' is a required property" in marked.schema_errors[0]
    # None usable: raised, with the first answer's text.
    worse = dataclasses.replace(good, text='{"y": 1}', choices=('{"y": 1}', "no JSON"))
    with pytest.raises(ChatAnswerError, match="does not match the schema") as info:
        check_reply(worse, request, "schema")
    assert info.value.raw == '{"y": 1}'
    assert info.value.reply is not None and info.value.reply.texts[0] == '{"y": 1}'


BOUNDED = {
    "type": "object",
    "properties": {
        "x": {"type": "number", "minimum": 0, "maximum": 15},
        "k": {"enum": ["a", "b"]},
    },
    "required": ["x", "k"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    "text,marks",
    [
        ('{"x": 3, "k": "a"}', ()),
        ('{"x": 20, "k": "a"}', ("at $.x: 20 is greater than the maximum of 15",)),
        (
            '{"x": "3", "k": "A"}',
            ("at $.k: 'A' is not one of ['a', 'b']", "at $.x: '3' is not of type"),
        ),
    ],
)
def test_value_violations_are_marked_not_raised(text: str, marks: tuple[str, ...]) -> None:
    request = dataclasses.replace(REQUEST, json_schema=BOUNDED)
    reply = check_reply(ChatReply(text, 1, 2, 0.1, "m"), request, "schema")
    assert reply.text == text and reply.rejected == ()
    assert len(reply.schema_errors) == len(marks)
    for mark, error in zip(marks, reply.schema_errors):
        assert error.startswith(mark)


@pytest.mark.parametrize(
    "text,phrase",
    [
        ('{"x": 20}', "'k' is a required property"),
        ('{"x": 1, "k": "a", "z": 0}', "Additional properties are not allowed"),
        ('[{"x": 1, "k": "a"}]', "is not of type 'object'"),
        ('{"x": 1, "k":', "not valid JSON"),
    ],
)
def test_shape_violations_and_bad_json_raise(text: str, phrase: str) -> None:
    request = dataclasses.replace(REQUEST, json_schema=BOUNDED)
    with pytest.raises(ChatAnswerError, match=re.escape(phrase)) as info:
        check_reply(ChatReply(text, 1, 2, 0.1, "m"), request, "schema")
    assert info.value.raw == text


def test_marks_are_not_stored() -> None:
    request = dataclasses.replace(REQUEST, json_schema=BOUNDED)
    reply = check_reply(ChatReply('{"x": 20, "k": "a"}', 1, 2, 0.1, "m"), request, "schema")
    assert reply.schema_errors
    stored = reply.to_dict()
    assert "schema_errors" not in stored and "rejected" not in stored
    assert check_reply(ChatReply.from_dict(stored), request, "schema") == reply  # replay agrees


class _Echo(ChatModel):
    """Answers every request with one fixed text."""

    name = "echo"

    def __init__(self, text: str, validate: Any = "schema") -> None:
        self.text = text
        self._validate = validate
        self.calls = 0

    def _complete(self, request: ChatRequest) -> ChatReply:
        self.calls += 1
        return ChatReply(self.text, 1, 2, 0.1, self.name)


def test_complete_checks_the_backends_answer_once() -> None:
    request = dataclasses.replace(REQUEST, json_schema=BOUNDED)
    model = _Echo('```json\n{"x": 99, "k": "b"}\n```')
    reply = model.complete(request)
    assert model.calls == 1
    assert reply.text == '{"x": 99, "k": "b"}' and reply.schema_errors
    with pytest.raises(ChatAnswerError):
        _Echo("nope").complete(request)
    assert _Echo("nope", validate="none").complete(request).text == "nope"


def test_a_backend_must_define_complete_or__complete() -> None:
    with pytest.raises(TypeError, match="must define _complete"):

        class Empty(ChatModel):  # noqa: F841 - the class statement is what fails
            pass

    class Legacy(ChatModel):  # written before the template method: still works, unchecked
        def complete(self, request: ChatRequest) -> ChatReply:
            return ChatReply("not JSON", 1, 2, 0.1, "legacy")

    assert Legacy().complete(dataclasses.replace(REQUEST, json_schema=SCHEMA)).text == "not JSON"
