"""The run's settings objects (studies/specs/_settings.py): validated where built, stored and
read back, and run_bilevel_study's keywords mapped onto them."""

from __future__ import annotations

import dataclasses
import json

import pytest
from optuna.distributions import IntDistribution
from optuna.samplers import RandomSampler

from bilevel_optuna import BilevelSettings
from bilevel_optuna import InnerSettings
from bilevel_optuna import ModelSettings
from bilevel_optuna import OuterSettings
from bilevel_optuna import OuterSpace
from bilevel_optuna import get_objective
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.studies.specs._settings import KEYWORDS
from bilevel_optuna.studies.specs._settings import with_keywords


def test_the_defaults_are_the_previous_releases_keyword_defaults() -> None:
    settings = BilevelSettings()
    assert (settings.inner.n_trials, settings.inner.n_repeats) == (20, 3)
    assert settings.inner.seeds is None and settings.inner.heldout_seeds is None
    outer = settings.outer
    assert (outer.n_trials, outer.sampler, outer.aggregate) == (8, "tpe", "auto")
    assert outer.prune
    assert outer.baselines == ("random", "tpe", "llm-level0") and outer.start_from == ("level0",)
    assert outer.space == OuterSpace() and not outer.cost_objective
    assert settings.model == ModelSettings(None, "raise", None, None, None)
    assert settings.seed == 0


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: InnerSettings(n_trials=0), "InnerSettings.n_trials must be a positive integer"),
        (lambda: InnerSettings(n_repeats=True), "InnerSettings.n_repeats must be"),
        (lambda: InnerSettings(seeds=[1, 1]), "InnerSettings.seeds must be distinct"),
        (lambda: InnerSettings(heldout_seeds=[]), "InnerSettings.heldout_seeds must be distinct"),
        (lambda: InnerSettings(seeds="123"), "InnerSettings.seeds must be a list of integers"),
        (lambda: OuterSettings(n_trials=-1), "OuterSettings.n_trials must be a positive"),
        (lambda: OuterSettings(sampler="cmaes"), r"OuterSettings.sampler must be one of"),
        (lambda: OuterSettings(aggregate="mean"), r"OuterSettings.aggregate must be one of"),
        (lambda: OuterSettings(prune="yes"), "OuterSettings.prune must be True or False"),
        (
            lambda: OuterSettings(cost_objective="time"),
            r"cost_objective must be False, True or one of \('tokens', 'seconds'\)",
        ),
        (lambda: OuterSettings(baselines=["smac"]), r"Unknown baselines \['smac'\]"),
        (lambda: OuterSettings(baselines="random"), "OuterSettings.baselines must be a list"),
        (lambda: OuterSettings(start_from=["defualt"]), "start_from"),
        (lambda: OuterSettings(space={"mechanisms": []}), "OuterSettings.space must be"),
        (lambda: ModelSettings(on_model_error="ignore"), "on_model_error must be one of"),
        (lambda: ModelSettings(max_cost=1.0), "needs the model's prices"),
        (lambda: ModelSettings(model=3), "ModelSettings.model must be a chat model spec"),
        (lambda: BilevelSettings(model="local"), r"chat model spec goes in ModelSettings\(model"),
        (lambda: BilevelSettings(inner=OuterSettings()), "BilevelSettings.inner must be"),
        (lambda: BilevelSettings(seed=-1), "BilevelSettings.seed must be"),
    ],
)
def test_a_wrong_setting_fails_where_it_is_built_naming_the_field(build, message) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build()


def test_settings_are_frozen_and_sequences_become_tuples() -> None:
    inner = InnerSettings(seeds=[3, 4], heldout_seeds=[5, 6, 7])
    assert inner.seeds == (3, 4) and inner.heldout_seeds == (5, 6, 7)
    assert ModelSettings(token_prices=[1, 2]).token_prices == (1.0, 2.0)
    assert OuterSettings(baselines=["tpe"], start_from=[]).baselines == ("tpe",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        inner.n_trials = 3  # type: ignore[misc]


def test_the_cost_objective_is_named_and_true_is_the_tokens_of_earlier_releases() -> None:
    assert OuterSettings(cost_objective=True).cost_objective == "tokens"
    assert OuterSettings(cost_objective="seconds").cost_objective == "seconds"
    assert OuterSettings().cost_objective is False
    # A run stored by an earlier release (True) reads back as the tokens it meant.
    stored = {**OuterSettings().to_dict(), "cost_objective": True}
    assert OuterSettings.from_dict(stored).cost_objective == "tokens"


def test_to_dict_is_json_and_from_dict_gives_the_same_settings() -> None:
    settings = BilevelSettings(
        inner=InnerSettings(n_trials=7, seeds=[3, 4], heldout_seeds=[5, 6, 7]),
        outer=OuterSettings(
            n_trials=4,
            space=OuterSpace(
                temperature=0.5, history_size=IntDistribution(3, 9), mechanisms=["tabu"]
            ),
            sampler="random",
            aggregate="best",
            prune=False,
            baselines=["tpe"],
            start_from=["default"],
        ),
        model=ModelSettings(
            "openai:m@https://user:sk-secret@host/v1", max_cost=2, token_prices=[1, 2]
        ),
        seed=5,
    )
    data = json.loads(json.dumps(settings.to_dict()))
    assert data["model"]["model"] == "openai:m@https://host/v1"  # no credentials stored
    again = BilevelSettings.from_dict(data)
    assert again == dataclasses.replace(
        settings, model=dataclasses.replace(settings.model, model="openai:m@https://host/v1")
    )
    assert BilevelSettings.from_dict(BilevelSettings().to_dict()) == BilevelSettings()
    with pytest.raises(ConfigurationError, match=r"Unknown inner settings \['n_trails'\]"):
        BilevelSettings.from_dict({"inner": {"n_trails": 3}})


def test_objects_that_have_no_stored_form_are_stored_as_none() -> None:
    settings = BilevelSettings(outer=OuterSettings(sampler=RandomSampler(seed=0)))
    assert settings.to_dict()["outer"]["sampler"] is None
    assert BilevelSettings.from_dict(settings.to_dict()).outer.sampler == "tpe"  # the default


def test_resolved_spells_out_what_the_run_uses() -> None:
    branin = get_objective("branin")
    resolved = BilevelSettings(
        inner=InnerSettings(n_repeats=2), outer=OuterSettings(baselines=["tpe"]), seed=3
    ).resolved([branin])
    assert resolved.inner.seeds == (3000, 3001) and resolved.inner.heldout_seeds == (3000, 3001)
    assert resolved.outer.aggregate == "regret"  # every optimum known
    assert resolved.outer.baselines == ("random", "tpe")  # random search sets the regret's scale
    given = BilevelSettings(inner=InnerSettings(n_repeats=3, seeds=[9, 8, 7, 6]))
    given = given.resolved([branin])
    assert given.inner.seeds == (9, 8, 7, 6) and given.inner.n_repeats == 4  # the seeds win


def test_keywords_apply_to_the_fields_they_name() -> None:
    assert set(KEYWORDS) >= {"n_outer_trials", "outer_space", "token_prices", "seed"}
    settings = with_keywords(None, {"n_inner_trials": 5, "baselines": ["tpe"], "seed": 2})
    assert settings.inner.n_trials == 5 and settings.outer.baselines == ("tpe",)
    assert settings.seed == 2 and settings.outer.n_trials == 8
    # A settings field left at its default takes the keyword; the same value is no conflict.
    given = BilevelSettings(outer=OuterSettings(n_trials=3), model=ModelSettings("uniform"))
    both = with_keywords(given, {"n_outer_trials": 3, "n_inner_trials": 4, "model": None})
    assert both.outer.n_trials == 3 and both.inner.n_trials == 4 and both.model.model == "uniform"


def test_a_keyword_that_disagrees_with_the_settings_object_is_an_error() -> None:
    given = BilevelSettings(outer=OuterSettings(n_trials=3))
    with pytest.raises(
        ConfigurationError,
        match=r"n_outer_trials=5 and settings.outer.n_trials=3 disagree",
    ):
        with_keywords(given, {"n_outer_trials": 5})


def test_keywords_of_one_section_are_checked_together() -> None:
    # max_cost needs token_prices: given together, as keywords, they hold.
    settings = with_keywords(None, {"max_cost": 1.0, "token_prices": [0.1, 0.2]})
    assert settings.model.max_cost == 1.0 and settings.model.token_prices == (0.1, 0.2)
    with pytest.raises(ConfigurationError, match=r"max_cost=1.0: .*needs the model's prices"):
        with_keywords(None, {"max_cost": 1.0, "n_inner_trials": 3})

