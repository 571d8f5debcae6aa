"""Hand-built ProposalContext objects on real Optuna studies, for unit tests of mechanisms."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from bilevel_optuna.samplers import ProposalContext

SPACE: dict[str, BaseDistribution] = {
    "x": FloatDistribution(-5.0, 5.0),
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "n": IntDistribution(1, 10),
    "c": CategoricalDistribution(["a", "b", "c"]),
}


def make_study(
    rows: Sequence[tuple[Mapping[str, Any], float | None]],
    space: Mapping[str, BaseDistribution] = SPACE,
    *,
    direction: str = "minimize",
    states: Sequence[TrialState] | None = None,
    storage: str | None = None,
) -> optuna.Study:
    """A study holding one finished trial per ``(params, value)`` row, in order."""
    study = optuna.create_study(direction=direction, storage=storage)
    for i, (params, value) in enumerate(rows):
        state = states[i] if states is not None else TrialState.COMPLETE
        study.add_trial(
            optuna.trial.create_trial(
                params=dict(params),
                distributions=dict(space),
                value=value if state == TrialState.COMPLETE else None,
                state=state,
            )
        )
    return study


def make_context(
    study: optuna.Study,
    space: Mapping[str, BaseDistribution] = SPACE,
    *,
    seed: int = 0,
    history: Sequence[optuna.trial.FrozenTrial] | None = None,
    number: int | None = None,
) -> ProposalContext:
    """The context of the study's next trial, as LLMSampler builds it (the trial is running),
    or of the running trial ``number``."""
    if number is None:
        number = study.ask().number
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return ProposalContext(
        study=study,
        trial=trial,
        search_space=dict(space),
        trials=trials,
        minimize=study.direction == optuna.study.StudyDirection.MINIMIZE,
        history=list(history if history is not None else complete),
        notes=[],
        rng=np.random.default_rng(seed),
    )


def config(x: float = 0.0, lr: float = 1e-2, n: int = 5, c: str = "a") -> dict[str, Any]:
    return {"x": x, "lr": lr, "n": n, "c": c}


# ------------------------------------------------- studies with the embedded model (slow tests)

BRANIN_SPACE: dict[str, BaseDistribution] = {
    "x1": FloatDistribution(-5.0, 10.0),
    "x2": FloatDistribution(0.0, 15.0),
}


def branin(trial: optuna.Trial) -> float:
    import math

    x1 = trial.suggest_float("x1", -5.0, 10.0)
    x2 = trial.suggest_float("x2", 0.0, 15.0)
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


_EMBEDDED: dict[str, optuna.Study] = {}


def embedded_study(
    mechanisms: Sequence[Any] = (), *, n_trials: int, seed: int = 0, **kwargs: Any
) -> optuna.Study:
    """A Branin study proposed by the embedded model; cached per process, so several test files
    can compare against the same bare run."""
    from bilevel_optuna.samplers import LLMSampler

    key = repr((list(mechanisms), n_trials, seed, sorted(kwargs.items())))
    if key not in _EMBEDDED:
        sampler = LLMSampler(
            preset="level0",
            model="local",
            description="Minimize the Branin function of two real numbers x1 and x2.",
            search_space=BRANIN_SPACE,
            mechanisms=mechanisms,
            seed=seed,
            **kwargs,
        )
        study = optuna.create_study(sampler=sampler)
        study.optimize(branin, n_trials=n_trials)
        _EMBEDDED[key] = study
    return _EMBEDDED[key]


def n_distinct(study: optuna.Study) -> int:
    return len({tuple(sorted(t.params.items())) for t in study.trials})
