"""One cell of a benchmark grid as a study: opened or resumed, its trials run and timed.

Every runner (held out, mechanisms, ablation, LM task, classical state) runs its cells the same
way, so a killed run is resumed the same way everywhere: the trials it left RUNNING are failed,
the complete ones count, and only the rest are asked for. The noise-free value of each trial is
stored beside its observed value (``bilevel:true_value``), so a row's regret never calls the
objective again.
"""

from __future__ import annotations

from collections.abc import Callable
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from _results import TRUE_VALUE


#: The study's accumulated optimize time, summed over resumed runs (the older reports read it).
WALL = "bench:wall_s"


def storage(url: str) -> optuna.storages.RDBStorage:
    """The storage of ``url``; SQLite waits up to 120 s for a lock other workers hold."""
    if url.startswith("sqlite"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
    return optuna.storages.RDBStorage(url)


def open_cell(
    storage: optuna.storages.BaseStorage,
    name: str,
    *,
    direction: str,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner | None = None,
) -> tuple[optuna.Study, int]:
    """The cell's study (created, or loaded to resume) and how many of its trials are complete.

    A trial a killed run left RUNNING is failed, so the resumed run does not count it.
    """
    study = optuna.create_study(
        storage=storage, study_name=name, direction=direction, sampler=sampler, pruner=pruner,
        load_if_exists=True,
    )  # fmt: skip
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return study, len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def recording_true_value(
    objective: Any, *, observed: bool = False
) -> Callable[[optuna.Trial], float]:
    """``objective`` as Optuna calls it, storing each trial's noise-free value beside it.

    The noise-free value is ``objective.true_value(params)``, or with ``observed`` the observed
    value itself (the LM task: what the user gets, with no retraining).
    """

    def evaluate(trial: optuna.Trial) -> float:
        value = objective(trial)
        true = value if observed else objective.true_value(dict(trial.params))
        trial.set_user_attr(TRUE_VALUE, true)
        return value

    return evaluate


def optimize_timed(
    study: optuna.Study, evaluate: Callable[[optuna.Trial], float], n_trials: int
) -> float:
    """Run ``n_trials`` more trials; the study's optimize time so far, over resumed runs too."""
    start = time.perf_counter()
    study.optimize(evaluate, n_trials=n_trials)
    wall = time.perf_counter() - start + float(study.user_attrs.get(WALL, 0.0))
    study.set_user_attr(WALL, wall)
    return wall
