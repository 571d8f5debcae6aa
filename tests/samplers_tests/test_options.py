"""LLMSampler's options (samplers/_options.py): the preset fills what is not given, and each bad
value is refused before any trial, with an error that names the option."""

from __future__ import annotations

import pytest
from chat_doubles import ScriptedChatModel

from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.samplers import TEMPLATES
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.samplers import PromptTemplate
from bilevel_optuna.samplers._options import prompt_options
from bilevel_optuna.samplers._presets import PRESETS

_NONE = dict(
    temperature=None,
    history_size=None,
    history_order=None,
    template=None,
    n_candidates=None,
    mechanisms=None,
    optimizer_state=None,
    state_mode=None,
)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_the_preset_fills_every_option_not_given(preset: str) -> None:
    options = prompt_options(preset, **_NONE)
    settings = PRESETS[preset]
    assert options.temperature == settings["temperature"]
    assert options.history_size == settings["history_size"]
    assert options.history_order == settings["history_order"]
    assert options.template is TEMPLATES[settings["template"]]
    assert options.n_candidates == settings["n_candidates"]
    assert [n for n, _ in options.mechanisms] == [n for n, _ in settings["mechanisms"]]
    assert options.state_mode == settings.get("state_mode", "beside")


def test_options_given_override_the_preset() -> None:
    template = PromptTemplate(name="mine", system="Propose.", ask="Propose one.", rationale=False)
    given = dict(_NONE, temperature=0.0, history_size=3, template=template, mechanisms=[])
    options = prompt_options("default", **given)
    assert (options.temperature, options.history_size) == (0.0, 3)
    assert options.template is template
    assert options.mechanisms == []
    sampler = LLMSampler(model=ScriptedChatModel(lambda r, i: ""), **given)
    assert (sampler.temperature, sampler.history_size, sampler.mechanisms) == (0.0, 3, [])


def test_an_unknown_preset_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="preset must be one of"):
        LLMSampler(preset="best", model=ScriptedChatModel(lambda r, i: ""))


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"temperature": -1}, "temperature must be >= 0"),
        ({"history_size": -1}, "history_size must be >= 0"),
        ({"history_order": "random"}, "history_order must be one of"),
        ({"template": "fancy"}, "template must be one of"),
        ({"n_candidates": 0}, "n_candidates must be >= 1"),
        ({"max_attempts": 0}, "max_attempts must be >= 1"),
        ({"max_tokens": 8}, "max_tokens must be >= 16"),
        ({"hook_timeout": 0}, "hook_timeout must be > 0"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        LLMSampler(preset="level0", model=ScriptedChatModel(lambda r, i: ""), **kwargs)


@pytest.mark.parametrize(
    "kwargs,phrase",
    [
        ({"on_model_error": "ignore"}, "on_model_error must be one of"),
        ({"max_cost": 1.0}, "needs the model's prices"),
        ({"max_tokens_total": -1}, "max_tokens_total must be an int >= 0"),
        ({"token_prices": (1.0,)}, "token_prices must be two numbers"),
    ],
)
def test_invalid_policy_settings_name_the_fix(kwargs: dict, phrase: str) -> None:
    with pytest.raises(ConfigurationError, match=phrase):
        LLMSampler(model=ScriptedChatModel(lambda r, i: "{}"), **kwargs)
