"""The chat protocol's data: requests with several answers, and replies that hold them."""

from __future__ import annotations

import dataclasses
import json

import pytest

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
    bad = dataclasses.replace(good, choices=('{"x": 1}', '{"y": 2}'))
    with pytest.raises(ChatAnswerError, match="does not match the schema") as info:
        check_reply(bad, request, "schema")
    assert info.value.reply is not None and info.value.reply.texts[0] == '{"x": 1}'
