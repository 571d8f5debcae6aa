"""A guarded mechanism inside a real LLMSampler study: hooks over the pipe, counted as proof."""

from __future__ import annotations

import optuna
import sources as S
from chat_doubles import ScriptedChatModel
from chat_doubles import answer_json
from guard import needs_boundary
from optuna.distributions import FloatDistribution

from bilevel_optuna import _attrs
from bilevel_optuna.research._check import check_source
from bilevel_optuna.research._proxy import guarded_class
from bilevel_optuna.research._sandbox import Limits
from bilevel_optuna.samplers import LLMSampler

pytestmark = needs_boundary


def _answers(request, index):  # type: ignore[no-untyped-def]
    return answer_json({"x": -4.0 + 0.7 * index, "y": 0.5})


def test_guarded_mechanism_runs_in_a_study_and_is_counted() -> None:
    result = check_source(S.GOOD)
    assert result.accepted
    cls = guarded_class(
        S.GOOD,
        name="far_from_history_test",
        hooks=result.hooks,
        space=result.space,
        sha256=result.sha256,
    )
    mechanism = cls(radius=0.01)
    sampler = LLMSampler(
        model=ScriptedChatModel(_answers),
        search_space={"x": FloatDistribution(-5, 5), "y": FloatDistribution(0, 1)},
        mechanisms=[mechanism],
        seed=0,
    )
    study = optuna.create_study(sampler=sampler)
    try:
        study.optimize(
            lambda t: t.suggest_float("x", -5, 5) ** 2 + t.suggest_float("y", 0, 1), n_trials=4
        )
    finally:
        mechanism.close()
    records = [t.user_attrs[_attrs.MECHANISMS]["far_from_history_test"] for t in study.trials]
    assert all(r["errors"] == [] for r in records), records
    assert all(r["hooks"]["prepare"] == 1 and r["hooks"]["review"] >= 1 for r in records)
    assert all(r["hooks"]["after_trial"] == 1 for r in records)
    # What the child wrote into its own record came back over the pipe.
    assert [r["seen"] for r in records] == [0, 1, 2, 3]
    assert mechanism._process is not None and mechanism._process.starts == 1


def test_an_overrunning_guarded_hook_is_switched_off_for_that_trial_only() -> None:
    source = (
        "from bilevel_optuna.samplers import Mechanism\nclass Slow(Mechanism):\n    name = 'slow_one'\n"
        "    def prepare(self, context):\n"
        "        if len(context.complete_trials) == 1:\n"
        "            while True:\n                pass\n"
        "        context.notes.append('ok')\n"
    )
    cls = guarded_class(
        source,
        name="slow_one",
        hooks=["prepare"],
        space={},
        sha256="0" * 64,
        limits=Limits(hook_timeout=1.0),
    )
    mechanism = cls()
    sampler = LLMSampler(
        model=ScriptedChatModel(_answers),
        search_space={"x": FloatDistribution(-5, 5), "y": FloatDistribution(0, 1)},
        mechanisms=[mechanism],
        seed=0,
    )
    study = optuna.create_study(sampler=sampler)
    try:
        study.optimize(
            lambda t: t.suggest_float("x", -5, 5) + t.suggest_float("y", 0, 1), n_trials=3
        )
    finally:
        mechanism.close()
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    records = [t.user_attrs[_attrs.MECHANISMS]["slow_one"] for t in study.trials]
    assert [r["off"] for r in records] == [False, True, False]
    assert "timed out" in records[1]["errors"][0]
    assert records[2]["errors"] == [] and records[2]["changed"] == 1
