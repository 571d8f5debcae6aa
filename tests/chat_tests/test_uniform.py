"""UniformChatModel, the null model: valid, seeded, uniform answers; clear errors where it can't."""

from __future__ import annotations

import json
import statistics
from typing import Any

import jsonschema
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution

from bilevel_optuna import _attrs
from bilevel_optuna.chat import ChatRequest
from bilevel_optuna.chat import get_chat_model
from bilevel_optuna.chat._uniform import UniformChatModel
from bilevel_optuna.chat._uniform import UnsupportedRequestError
from bilevel_optuna.exceptions import ChatModelError
from bilevel_optuna.research._compose import compose_schema
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.samplers._answer import answer_schema

SPACE = {
    "x": FloatDistribution(-5.0, 10.0),
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "layers": IntDistribution(1, 4),
    "act": CategoricalDistribution(["relu", "tanh", None, 3]),
}
USER = ({"role": "user", "content": "Propose a configuration."},)


def _ask(schema: dict[str, Any] | None, *, seed: int | None = 0, n: int = 1) -> Any:
    return UniformChatModel().complete(
        ChatRequest(messages=USER, json_schema=schema, seed=seed, n=n)
    )


def test_spec_names_the_uniform_model() -> None:
    model = get_chat_model("uniform")
    assert isinstance(model, UniformChatModel)
    assert model.name == "uniform"
    assert get_chat_model(" uniform ").name == "uniform"


@pytest.mark.parametrize("rationale", [True, False])
@pytest.mark.parametrize("n_candidates", [1, 3])
def test_answers_follow_the_sampler_schema(rationale: bool, n_candidates: int) -> None:
    schema = answer_schema(SPACE, n_candidates, rationale=rationale)
    reply = _ask(schema, n=2)
    assert reply.prompt_tokens == 0 and reply.completion_tokens == 0
    assert reply.model == "uniform" and reply.finish_reason == "stop"
    assert len(reply.texts) == 2 and reply.schema_errors == () and reply.rejected == ()
    for text in reply.texts:
        answer = json.loads(text)
        jsonschema.validate(answer, schema)


def test_same_request_same_answer_other_seed_other_answer() -> None:
    schema = answer_schema(SPACE, 1, rationale=False)
    assert _ask(schema, seed=1).text == _ask(schema, seed=1).text
    assert _ask(schema, seed=1).text != _ask(schema, seed=2).text
    several = _ask(schema, seed=1, n=4).texts
    assert len(set(several)) == 4  # the n answers are drawn independently


def test_values_are_uniform_over_the_schema() -> None:
    schema = answer_schema(SPACE, 1, rationale=False)
    answers = [json.loads(_ask(schema, seed=s).text) for s in range(2000)]
    xs = [a["x"] for a in answers]
    assert -5.0 <= min(xs) < -4.8 and 9.8 < max(xs) <= 10.0
    # Mean 2.5 and standard deviation 15 / sqrt(12) = 4.33 for U(-5, 10): the mean of 2000
    # draws is within 0.3 of 2.5 unless the draw is skewed.
    assert abs(statistics.fmean(xs) - 2.5) < 0.3
    assert abs(statistics.pstdev(xs) - 15 / 12**0.5) < 0.3
    for key, values in (("layers", [1, 2, 3, 4]), ("act", ["relu", "tanh", None, 3])):
        counts = [sum(a[key] == v for a in answers) for v in values]
        assert all(400 < c < 600 for c in counts), (key, counts)  # 500 expected each
    assert all(isinstance(a["layers"], int) for a in answers)


def test_answers_the_research_round_schemas() -> None:
    ideas = {  # the ideas step of a research round (research/_round.py)
        "type": "object",
        "properties": {
            "ideas": {
                "type": "array",
                "minItems": 1,
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "field": {"type": "string", "enum": ["geometry", "memory"]},
                        "idea": {"type": "string", "maxLength": 160},
                    },
                    "required": ["field", "idea"],
                },
            }
        },
        "required": ["ideas"],
    }
    for schema in (ideas, compose_schema(), {"type": "object"}):
        for seed in range(50):
            jsonschema.validate(json.loads(_ask(schema, seed=seed).text), schema)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "minimum": 3, "maximum": 12, "multipleOf": 3},
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1e-9},
        {"type": "number", "minimum": 7},
        {"type": ["string", "null"], "minLength": 2, "maxLength": 4},
        {"anyOf": [{"type": "boolean"}, {"const": "x"}]},
        {
            "$defs": {"p": {"type": "integer", "maximum": -2}},
            "type": "array",
            "items": {"$ref": "#/$defs/p"},
            "minItems": 2,
        },
        {"type": "object", "required": ["free"]},
    ],
)
def test_answers_other_schemas(schema: dict[str, Any]) -> None:
    for seed in range(30):
        jsonschema.validate(json.loads(_ask(schema, seed=seed).text), schema)


def test_free_text_is_a_clear_error() -> None:
    with pytest.raises(UnsupportedRequestError, match="only requests with a JSON schema"):
        _ask(None)
    assert issubclass(UnsupportedRequestError, ChatModelError)  # a research round records it


@pytest.mark.parametrize(
    "schema,where",
    [
        ({"allOf": [{"type": "integer"}, {"minimum": 2}]}, "'allOf'"),
        ({"type": "object", "properties": {"k": {"not": {"type": "null"}}}}, r"\$\.k: 'not'"),
        ({"type": "string", "pattern": "^[A-Z]{3}$"}, "pattern"),
        ({"type": "integer", "minimum": 1.2, "maximum": 1.8}, "no multiple"),
        ({"$ref": "https://example.com/s.json"}, "outside the schema"),
    ],
)
def test_schemas_it_cannot_draw_from_are_clear_errors(schema: dict[str, Any], where: str) -> None:
    with pytest.raises(UnsupportedRequestError, match=where):
        _ask(schema)


def _study(seed: int) -> optuna.Study:
    sampler = LLMSampler(model="uniform", search_space=SPACE, seed=seed, n_candidates=2)
    study = optuna.create_study(sampler=sampler)
    study.optimize(
        lambda t: t.suggest_float("x", -5.0, 10.0)
        + t.suggest_float("lr", 1e-5, 1e-1, log=True)
        + t.suggest_int("layers", 1, 4)
        + (t.suggest_categorical("act", ["relu", "tanh", None, 3]) == 3),
        n_trials=6,
    )
    return study


def test_llm_sampler_with_the_uniform_model_is_reproducible() -> None:
    first, again, other = _study(0), _study(0), _study(1)
    assert [t.params for t in first.trials] == [t.params for t in again.trials]
    assert [t.params for t in first.trials] != [t.params for t in other.trials]
    sources = {t.user_attrs[_attrs.SOURCE] for t in first.trials}
    assert "fallback" not in sources  # every proposal came from the (null) model's answers
    asked = [t for t in first.trials if _attrs.MODEL in t.user_attrs]
    assert asked and all(t.user_attrs[_attrs.MODEL] == "uniform" for t in asked)
    assert all(t.user_attrs.get(_attrs.COMPLETION_TOKENS, 0) == 0 for t in first.trials)
