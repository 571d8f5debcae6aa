from __future__ import annotations

import json

import pytest
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution

from bilevel_optuna.samplers._answer import RATIONALE_MAX_CHARS
from bilevel_optuna.samplers._answer import AnswerError
from bilevel_optuna.samplers._answer import answer_schema
from bilevel_optuna.samplers._answer import check_search_space
from bilevel_optuna.samplers._answer import parse_answer
from bilevel_optuna.samplers._answer import repair_params

SPACE = {
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "dropout": FloatDistribution(0.0, 0.5, step=0.1),
    "layers": IntDistribution(1, 15),
    "width": IntDistribution(16, 256, step=16),
    "opt": CategoricalDistribution(["adam", "sgd", "rmsprop"]),
    "flag": CategoricalDistribution([True, False, None]),
    "k": CategoricalDistribution([1, 2.5, "three"]),
}
GOOD = {"lr": 1e-3, "dropout": 0.2, "layers": 3, "width": 64, "opt": "adam", "flag": None, "k": 1}


def test_schema_encodes_types_bounds_and_choices() -> None:
    schema = answer_schema(SPACE, 2)
    cand = schema["properties"]["candidates"]
    assert cand["minItems"] == cand["maxItems"] == 2
    props = cand["items"]["properties"]
    assert props["lr"] == {"type": "number", "minimum": 1e-5, "maximum": 1e-1}
    assert props["layers"] == {"type": "integer", "minimum": 1, "maximum": 15}
    assert props["opt"] == {"enum": ["adam", "sgd", "rmsprop"]}
    assert props["flag"] == {"enum": [True, False, None]}
    assert cand["items"]["required"] == list(SPACE)
    assert list(schema["properties"]) == ["candidates", "rationale"]
    assert schema["properties"]["rationale"]["maxLength"] == RATIONALE_MAX_CHARS
    json.dumps(schema)  # serializable


def test_valid_answer_needs_no_repair() -> None:
    params, repairs = repair_params(GOOD, SPACE)
    assert params == GOOD
    assert repairs == []


@pytest.mark.parametrize(
    "name,value,expected,fragment",
    [
        ("layers", 20, 15, "clamped"),  # DESIGN.md: the grammar let 20 through for a max of 15
        ("layers", 2.6, 3, "rounded"),
        ("lr", 5.0, 1e-1, "clamped"),
        ("lr", "0.001", 0.001, "parsed"),
        ("dropout", 0.23, 0.2, "snapped"),
        ("width", 70, 64, "snapped"),
        ("opt", "Adam", "adam", "matched"),
        ("opt", "rmsprp", "rmsprop", "matched"),
        ("k", "2.5", 2.5, "matched"),
    ],
)
def test_repairs(name: str, value: object, expected: object, fragment: str) -> None:
    params, repairs = repair_params({**GOOD, name: value}, SPACE)
    assert (
        params[name] == pytest.approx(expected)
        if isinstance(expected, float)
        else params[name] == expected
    )
    assert any(fragment in r for r in repairs), repairs
    for n, dist in SPACE.items():
        assert dist._contains(dist.to_internal_repr(params[n]))


@pytest.mark.parametrize(
    "raw,fragment",
    [
        ({k: v for k, v in GOOD.items() if k != "lr"}, "lacks ['lr']"),
        ({**GOOD, "opt": "lbfgs"}, "must be one of"),
        ({**GOOD, "lr": "fast"}, "must be a number"),
        ({**GOOD, "lr": float("nan")}, "finite"),
    ],
)
def test_unrepairable_answers_raise_with_the_reason(raw: dict, fragment: str) -> None:
    with pytest.raises(AnswerError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        repair_params(raw, SPACE)


def test_parse_answer_takes_json_from_prose_and_truncates_rationale() -> None:
    text = (
        "Sure! ```json\n"
        + json.dumps({"rationale": "x" * 1000, "candidates": [GOOD, {**GOOD, "opt": "nope"}]})
        + "\n```"
    )
    parsed, errors = parse_answer(text, SPACE, 2)
    assert parsed.candidates == [GOOD]
    assert len(parsed.rationale) == RATIONALE_MAX_CHARS
    assert len(errors) == 1 and "must be one of" in errors[0]


def test_answer_cut_off_in_the_rationale_keeps_its_candidates() -> None:
    text = '{"candidates": [' + json.dumps(GOOD) + '], "rationale": "this goes on and o'
    parsed, _ = parse_answer(text, SPACE, 1)
    assert parsed.candidates == [GOOD]


def test_parse_answer_accepts_a_bare_configuration() -> None:
    parsed, _ = parse_answer(json.dumps(GOOD), SPACE, 1)
    assert parsed.candidates == [GOOD]


@pytest.mark.parametrize("text", ["not json at all", "[1, 2]", '{"candidates": "x"}'])
def test_parse_answer_rejects_garbage(text: str) -> None:
    with pytest.raises(AnswerError):
        parse_answer(text, SPACE, 1)


def test_unsupported_distribution_is_named() -> None:
    from optuna.distributions import BaseDistribution

    class Odd(BaseDistribution):
        def to_internal_repr(self, param_value_in_external_repr: object) -> float:
            return 0.0

        def single(self) -> bool:
            return False

        def _contains(self, param_value_in_internal_repr: float) -> bool:
            return True

    with pytest.raises(ValueError, match="cannot express parameter 'w'"):
        check_search_space({"w": Odd()})


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("move x toward the best trial", "move x toward the best trial"),
        ("  lower  lr\n near the best ", "lower lr near the best"),
        ("", "none given"),
        ("...", "none given"),
        ("Short rationale.", "none given"),
        ("string", "none given"),
        ("N/A", "none given"),
        ("minimal-minimal", "none given"),
        ("minimizing objective value.", "none given"),
        ("}} it is too close to trial 3", "it is too close to trial 3"),
    ],
)
def test_the_stored_rationale_is_a_reason_or_none_given(text: str, stored: str) -> None:
    from bilevel_optuna.samplers._answer import stated_reason

    assert stated_reason(text) == stored
    parsed, _ = parse_answer(
        json.dumps({"rationale": text, "candidates": [GOOD]}), SPACE, n_candidates=1
    )
    assert parsed.rationale == stored


def test_a_bare_configuration_has_no_reason() -> None:
    parsed, _ = parse_answer(json.dumps(GOOD), SPACE, n_candidates=1)
    assert parsed.rationale == "none given"
