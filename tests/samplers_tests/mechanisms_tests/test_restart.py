from __future__ import annotations

from collections import Counter
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
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution

from bilevel_optuna import _attrs
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.samplers import distance
from bilevel_optuna.samplers.mechanisms._geometry import from_unit
from bilevel_optuna.samplers.mechanisms._restart import RestartMechanism


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"patience": 0}, "patience"),
        ({"burst": 0}, "burst"),
        ({"burst": 1.5}, "burst"),
        ({"action": "teleport"}, "action"),
        ({"min_improvement": -0.1}, "min_improvement"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs: dict[str, Any], arg: str) -> None:
    with pytest.raises(ValueError, match=arg):
        RestartMechanism(**kwargs)


def test_from_unit_gives_every_choice_and_integer_an_equal_share() -> None:
    u = (np.arange(3000) + 0.5) / 3000
    cat = Counter(from_unit(x, CategoricalDistribution(["a", "b", "c"])) for x in u)
    assert set(cat.values()) == {1000}
    ints = Counter(from_unit(x, IntDistribution(1, 3)) for x in u)
    assert set(ints.values()) == {1000}
    assert from_unit(0.999999, FloatDistribution(0.0, 2.0)) == pytest.approx(2.0, abs=1e-5)


def _values_study(values: list[float]) -> optuna.Study:
    return make_study([(config(x=-5.0 + 0.01 * i), v) for i, v in enumerate(values)])


# With patience 3 and burst 2: improvement at trial 0, then trials 1-3 stagnate, 4-5 burst,
# 6-8 ordinary again, 9-10 burst, ...
@pytest.mark.parametrize(
    "n_before, burst, index",
    [(1, False, -1), (3, False, -1), (4, True, 0), (5, True, 1), (6, False, -1), (9, True, 0)],
)
def test_burst_cycle_after_patience_trials_without_improvement(
    n_before: int, burst: bool, index: int
) -> None:
    study = _values_study([1.0] + [2.0] * (n_before - 1))
    state = RestartMechanism(patience=3, burst=2).state(make_context(study))
    assert state.burst is burst and state.burst_index == index
    assert state.since_improvement == n_before - 1


def test_an_improvement_resets_the_count() -> None:
    study = _values_study([5.0, 6.0, 6.0, 6.0, 4.0, 6.0])
    state = RestartMechanism(patience=3, burst=2).state(make_context(study))
    assert state.since_improvement == 1 and state.best_number == 4 and not state.burst


def test_min_improvement_ignores_tiny_gains() -> None:
    study = _values_study([5.0, 4.99, 4.98, 4.97])
    assert (
        RestartMechanism(patience=3, min_improvement=0.01)
        .state(make_context(study))
        .burst
    )
    assert not RestartMechanism(patience=3).state(make_context(study)).burst


def test_maximize_direction() -> None:
    rows = [(config(x=float(i) - 4), v) for i, v in enumerate([1.0, 0.5, 0.5, 0.5])]
    study = make_study(rows, direction="maximize")
    assert RestartMechanism(patience=3).state(make_context(study)).burst


@pytest.mark.parametrize("action", ["sobol", "random"])
def test_burst_takes_the_trial_over_far_from_evaluated_configurations(action: str) -> None:
    # Every evaluated configuration sits in one corner.
    rows = [(config(x=-5.0 + 0.1 * i, lr=1e-4, n=1, c="a"), 1.0 + (i > 0)) for i in range(5)]
    ctx = make_context(make_study(rows))
    RestartMechanism(patience=3, burst=2, action=action).prepare(ctx)
    assert ctx.params is not None
    assert set(ctx.params) == set(SPACE)
    for name, dist in SPACE.items():
        assert dist._contains(dist.to_internal_repr(ctx.params[name]))
    nearest = min(distance(ctx.params, p, SPACE) for p, _ in rows)
    assert nearest > 0.5
    assert ctx.record["restart"] == {
        "since_improvement": 4,
        "burst": True,
        "burst_index": 1,
        "action": action,
    }


def test_burst_is_reproducible_from_the_seed() -> None:
    rows = [(config(x=float(i) - 4), 1.0 + (i > 0)) for i in range(5)]
    study = make_study(rows)
    mech = RestartMechanism(patience=3)
    first, second = make_context(study, seed=3), make_context(study, seed=3)
    mech.prepare(first)
    mech.prepare(second)
    assert first.params == second.params


def test_prompt_action_cuts_the_history_and_adds_a_note() -> None:
    values = [2.0, 1.0, 3.0, 3.0, 3.0, 3.0]
    rows = [(config(x=float(i) - 4), v) for i, v in enumerate(values)]
    ctx = make_context(make_study(rows))
    RestartMechanism(patience=3, action="prompt").prepare(ctx)
    assert ctx.params is None
    assert [t.number for t in ctx.history] == [1]
    assert "has not improved for 4 trials" in ctx.notes[0]


def test_outside_a_burst_nothing_changes() -> None:
    ctx = make_context(_values_study([3.0, 2.0, 1.0]))
    RestartMechanism(patience=3).prepare(ctx)
    assert ctx.params is None and ctx.notes == []


# ----------------------------------------------------------------- in a study


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5.0, 5.0)
    y = trial.suggest_float("y", -5.0, 5.0)
    return (x - 1.0) ** 2 + (y + 1.0) ** 2


def test_a_stalled_model_gets_exploration_bursts() -> None:
    space = {"x": FloatDistribution(-5.0, 5.0), "y": FloatDistribution(-5.0, 5.0)}

    def answer(request: Any, index: int) -> str:  # stuck, worse every time
        return answer_json({"x": -5.0, "y": 4.0 + 0.01 * index})

    model = ScriptedChatModel(answer)
    sampler = LLMSampler(
        preset="level0",
        model=model,
        search_space=space,
        seed=0,
        mechanisms=[("restart", {"patience": 4, "burst": 2, "action": "sobol"})],
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(_objective, n_trials=12)
    taken = [t.number for t in study.trials if t.user_attrs.get("llm:taken_by") == "restart"]
    # Trials 0..4 from the model (0 improves, 1-4 stagnate); 5 bursts; Sobol points improve on
    # a model stuck in a corner, so later bursts follow the new best.
    assert taken[0] == 5
    assert len(model.requests) == 12 - len(taken)
    for n in taken:
        assert study.trials[n].user_attrs[_attrs.SOURCE] == "mechanism"
    assert min(t.value for t in study.trials) < min(t.value for t in study.trials[:5])


def test_embedded_model_stalls_and_restart_bursts_explore() -> None:
    from mechanism_context import embedded_study
    from mechanism_context import n_distinct

    bare = embedded_study(n_trials=8)
    study = embedded_study([("restart", {"patience": 3, "burst": 2})], n_trials=8)
    taken = [t for t in study.trials if t.user_attrs.get("llm:taken_by") == "restart"]
    assert len(taken) >= 1
    assert n_distinct(study) > n_distinct(bare)
