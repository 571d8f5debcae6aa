from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pytest
from chat_doubles import ScriptedChatModel
from chat_doubles import answer_json
from mechanism_context import SPACE
from mechanism_context import config
from mechanism_context import make_context
from mechanism_context import make_study
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna.chat._base import ChatRequest
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.samplers import distance
from bilevel_optuna.samplers.mechanisms._geometry import distance_matrix
from bilevel_optuna.samplers.mechanisms._geometry import encode
from bilevel_optuna.samplers.mechanisms._tabu import TabuMechanism


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"radius": -0.1}, "radius"),
        ({"radius": 1.5}, "radius"),
        ({"tenure": -1}, "tenure"),
        ({"tenure": 2.5}, "tenure"),
        ({"tenure": True}, "tenure"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs: dict[str, Any], arg: str) -> None:
    with pytest.raises(ValueError, match=arg):
        TabuMechanism(**kwargs)


def test_distance_matrix_matches_distance() -> None:
    rng = np.random.default_rng(1)
    configs = [
        config(
            x=float(rng.uniform(-5, 5)),
            lr=float(10 ** rng.uniform(-4, -1)),
            n=int(rng.integers(1, 11)),
            c=str(rng.choice(["a", "b", "c"])),
        )
        for _ in range(12)
    ]
    matrix = distance_matrix(encode(configs[:5], SPACE), encode(configs[5:], SPACE), SPACE)
    expected = [[distance(a, b, SPACE) for b in configs[5:]] for a in configs[:5]]
    np.testing.assert_allclose(matrix, expected, rtol=1e-12)


def test_exact_repeat_is_rejected_naming_trial_and_distance() -> None:
    study = make_study([(config(x=1.0), 3.0), (config(x=2.0), 2.0)])
    review = TabuMechanism(radius=0.0, on_reject="ask").review(config(x=2.0), make_context(study))
    assert review.action == "reject"
    assert "repeats trial 1" in review.reason
    assert "distance 0" in review.reason


@pytest.mark.parametrize(
    "candidate, radius, action",
    [
        (config(x=1.2), 0.05, "reject"),  # 0.2 of 10 on one of 4 params: distance 0.01
        (config(x=1.2), 0.005, "accept"),
        (config(x=4.0), 0.05, "accept"),  # distance 0.15
        (config(x=1.0, c="b"), 0.3, "accept"),  # categorical differs: distance sqrt(1/4)
        (config(x=1.0, c="b"), 0.5, "reject"),
        (config(x=1.0, c="b", n=10), 0.5, "accept"),
        (config(x=1.0, lr=1e-4), 0.05, "accept"),  # log scale: 1e-2 -> 1e-4 is 2/3 of range
    ],
)
def test_radius_uses_normalized_categorical_aware_distance(
    candidate: dict[str, Any], radius: float, action: str
) -> None:
    study = make_study([(config(x=1.0), 3.0)])
    ctx = make_context(study)
    review = TabuMechanism(radius=radius, on_reject="ask").review(candidate, ctx)
    d = distance(candidate, config(x=1.0), SPACE)
    assert review.action == action, (d, radius)
    assert (d <= radius) == (action == "reject")
    if action == "reject":
        assert f"distance {d:.3g}" in review.reason and "trial 0" in review.reason


def test_tenure_keeps_only_the_latest_trials_tabu() -> None:
    rows = [(config(x=float(i)), float(i)) for i in range(-4, 5)]  # trials 0..8
    study = make_study(rows)
    oldest, latest = config(x=-4.0), config(x=4.0)
    short = TabuMechanism(radius=0.0, tenure=2, on_reject="ask")
    assert short.review(oldest, make_context(study)).action == "accept"
    assert short.review(latest, make_context(study)).action == "reject"
    every = TabuMechanism(radius=0.0, tenure=0, on_reject="ask")
    assert every.review(oldest, make_context(study)).action == "reject"


@pytest.mark.parametrize("state", [TrialState.FAIL, TrialState.PRUNED])
def test_failed_and_pruned_configurations_are_tabu(state: TrialState) -> None:
    study = make_study([(config(x=3.0), None)], states=[state])
    assert TabuMechanism(radius=0.0, on_reject="ask").review(config(x=3.0), make_context(study)).action == "reject"


def test_record_counts_rejections() -> None:
    study = make_study([(config(x=1.0), 3.0)])
    ctx = make_context(study)
    tabu = TabuMechanism(radius=0.0, on_reject="ask")
    tabu.review(config(x=1.0), ctx)
    tabu.review(config(x=2.0), ctx)
    assert ctx.record["tabu"] == {"rejected": 1, "moved": 0, "tabu_size": 1}


# ----------------------------------------------------------------- in a study


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5.0, 5.0)
    n = trial.suggest_int("n", 1, 10)
    return (x - 1.0) ** 2 + n


_SPACE2 = {
    "x": optuna.distributions.FloatDistribution(-5.0, 5.0),
    "n": optuna.distributions.IntDistribution(1, 10),
}


def _copying_model() -> ScriptedChatModel:
    """Answers with the first configuration of its history (as the small model tends to), or,
    when told its answer was rejected, with a configuration shifted by the attempt number."""

    def answer(request: ChatRequest, index: int) -> str:
        prompt = request.messages[1]["content"]
        rejected = sum("rejected" in m["content"] for m in request.messages[2:])
        if "Evaluated" not in prompt:
            return answer_json({"x": 0.0, "n": 3})
        return answer_json({"x": 0.0 + 1.5 * rejected, "n": 3 + rejected})

    return ScriptedChatModel(answer)


def _distinct(study: optuna.Study) -> int:
    return len({tuple(sorted(t.params.items())) for t in study.trials})


def test_bare_sampler_repeats_and_tabu_does_not() -> None:
    bare = optuna.create_study(
        sampler=LLMSampler(preset="level0", model=_copying_model(), search_space=_SPACE2, seed=0)
    )
    bare.optimize(_objective, n_trials=6)
    assert _distinct(bare) == 1

    model = _copying_model()
    sampler = LLMSampler(preset="level0", model=model, search_space=_SPACE2, seed=0, mechanisms=[("tabu", {"on_reject": "ask"})])
    study = optuna.create_study(sampler=sampler)
    study.optimize(_objective, n_trials=6)
    assert _distinct(study) == 6
    # The rejection went back to the model, naming the trial and the distance.
    feedback = [
        m["content"] for r in model.requests for m in r.messages[2:] if m["role"] == "user"
    ]
    assert any("repeats trial 0" in f and "tabu radius" in f for f in feedback)
    record = study.trials[1].user_attrs[_attrs.MECHANISMS]["tabu"]
    assert record["hooks"]["review"] >= 2 and record["rejected"] >= 1 and record["changed"] >= 1


def test_embedded_model_repeats_itself_and_tabu_stops_it() -> None:
    from mechanism_context import embedded_study
    from mechanism_context import n_distinct

    bare = embedded_study(n_trials=8)
    assert n_distinct(bare) < 8  # the small model copies its history
    study = embedded_study([("tabu", {"on_reject": "ask"})], n_trials=8)
    assert n_distinct(study) == 8
    assert sum(t.user_attrs[_attrs.MECHANISMS]["tabu"]["rejected"] for t in study.trials) >= 1


# ------------------------------------------------------------- on_reject="move"


def test_move_replaces_a_repeat_with_a_free_point_nearby() -> None:
    study = make_study([(config(x=1.0), 3.0), (config(x=2.0), 2.0)])
    ctx = make_context(study)
    tabu = TabuMechanism(radius=0.1)
    review = tabu.review(config(x=2.0), ctx)
    assert review.action == "replace" and "moved off trial 1" in review.reason
    assert review.params is not None
    space = ctx.search_space
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        assert distance(review.params, t.params, space) > 0.1
    # Nearby: within the largest step tried, not anywhere in the space.
    assert distance(review.params, config(x=2.0), space) < 6 * 0.1 * 2
    assert ctx.record["tabu"] == {"rejected": 0, "moved": 1, "tabu_size": 2}


def test_move_is_reproducible_from_the_trial_seed() -> None:
    study = make_study([(config(x=1.0), 3.0)])
    first = TabuMechanism(radius=0.1).review(config(x=1.0), make_context(study))
    again = TabuMechanism(radius=0.1).review(config(x=1.0), make_context(study))
    assert first == again


def test_move_costs_no_extra_model_call() -> None:
    model = _copying_model()
    sampler = LLMSampler(preset="level0", model=model, search_space=_SPACE2, seed=0, mechanisms=["tabu"])
    study = optuna.create_study(sampler=sampler)
    study.optimize(_objective, n_trials=6)
    assert _distinct(study) == 6
    assert len(model.requests) == 6  # one call per trial: the repeats were moved, not re-asked
    sources = [t.user_attrs[_attrs.SOURCE] for t in study.trials]
    assert sources[0] == "llm" and sources[1:] == ["mechanism"] * 5
    assert all(t.user_attrs[_attrs.ATTEMPTS] == 1 for t in study.trials)


def test_embedded_model_copies_and_tabu_moves_it_with_one_call_a_trial() -> None:
    from mechanism_context import embedded_study
    from mechanism_context import n_distinct

    study = embedded_study(["tabu"], n_trials=8)
    assert n_distinct(study) == 8
    assert all(t.user_attrs[_attrs.ATTEMPTS] == 1 for t in study.trials)
    assert sum(t.user_attrs[_attrs.MECHANISMS]["tabu"]["moved"] for t in study.trials) >= 1
