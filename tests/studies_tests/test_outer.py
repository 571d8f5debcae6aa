"""The outer study's first trials: LLMSampler's presets, where the space can express them."""

from __future__ import annotations

import optuna
import pytest

from bilevel_optuna import _attrs
from bilevel_optuna.samplers._presets import preset
from bilevel_optuna.studies import OuterSpace
from bilevel_optuna.studies import load_spec
from bilevel_optuna.studies._config import ProposerConfig
from bilevel_optuna.studies._outer import enqueue_presets


def _first_config(study: optuna.Study, space: OuterSpace) -> ProposerConfig:
    trial = study.ask()
    return space.suggest(trial)


def test_the_demo_starts_from_the_shipped_default() -> None:
    spec = load_spec("demo")
    space = spec.settings.outer.space
    assert spec.settings.outer.start_from == ("default",)
    study = optuna.create_study()
    enqueue_presets(study, space, spec.settings.outer.start_from)
    assert study.trials[0].user_attrs[_attrs.REFERENCE] == "preset default"
    # The same sampler settings as LLMSampler(), every mechanism parameter spelled out.
    first = _first_config(study, space).sampler_kwargs()
    shipped = ProposerConfig.from_dict(preset("default")).sampler_kwargs()
    assert repr(first) == repr(shipped)


def test_a_preset_the_space_cannot_express_is_skipped_with_a_warning() -> None:
    space = OuterSpace(template="minimal", mechanisms=["tabu"])
    study = optuna.create_study()
    with pytest.warns(UserWarning, match="cannot express LLMSampler's preset 'default'"):
        enqueue_presets(study, space, ["level0", "default"])
    assert not study.trials  # Level 0 (template "default") is left out without a word


def test_an_unknown_preset_is_an_error_naming_the_valid_ones() -> None:
    from bilevel_optuna.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="default"):
        enqueue_presets(optuna.create_study(), OuterSpace(), ["defualt"])
