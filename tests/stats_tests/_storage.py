"""Build real studies in a storage for the stats tests: trials added with create_trial."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna.stats import TRUE_VALUE

FAIL = "fail"
PRUNED = "pruned"


def add_study(
    storage: Any,
    name: str,
    values: Sequence[float | str],
    *,
    arm: str | None = None,
    run: str | None = "run",
    seed: int | None = None,
    objective: str | None = "quadratic",
    optimum: float | None = None,
    direction: str = "minimize",
    kind: str = "baseline",
    true_values: Sequence[float | None] | None = None,
) -> optuna.Study:
    """A study whose trials hold ``values`` in order; FAIL and PRUNED mark those states."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=name, direction=direction)
    attrs = {
        _attrs.KIND: kind,
        _attrs.RUN: run,
        _attrs.ARM: arm,
        _attrs.OBJECTIVE: objective,
        _attrs.SEED: seed,
        _attrs.OPTIMUM: optimum,
    }
    for key, value in attrs.items():
        if value is not None:
            study.set_user_attr(key, value)
    trials = []
    for i, v in enumerate(values):
        common: dict[str, Any] = {
            "params": {"x": float(i)},
            "distributions": {"x": FloatDistribution(0.0, 1e6)},
        }
        if v == FAIL:
            trials.append(optuna.trial.create_trial(state=TrialState.FAIL, **common))
        elif v == PRUNED:
            trials.append(optuna.trial.create_trial(state=TrialState.PRUNED, **common))
        else:
            attrs_t = {}
            if true_values is not None and true_values[i] is not None:
                attrs_t[TRUE_VALUE] = true_values[i]
            trials.append(optuna.trial.create_trial(value=float(v), user_attrs=attrs_t, **common))
    study.add_trials(trials)
    return study
