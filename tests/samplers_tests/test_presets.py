"""The named configurations: the default LLMSampler() uses, and Level 0 by name."""

from __future__ import annotations

import json

import optuna
import pytest
from chat_doubles import ScriptedChatModel

from bilevel_optuna import _attrs
from bilevel_optuna.chat import ChatRequest
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.samplers._presets import PRESETS

_SPACE = {
    "x": optuna.distributions.FloatDistribution(-5.0, 5.0),
    "y": optuna.distributions.FloatDistribution(-5.0, 5.0),
}


def _settings(sampler: LLMSampler) -> dict:
    return {
        "temperature": sampler.temperature,
        "history_size": sampler.history_size,
        "history_order": sampler.history_order,
        "template": sampler.template.name,
        "n_candidates": sampler.n_candidates,
        "mechanisms": [(m.name, m.params()) for m in sampler.mechanisms],
    }


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_is_loaded_from_where_it_is_declared(name: str) -> None:
    declared = PRESETS[name]
    sampler = LLMSampler() if name == "default" else LLMSampler(preset=name)
    got = _settings(sampler)
    for key in ("temperature", "history_size", "history_order", "template", "n_candidates"):
        assert got[key] == declared[key]
    assert [n for n, _ in got["mechanisms"]] == [n for n, _ in declared["mechanisms"]]
    for (_, params), (_, wanted) in zip(got["mechanisms"], declared["mechanisms"]):
        assert {k: params[k] for k in wanted} == wanted


def test_level0_has_no_mechanism_and_the_first_shipped_settings() -> None:
    sampler = LLMSampler(preset="level0")
    assert sampler.mechanisms == []
    assert (sampler.temperature, sampler.history_size, sampler.history_order) == (0.7, 15, "best")
    assert sampler.template.name == "default"


def test_given_settings_override_the_preset() -> None:
    sampler = LLMSampler(temperature=0.2, mechanisms=[])
    assert sampler.temperature == 0.2 and sampler.mechanisms == []
    assert sampler.template.name == PRESETS["default"]["template"]


def test_an_unknown_preset_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"preset must be one of \['default', 'level0'\]"):
        LLMSampler(preset="best")


def test_the_default_runs_a_study_with_fewer_model_calls_than_trials() -> None:
    def answer(request: ChatRequest, index: int) -> str:
        return json.dumps({"x": 0.5 + 0.01 * index, "y": -1.0})

    model = ScriptedChatModel(answer)
    study = optuna.create_study(sampler=LLMSampler(model=model, search_space=_SPACE, seed=0))
    study.optimize(lambda t: t.suggest_float("x", -5, 5) ** 2 + t.suggest_float("y", -5, 5), n_trials=12)
    assert len(study.trials) == 12
    sources = [t.user_attrs[_attrs.SOURCE] for t in study.trials]
    # The classical sampler takes the trials the model is not given.
    assert 0 < len(model.requests) < 12
    assert sources.count("mechanism") >= 12 - len(model.requests)
    # The compact template asks for a bare configuration: no rationale in the schema.
    assert "rationale" not in json.dumps(model.requests[0].json_schema)
