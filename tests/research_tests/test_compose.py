"""The narrow generation mode: rules under a JSON schema, rendered into gated source."""

from __future__ import annotations

import jsonschema
import pytest
from guard import needs_boundary

from bilevel_optuna.research import RULES
from bilevel_optuna.research import check_source
from bilevel_optuna.research._compose import ComposeError
from bilevel_optuna.research._compose import compose_schema
from bilevel_optuna.research._compose import render
from bilevel_optuna.research._gate import static_check


@needs_boundary
@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_renders_source_the_gate_accepts(rule: str) -> None:
    answer = {"name": "one_rule", "rules": [{"rule": rule, "strength": 0.3}]}
    jsonschema.validate(answer, compose_schema())
    result = check_source(render(answer))
    assert result.accepted, result.reasons
    assert result.hooks == [RULES[rule].hook]
    if RULES[rule].param:
        assert list(result.space) == [RULES[rule].param]


def test_strength_sets_the_default_inside_the_declared_range() -> None:
    source = render(
        {"name": "patient", "rules": [{"rule": "restart_when_stagnant", "strength": 1.0}]}
    )
    assert "patience=15" in source and "IntDistribution(2, 15)" in source
    assert static_check(source).params == ("patience",)


def test_a_repeated_rule_counts_once_and_a_bad_name_is_replaced() -> None:
    source = render({"name": "Bad Name!", "rules": [{"rule": "prefer_far", "strength": 0}] * 2})
    report = static_check(source)
    assert report.ok and report.name.startswith("composed") and report.hooks == ("choose",)


@pytest.mark.parametrize(
    "answer", [{"name": "x_y", "rules": []}, {"name": "x_y", "rules": [{"rule": "rm -rf"}]}]
)
def test_an_unusable_composition_says_why(answer: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ComposeError, match="rule"):
        render(answer)
