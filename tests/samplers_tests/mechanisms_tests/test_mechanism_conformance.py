"""The contract every mechanism keeps: built-in ones, a user's, and generated ones alike.

In the manner of Optuna's own sampler tests (tests/samplers_tests/test_samplers.py): one
parametrized suite, so a new mechanism is checked by adding its name to ``CASES``.
"""

from __future__ import annotations

import inspect
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
from optuna.distributions import FloatDistribution

from bilevel_optuna import _attrs
from bilevel_optuna.chat import ChatRequest
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.samplers import Mechanism
from bilevel_optuna.samplers import ProposalContext
from bilevel_optuna.samplers import Review
from bilevel_optuna.samplers import get_mechanism_class
from bilevel_optuna.samplers._answer import repair_params
from bilevel_optuna.samplers.mechanisms._base import overridden_hooks
from bilevel_optuna.samplers.mechanisms._loading import builtin_mechanism_names


class Nudge(Mechanism):
    """A user's mechanism: replaces a candidate whose ``x`` is exactly 0 by ``x = 0.5``, and notes
    how many trials are finished. Untrusted (the default), so its hooks run under the guard."""

    name = "nudge"
    version = "1"

    def __init__(self, *, step: float = 0.5) -> None:
        self.step = step

    @classmethod
    def search_space(cls) -> dict[str, Any]:
        return {"step": FloatDistribution(0.1, 1.0)}

    def prepare(self, context: ProposalContext) -> None:
        context.notes.append(f"{len(context.finished_trials)} trials are finished.")

    def review(self, candidate: dict[str, Any], context: ProposalContext) -> Review:
        if candidate["x"] == 0.0:
            return Review.replace({**candidate, "x": self.step}, reason="off zero")
        return Review.accept()


BUILTINS = builtin_mechanism_names()
# A case is a registered name, a class, or ``(name, params)`` for a built-in with other settings.
CASES: list[Any] = BUILTINS + [
    pytest.param(("classical", {"sampler": "cmaes"}), id="classical-cmaes"),
    Nudge,
]


def _cls(case: Any) -> type[Mechanism]:
    if isinstance(case, tuple):
        case = case[0]
    return get_mechanism_class(case) if isinstance(case, str) else case


#: Cases whose take-over depends on the trial's number, not only on the stored trials.
_SEEDED_BY_NUMBER = [("classical", {"sampler": "cmaes"})]


def _make(case: Any) -> Mechanism:
    return _cls(case)(**(case[1] if isinstance(case, tuple) else {}))


def _history() -> optuna.Study:
    rows = [(config(x=float(i) - 3.0, n=1 + i, c="abc"[i % 3]), float((i - 2) ** 2)) for i in range(6)]
    return make_study(rows)


@pytest.mark.parametrize("case", CASES)
def test_class_contract(case: Any) -> None:
    cls = _cls(case)
    assert cls.name.islower() and isinstance(cls.version, str) and cls.version
    assert isinstance(cls.trusted, bool)
    assert cls.trusted == isinstance(case, (str, tuple))  # built-ins are trusted, user code is not
    assert cls.__doc__ and cls.__doc__.strip()
    signature = inspect.signature(cls.__init__)
    kwargs = [p for n, p in signature.parameters.items() if n != "self"]
    assert all(p.kind == p.KEYWORD_ONLY for p in kwargs)
    space = cls.search_space()
    assert space and set(space) <= {p.name for p in kwargs}
    # Every point the outer study can draw builds a valid instance that reports it.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask(space)
        instance = cls(**trial.params)
        assert instance.params() == {k: pytest.approx(v) for k, v in trial.params.items()}
        study.tell(trial, 0.0)
    assert repr(instance).startswith(cls.__name__ + "(")
    assert overridden_hooks(instance), "a mechanism that defines no hook can do nothing"


@pytest.mark.parametrize("case", CASES)
def test_hooks_return_valid_results_on_a_real_study(case: Any) -> None:
    mechanism = _make(case)
    study = _history()
    ctx = make_context(study)
    mechanism.prepare(ctx)
    if ctx.params is not None:
        repair_params(ctx.params, SPACE)  # a take-over lies inside the space
        assert set(ctx.params) == set(SPACE)
    candidates = [config(x=0.0), config(x=-3.0, n=1, c="a"), config(x=4.5, n=9, c="c")]
    for candidate in candidates:
        review = mechanism.review(dict(candidate), ctx)
        assert isinstance(review, Review) and review.action in ("accept", "reject", "replace")
        if review.action == "replace":
            assert review.params is not None
            params, _ = repair_params(review.params, SPACE)
            assert set(params) == set(SPACE)
        if review.action == "reject":
            assert review.reason
    ordered = mechanism.choose([dict(c) for c in candidates], ctx)
    # An order of the candidates, or of some of them (a mechanism may drop some); none new.
    assert ordered and all(c in candidates for c in ordered)
    assert len({repr(c) for c in ordered}) == len(ordered)
    trial = study.trials[-2]
    assert mechanism.after_trial(study, trial, trial.state, trial.values) is None


@pytest.mark.parametrize("case", CASES)
def test_state_is_rebuilt_from_the_storage(case: Any, tmp_path: Any) -> None:
    """Two instances, as in two processes, decide the same on the same stored study."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    rows = [(config(x=float(i) - 3.0, n=1 + i), float((i - 2) ** 2)) for i in range(6)]
    make_study(rows, storage=url)
    (summary,) = optuna.get_all_study_summaries(url)

    def decide(number: int | None = None) -> Any:
        study = optuna.load_study(study_name=summary.study_name, storage=url)
        ctx = make_context(study, seed=7, number=number)
        # The study's trials as stored before this proposal; the running trial is ours.
        mechanism = _make(case)
        mechanism.prepare(ctx)
        review = mechanism.review(config(x=-1.0, n=3), ctx)
        out = (ctx.params, list(ctx.notes), review, ctx.record)
        if number is None and case not in _SEEDED_BY_NUMBER:
            study.tell(ctx.trial.number, state=optuna.trial.TrialState.FAIL)
        return out, ctx.trial.number

    (first, number), (second, _) = decide(), decide()
    if case in _SEEDED_BY_NUMBER:
        # Optuna's CmaEsSampler seeds each draw with the trial's number: the second process
        # decides on the same trial, after the first wrote CMA-ES's generation on it.
        (second, _) = decide(number)
    # The second saw one more (failed, parameterless) trial or the same one; nothing it decides
    # depends on it.
    assert repr(first[0]) == repr(second[0])
    assert first[1] == second[1]
    assert first[2] == second[2]


@pytest.mark.parametrize("case", CASES)
def test_runs_in_a_study_and_proves_it(case: Any, tmp_path: Any) -> None:
    def answer(request: ChatRequest, index: int) -> str:
        return answer_json({"x": 0.0, "lr": 1e-2, "n": 5, "c": "a"})

    kwargs: dict[str, Any] = {"n_candidates": 2} if case == "candidate_choice" else {}
    sampler = LLMSampler(
        preset="level0",
        model=ScriptedChatModel(answer),
        search_space=SPACE,
        seed=0,
        mechanisms=[_make(case)],
        **kwargs,
    )
    study = optuna.create_study(sampler=sampler, storage=f"sqlite:///{tmp_path / 's.db'}")

    def objective(trial: optuna.Trial) -> float:
        p = {n: getattr(trial, "suggest_" + k)(n, *a, **kw) for n, (k, a, kw) in _SUGGEST.items()}
        return (p["x"] - 1.0) ** 2 + float(np.log10(p["lr"]) + 2) ** 2 + p["n"]

    study.optimize(objective, n_trials=12)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    name = _cls(case).name
    calls: dict[str, int] = {}
    for t in study.trials:
        record = t.user_attrs[_attrs.MECHANISMS][name]
        assert not record["errors"] and record["off"] is False
        for hook, n in record["hooks"].items():
            calls[hook] = calls.get(hook, 0) + n
    defined = set(overridden_hooks(_make(case)))
    assert set(calls) == defined
    assert calls.get("prepare", 1) >= 1 and calls.get("review", 1) >= 1


_SUGGEST = {
    "x": ("float", (-5.0, 5.0), {}),
    "lr": ("float", (1e-4, 1e-1), {"log": True}),
    "n": ("int", (1, 10), {}),
    "c": ("categorical", (["a", "b", "c"],), {}),
}
