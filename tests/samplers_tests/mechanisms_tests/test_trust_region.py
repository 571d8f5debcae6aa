from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
import pytest
from chat_doubles import ScriptedChatModel
from chat_doubles import answer_json
from mechanism_context import config
from mechanism_context import make_context
from mechanism_context import make_study
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution

from bilevel_optuna import _attrs
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.samplers import normalize
from bilevel_optuna.samplers.mechanisms._geometry import denormalize
from bilevel_optuna.samplers.mechanisms._trust_region import TrustRegionMechanism


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"initial_radius": 0.0}, "initial_radius"),
        ({"min_radius": 1.5}, "min_radius"),
        ({"initial_radius": 0.6, "max_radius": 0.5}, "initial_radius"),
        ({"success_tolerance": 0}, "success_tolerance"),
        ({"failure_tolerance": 0}, "failure_tolerance"),
        ({"failure_tolerance": 2.5}, "failure_tolerance"),
        ({"categorical_probability": 1.2}, "categorical_probability"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs: dict[str, Any], arg: str) -> None:
    with pytest.raises(ValueError, match=arg):
        TrustRegionMechanism(**kwargs)


@pytest.mark.parametrize(
    "dist, values",
    [
        (FloatDistribution(-5.0, 5.0), [-5.0, -1.25, 0.0, 5.0]),
        (FloatDistribution(1e-4, 1e-1, log=True), [1e-4, 3e-3, 1e-1]),
        (FloatDistribution(0.0, 1.0, step=0.25), [0.0, 0.25, 0.75, 1.0]),
        (IntDistribution(1, 10), [1, 4, 10]),
        (IntDistribution(0, 20, step=5), [0, 5, 20]),
        (IntDistribution(1, 1024, log=True), [1, 7, 1024]),
        (CategoricalDistribution(["a", "b", "c"]), ["a", "b", "c"]),
    ],
)
def test_denormalize_inverts_normalize(dist: BaseDistribution, values: list[Any]) -> None:
    for v in values:
        u = normalize({"p": v}, {"p": dist})[0]
        back = denormalize(u, dist)
        assert back == pytest.approx(v) and type(back) is type(v)
    assert denormalize(-0.3, dist) == denormalize(0.0, dist)
    assert denormalize(1.7, dist) == denormalize(1.0, dist)


def _state(values: list[float], direction: str = "minimize", **kwargs: Any) -> Any:
    rows = [(config(x=float(i) / 10), v) for i, v in enumerate(values)]
    study = make_study(rows, direction=direction)
    return TrustRegionMechanism(**kwargs).state(make_context(study))


@pytest.mark.parametrize(
    "values, radius",
    [
        ([10, 9], 0.1),  # one success
        ([10, 9, 8], 0.2),  # two: doubled
        ([10, 9, 8, 7, 6], 0.4),
        ([10, 9, 8, 7, 6, 5, 4], 0.5),  # capped at max_radius
        ([10, 9, 9.5, 8, 7], 0.2),  # a failure resets the success count
    ],
)
def test_radius_doubles_after_success_tolerance_successes(
    values: list[float], radius: float
) -> None:
    state = _state(values, initial_radius=0.1, max_radius=0.5, success_tolerance=2)
    assert state.radius == pytest.approx(radius)
    assert state.center.value == min(values)


@pytest.mark.parametrize(
    "values, radius, restarts",
    [
        ([10, 11, 12], 0.1, 0),
        ([10, 11, 12, 13, 14], 0.05, 0),  # min_radius itself is allowed
        ([10, 11, 12, 13, 14, 15, 16], 0.2, 1),  # 0.025 < min_radius: restart
    ],
)
def test_radius_halves_after_failure_tolerance_failures(
    values: list[float], radius: float, restarts: int
) -> None:
    state = _state(values, initial_radius=0.2, min_radius=0.05, failure_tolerance=2)
    assert state.radius == pytest.approx(radius)
    assert state.restarts == restarts


def test_restart_recentres_on_the_first_trial_after_it() -> None:
    kwargs = dict(initial_radius=0.2, min_radius=0.05, failure_tolerance=2)
    values = [10, 11, 12, 13, 14, 15, 16]
    assert _state(values, **kwargs).center is None  # the next proposal is unconstrained
    state = _state(values + [20], **kwargs)
    assert state.center.number == 7 and state.restarts == 1  # worse than 10, but new region


def test_improvement_below_the_margin_is_a_failure() -> None:
    state = _state([10.0, 9.995], failure_tolerance=3)
    assert state.failures == 1 and state.successes == 0
    assert state.center.number == 1  # still the incumbent


def test_default_failure_tolerance_is_turbos() -> None:
    # max(4, number of parameters) = 4 for SPACE's 4 parameters.
    assert _state([10, 11, 12, 13]).radius == pytest.approx(0.2)
    assert _state([10, 11, 12, 13, 14]).radius == pytest.approx(0.1)


def test_maximize_counts_increases_as_successes() -> None:
    state = _state([1, 2, 3, 4], "maximize", initial_radius=0.1, success_tolerance=3)
    assert state.radius == pytest.approx(0.2)
    assert state.center.value == 4


def _center_study() -> optuna.Study:
    return make_study([(config(x=0.0, lr=1e-2, n=5, c="a"), 1.0)])


def test_prepare_notes_the_box_and_records_the_radius() -> None:
    ctx = make_context(_center_study())
    TrustRegionMechanism(initial_radius=0.1).prepare(ctx)
    assert ctx.record["trust_region"]["radius"] == 0.1
    assert ctx.record["trust_region"]["center"] == 0
    (note,) = ctx.notes
    assert "around the best trial 0" in note and "x in [-1, 1]" in note and "n in [4, 6]" in note


def test_prepare_without_a_centre_adds_no_note() -> None:
    ctx = make_context(make_study([]))
    TrustRegionMechanism().prepare(ctx)
    assert ctx.notes == [] and ctx.record["trust_region"]["center"] is None


@pytest.mark.parametrize("probability, c", [(1.0, "a"), (0.0, "b")])
def test_candidate_outside_is_projected_into_the_box(probability: float, c: str) -> None:
    ctx = make_context(_center_study())
    tr = TrustRegionMechanism(initial_radius=0.1, categorical_probability=probability)
    review = tr.review(config(x=4.0, lr=1e-4, n=5, c="b"), ctx)
    assert review.action == "replace"
    assert review.params["x"] == pytest.approx(1.0)
    assert review.params["lr"] == pytest.approx(10 ** (-4 + 3 * (2 / 3 - 0.1)))
    assert review.params["n"] == 5
    assert review.params["c"] == c
    assert "x, lr" in review.reason and "trial 0" in review.reason
    assert ctx.record["trust_region"]["projected"] == 1


def test_candidate_inside_is_accepted() -> None:
    ctx = make_context(_center_study())
    tr = TrustRegionMechanism(initial_radius=0.1)
    assert tr.review(config(x=0.5, lr=1.5e-2, n=6, c="b"), ctx).action == "accept"


# ----------------------------------------------------------------- in a study

_FLOATS = {"x": FloatDistribution(-5.0, 5.0), "y": FloatDistribution(-5.0, 5.0)}


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5.0, 5.0)
    y = trial.suggest_float("y", -5.0, 5.0)
    return (x - 1.0) ** 2 + (y + 1.0) ** 2


def test_proposals_stay_within_the_recorded_radius_of_the_incumbent() -> None:
    rng = np.random.default_rng(0)

    def answer(request: Any, index: int) -> str:  # a model that jumps all over the space
        x, y = rng.uniform(-5, 5, size=2)
        return answer_json({"x": float(x), "y": float(y)})

    sampler = LLMSampler(
        preset="level0",
        model=ScriptedChatModel(answer),
        search_space=_FLOATS,
        seed=0,
        mechanisms=[("trust_region", {"initial_radius": 0.1})],
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(_objective, n_trials=25)
    projected = 0
    for t in study.trials[1:]:
        record = t.user_attrs[_attrs.MECHANISMS]["trust_region"]
        center = study.trials[record["center"]]
        gap = np.abs(normalize(t.params, _FLOATS) - normalize(center.params, _FLOATS))
        assert gap.max() <= record["radius"] + 1e-9
        projected += record["projected"]
        assert (
            record["center"] == min(study.trials[: t.number], key=lambda s: s.value).number
        )  # no restart in 25 trials at these tolerances
    assert projected >= 10
    radii = {t.user_attrs[_attrs.MECHANISMS]["trust_region"]["radius"] for t in study.trials}
    assert len(radii) > 1 and not math.isnan(min(radii))  # it grew or shrank


def test_embedded_model_proposals_stay_within_the_radius() -> None:
    from mechanism_context import BRANIN_SPACE
    from mechanism_context import branin

    from bilevel_optuna.samplers import LLMSampler

    # A warm start of three spread-out trials: the small model copies and blends them, so it
    # proposes outside the region around the incumbent, and the mechanism brings those back.
    # (From a single first answer it would only repeat that answer, inside the region.)
    sampler = LLMSampler(
        preset="level0",
        model="local",
        description="Minimize the Branin function of two real numbers x1 and x2.",
        search_space=BRANIN_SPACE,
        mechanisms=[("trust_region", {"initial_radius": 0.02})],
        seed=0,
    )
    study = optuna.create_study(sampler=sampler)
    for params in ({"x1": 0.0, "x2": 0.0}, {"x1": 5.0, "x2": 5.0}, {"x1": -3.0, "x2": 12.0}):
        study.enqueue_trial(params)
    study.optimize(branin, n_trials=9)
    projected = 0
    for t in study.trials[3:]:
        record = t.user_attrs[_attrs.MECHANISMS]["trust_region"]
        center = study.trials[record["center"]]
        gap = np.abs(normalize(t.params, BRANIN_SPACE) - normalize(center.params, BRANIN_SPACE))
        if t.user_attrs[_attrs.SOURCE] != "fallback":
            assert gap.max() <= record["radius"] + 1e-9
        projected += record["projected"]
    assert projected >= 1
