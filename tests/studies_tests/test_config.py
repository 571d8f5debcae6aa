from __future__ import annotations

import optuna
import pytest
from optuna.distributions import IntDistribution

from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.studies import LEVEL0
from bilevel_optuna.studies import OuterSpace
from bilevel_optuna.studies import ProposerConfig


def test_config_round_trips_and_hash_is_stable() -> None:
    config = ProposerConfig(temperature=0.3, mechanisms=(("tabu", {"radius": 0.1, "tenure": 5}),))
    again = ProposerConfig.from_dict(config.to_dict())
    assert again == config
    assert again.key() == config.key()
    assert config.key() != LEVEL0.key()


def test_config_builds_a_sampler_with_its_mechanisms() -> None:
    config = ProposerConfig(mechanisms=(("tabu", {"radius": 0.2}),))
    sampler = LLMSampler(model="local", **config.sampler_kwargs())
    assert [m.name for m in sampler.mechanisms] == ["tabu"]
    assert sampler.mechanisms[0].radius == 0.2


def test_unknown_setting_lists_valid_ones() -> None:
    with pytest.raises(ConfigurationError, match="valid ones are"):
        ProposerConfig.from_dict({"temprature": 0.5})


def test_space_suggests_conditional_mechanism_parameters() -> None:
    space = OuterSpace(mechanisms=["tabu", "trust_region"], max_mechanisms=2)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_on = set()
    for _ in range(20):
        trial = study.ask()
        config = space.suggest(trial)
        study.tell(trial, 0.0)
        for name, params in config.mechanisms:
            seen_on.add(name)
            prefix = f"mech.{name}."
            assert {k[len(prefix) :] for k in trial.params if k.startswith(prefix)} == set(params)
        off = {"tabu", "trust_region"} - {n for n, _ in config.mechanisms}
        for name in off:
            assert not any(k.startswith(f"mech.{name}.") for k in trial.params)
    assert seen_on == {"tabu", "trust_region"}


def test_fixed_and_narrowed_settings() -> None:
    space = OuterSpace(temperature=0.5, history_size=IntDistribution(3, 4), mechanisms=[])
    trial = optuna.create_study().ask()
    config = space.suggest(trial)
    assert config.temperature == 0.5
    assert 3 <= config.history_size <= 4
    assert "temperature" not in trial.params


def test_params_of_reproduces_a_config() -> None:
    space = OuterSpace(mechanisms=["tabu"])
    config = ProposerConfig(
        temperature=0.9, mechanisms=(("tabu", {"radius": 0.05, "tenure": 3, "on_reject": "ask"}),)
    )
    study = optuna.create_study()
    study.enqueue_trial(space.params_of(config))
    assert space.suggest(study.ask()) == config


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"history_order": "sideways"}, "history_order must be one of"),
        ({"template": "nope"}, "template must be one of"),
        ({"mechanisms": ["warp_drive"]}, "Unknown mechanism 'warp_drive'"),
        ({"temperature": -1.0}, "temperature must be >= 0"),
    ],
)
def test_bad_space_is_refused(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        OuterSpace(**kwargs)


def test_level0_is_enqueued_only_where_the_space_holds_it() -> None:
    from bilevel_optuna.studies._outer import represents as _represents

    wide = OuterSpace()
    assert _represents(wide, wide.params_of(LEVEL0), LEVEL0)
    narrow = OuterSpace(history_size=10)  # Level 0 shows 15 trials
    assert not _represents(narrow, narrow.params_of(LEVEL0), LEVEL0)


def test_state_settings_are_outer_choices_and_old_keys_stay() -> None:
    # A configuration without a state keeps the key it had before the setting existed.
    assert "optimizer_state" not in LEVEL0.to_dict()
    assert LEVEL0.key() == ProposerConfig.from_dict(LEVEL0.to_dict()).key()
    state = ProposerConfig(optimizer_state="tpe", state_mode="instead")
    assert ProposerConfig.from_dict(state.to_dict()) == state
    assert state.key() != LEVEL0.key()
    sampler = LLMSampler(model="local", **state.sampler_kwargs())
    assert (sampler.optimizer_state, sampler.state_mode) == ("tpe", "instead")
    space = OuterSpace(mechanisms=[])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        config = space.suggest(trial)
        study.tell(trial, 0.0)
        seen.add((config.optimizer_state, config.state_mode))
        # The placement is drawn only where a state is shown.
        assert ("state_mode" in trial.params) == (config.optimizer_state != "none")
    assert {s for s, _ in seen} == {"none", "cmaes", "tpe"}
    assert ("cmaes", "instead") in seen or ("tpe", "instead") in seen
    for config in (state, LEVEL0):
        enqueued = optuna.create_study()
        enqueued.enqueue_trial(space.params_of(config))
        assert space.suggest(enqueued.ask()) == config


def test_the_classical_sampler_in_control_is_an_outer_choice() -> None:
    space = OuterSpace(mechanisms=["classical"], max_mechanisms=1)
    choices = space.mechanisms["classical"].search_space()["sampler"].choices
    assert "cmaes" in choices and "tpe" in choices
