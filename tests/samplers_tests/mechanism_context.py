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
) -> ProposalContext:
    """The context of the study's next trial, as LLMSampler builds it (the trial is running)."""
    running = study.ask()
    trial = study._storage.get_trial(running._trial_id)
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
