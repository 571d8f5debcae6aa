"""What an OpenAI-compatible request sends (chat/_openai_format.py): strict structured output
only for schemas that qualify, the schema in the prompt where the format cannot carry it, and
which request field an endpoint's refusal is about."""

from __future__ import annotations

from typing import Any

import pytest
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution

from bilevel_optuna.chat._openai_format import rejected_param
from bilevel_optuna.chat._openai_format import response_format
from bilevel_optuna.chat._openai_format import strict_qualifies
from bilevel_optuna.chat._openai_format import with_schema_instruction
from bilevel_optuna.samplers import answer_schema

#: Schemas as in test_openai.py: one that does not qualify for strict mode, one that does.
SCHEMA = {
    "type": "object",
    "properties": {"x": {"type": "number", "minimum": 0, "maximum": 15}},
    "required": ["x"],
}
STRICT_SCHEMA = {
    "type": "object",
    "properties": {
        "x": {"type": "number", "minimum": 0, "maximum": 15},
        "note": {"type": "string", "maxLength": 20},
    },
    "required": ["x", "note"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    "schema,qualifies",
    [
        (STRICT_SCHEMA, True),
        (SCHEMA, False),  # no additionalProperties: false
        ({**STRICT_SCHEMA, "required": ["x"]}, False),  # an optional property
        (
            {
                "type": "object",
                "properties": {"c": {"type": "array", "items": {"type": "object"}}},
                "required": ["c"],
                "additionalProperties": False,
            },
            False,  # a nested object that allows anything
        ),
        (
            {"type": "object", "properties": {}, "required": [], "additionalProperties": False},
            True,
        ),
    ],
)
def test_strict_qualification(schema: dict[str, Any], qualifies: bool) -> None:
    assert strict_qualifies(schema) is qualifies


def test_the_answer_schema_qualifies_for_strict() -> None:
    space = {
        "lr": FloatDistribution(1e-5, 1e-1, log=True),
        "layers": IntDistribution(1, 8),
        "act": CategoricalDistribution(["relu", "tanh"]),
    }
    assert strict_qualifies(answer_schema(space, 3))


def test_the_response_format_field_per_format() -> None:
    schema = {"type": "object"}
    assert response_format("json_schema", schema, strict=True) == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": True},
    }
    plain = response_format("json_schema", schema)
    assert plain is not None and "strict" not in plain["json_schema"]
    assert response_format("json_object", schema) == {"type": "json_object"}
    assert response_format("text", schema) is None


def test_the_schema_joins_the_system_message_or_becomes_one() -> None:
    schema = {"type": "object"}
    user = {"role": "user", "content": "Hi"}
    alone = with_schema_instruction([user], schema)
    assert alone[0]["role"] == "system" and '{"type": "object"}' in alone[0]["content"]
    assert alone[1] == user
    joined = with_schema_instruction([{"role": "system", "content": "Be brief."}, user], schema)
    assert len(joined) == 2 and joined[0]["content"].startswith("Be brief.\n\n")


@pytest.mark.parametrize(
    "body,text,field",
    [
        ({"param": "response_format.json_schema"}, "", "response_format"),
        ({"detail": [{"loc": ["body", "temperature"]}]}, "", "temperature"),
        (None, "Unsupported parameter: max_completion_tokens", "max_completion_tokens"),
        (None, "'seed' is not supported", "seed"),
        (None, "something else went wrong with 'foo'", None),
    ],
)
def test_which_field_a_refusal_names(body: object, text: str, field: str | None) -> None:
    assert rejected_param(body, text, "max_completion_tokens") == field
