from __future__ import annotations

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
from bilevel_optuna.samplers.mechanisms._orthogonal import OrthogonalMechanism
from bilevel_optuna.samplers.mechanisms._orthogonal import ParameterBins
from bilevel_optuna.samplers.mechanisms._orthogonal import coverage


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"n_bins": 1}, "n_bins"),
        ({"n_bins": 2.5}, "n_bins"),
        ({"n_params": 0}, "n_params"),
        ({"on_miss": "ignore"}, "on_miss"),
        ({"probability": -0.1}, "probability"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs: dict[str, Any], arg: str) -> None:
    with pytest.raises(ValueError, match=arg):
        OrthogonalMechanism(**kwargs)


@pytest.mark.parametrize(
    "dist, n_bins, expected_n, value, expected_bin",
    [
        (FloatDistribution(0.0, 10.0), 5, 5, 0.0, 0),
        (FloatDistribution(0.0, 10.0), 5, 5, 4.1, 2),
        (FloatDistribution(0.0, 10.0), 5, 5, 10.0, 4),
        (FloatDistribution(1e-4, 1e-1, log=True), 3, 3, 5e-3, 1),
        (IntDistribution(1, 3), 5, 3, 2, 1),  # fewer values than bins: one bin per value
        (IntDistribution(1, 3), 5, 3, 3, 2),
        (IntDistribution(0, 100), 4, 4, 100, 3),
        (CategoricalDistribution(["a", "b", "c"]), 5, 3, "b", 1),  # one bin per choice
    ],
)
def test_bins(
    dist: BaseDistribution, n_bins: int, expected_n: int, value: Any, expected_bin: int
) -> None:
    bins = ParameterBins.build("p", dist, n_bins)
    assert bins.n == expected_n
    assert bins.bin_of(value) == expected_bin


@pytest.mark.parametrize(
    "dist",
    [
        FloatDistribution(0.0, 10.0),
        FloatDistribution(1e-4, 1e-1, log=True),
        IntDistribution(1, 1000, log=True),
        IntDistribution(0, 100, step=10),
        FloatDistribution(0.0, 1.0, step=0.1),
    ],
)
def test_a_value_sampled_from_a_bin_lies_in_it(dist: BaseDistribution) -> None:
    bins = ParameterBins.build("p", dist, 5)
    rng = np.random.default_rng(0)
    for b in bins.reachable():
        for _ in range(20):
            v = bins.sample(b, rng)
            assert bins.bin_of(v) == b
            assert dist._contains(dist.to_internal_repr(v))


@pytest.mark.parametrize(
    "dist",
    [
        FloatDistribution(-5.0, 5.0),
        FloatDistribution(1e-4, 1e-1, log=True),
        IntDistribution(16, 1024, log=True),
        IntDistribution(0, 100, step=10),
    ],
)
def test_bins_cut_the_normalized_range(dist: BaseDistribution) -> None:
    bins = ParameterBins.build("p", dist, 7)
    rng = np.random.default_rng(0)
    for _ in range(50):
        value = denormalize(rng.random(), dist)
        u = normalize({"p": value}, {"p": dist})[0]
        assert bins.bin_of(value) == min(int(u * bins.n), bins.n - 1)


def test_coverage_counts_trials_per_bin() -> None:
    bins = ParameterBins.build("x", FloatDistribution(-5.0, 5.0), 5)
    assert coverage(bins, [-5.0, -4.0, 0.0, 4.9]).tolist() == [2, 0, 1, 0, 1]


def _skewed_study() -> optuna.Study:
    """x covers all of its 5 bins, n sits in the top bin, lr and c spread evenly."""
    rows = []
    for i, x in enumerate([-4.5, -2.5, -0.5, 1.5, 3.5, -4.0]):
        rows.append((config(x=x, n=10, lr=[1e-4, 1e-1][i % 2], c="abc"[i % 3]), float(i)))
    return make_study(rows)


def test_least_explored_parameter_and_its_empty_bins_are_targeted() -> None:
    mech = OrthogonalMechanism(n_bins=5)
    ctx = make_context(_skewed_study())
    mech.prepare(ctx)
    assert ctx.record["orthogonal"]["targets"] == {"n": [0, 1, 2, 3]}
    (note,) = ctx.notes
    assert note.startswith("Explore the least-explored parameter: n must be [1, 2] or [3, 4]")


def test_review_replaces_only_the_target_value() -> None:
    mech = OrthogonalMechanism(n_bins=5)
    ctx = make_context(_skewed_study())
    mech.prepare(ctx)
    candidate = config(x=1.0, n=10, c="b")
    review = mech.review(candidate, ctx)
    assert review.action == "replace"
    assert review.params["n"] <= 8  # a bin below the top one: nearest is [7, 8]
    assert {k: v for k, v in review.params.items() if k != "n"} == {
        k: v for k, v in candidate.items() if k != "n"
    }
    assert mech.review(config(x=1.0, n=2), ctx).action == "accept"
    assert ctx.record["orthogonal"]["replaced"] == 1


def test_reject_mode_names_the_parameter_and_the_sub_ranges() -> None:
    mech = OrthogonalMechanism(n_bins=5, on_miss="reject")
    ctx = make_context(_skewed_study())
    mech.prepare(ctx)
    review = mech.review(config(n=10), ctx)
    assert review.action == "reject"
    assert "n=10 lies in an explored sub-range; n must be [1, 2] or [3, 4]" in review.reason


def test_evenly_explored_parameters_are_never_targets() -> None:
    rows = [
        (config(x=x, n=n, lr=lr, c=c), 1.0)
        for x, n, lr, c in [(-4.0, 1, 1e-4, "a"), (4.0, 10, 1e-1, "b")]
    ]
    ctx = make_context(make_study(rows))
    mech = OrthogonalMechanism(n_bins=2)
    mech.prepare(ctx)
    # x, n and lr cover both bins once each; c left "c" untried: the only target.
    assert ctx.record["orthogonal"]["targets"] == {"c": [2]}


def test_probability_zero_never_acts() -> None:
    mech = OrthogonalMechanism(probability=0.0)
    ctx = make_context(_skewed_study())
    mech.prepare(ctx)
    assert ctx.notes == [] and ctx.record["orthogonal"]["active"] is False
    assert mech.review(config(n=10), ctx).action == "accept"


def test_no_completed_trial_no_target() -> None:
    mech = OrthogonalMechanism()
    ctx = make_context(make_study([]))
    mech.prepare(ctx)
    assert ctx.notes == [] and ctx.record["orthogonal"]["targets"] == {}


# ----------------------------------------------------------------- in a study

_SPACE2 = {"x": FloatDistribution(-5.0, 5.0), "y": FloatDistribution(-5.0, 5.0)}


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5.0, 5.0)
    y = trial.suggest_float("y", -5.0, 5.0)
    return (x - 1.0) ** 2 + (y + 1.0) ** 2


def _y_bins_covered(study: optuna.Study) -> int:
    bins = ParameterBins.build("y", _SPACE2["y"], 5)
    return int((coverage(bins, [t.params["y"] for t in study.trials]) > 0).sum())


def test_covers_a_parameter_the_model_never_varies() -> None:
    def answer(request: Any, index: int) -> str:  # varies x only, y always 0.3
        return answer_json({"x": -4.5 + 0.9 * (index % 10), "y": 0.3})

    bare = optuna.create_study(
        sampler=LLMSampler(preset="level0", model=ScriptedChatModel(answer), search_space=_SPACE2, seed=0)
    )
    bare.optimize(_objective, n_trials=10)
    assert _y_bins_covered(bare) == 1

    sampler = LLMSampler(
        preset="level0",
        model=ScriptedChatModel(answer), search_space=_SPACE2, seed=0, mechanisms=["orthogonal"]
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(_objective, n_trials=10)
    assert _y_bins_covered(study) == 5
    replaced = [t for t in study.trials if t.user_attrs[_attrs.SOURCE] == "mechanism"]
    assert len(replaced) >= 4
    assert all(
        "replaced by orthogonal" in r for t in replaced for r in t.user_attrs[_attrs.REPAIRS][-1:]
    )


def test_embedded_model_covers_more_bins_with_orthogonal_exploration() -> None:
    from mechanism_context import BRANIN_SPACE
    from mechanism_context import embedded_study

    def covered(study: optuna.Study) -> int:
        return sum(
            int(
                (
                    coverage(ParameterBins.build(n, d, 5), [t.params[n] for t in study.trials]) > 0
                ).sum()
            )
            for n, d in BRANIN_SPACE.items()
        )

    bare = embedded_study(n_trials=8)
    study = embedded_study(["orthogonal"], n_trials=8)
    assert covered(study) > covered(bare)
    assert covered(study) >= 8  # of 10 bins over the two parameters
