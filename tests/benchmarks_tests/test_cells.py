from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

import _cells
import _results

from bilevel_optuna.objectives import get_objective


def test_a_killed_cell_resumes_with_its_running_trial_failed_and_its_time_summed(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'cells.db'}"
    objective = get_objective("branin", seed=0)
    evaluate = _cells.recording_true_value(objective)

    study, done = _cells.open_cell(
        _cells.storage(url), "cell", direction="minimize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )  # fmt: skip
    assert done == 0
    first = _cells.optimize_timed(study, evaluate, 3)
    study.ask()  # a trial the killed run never told

    study, done = _cells.open_cell(
        _cells.storage(url), "cell", direction="minimize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )  # fmt: skip
    assert done == 3
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.COMPLETE] * 3 + [TrialState.FAIL]
    total = _cells.optimize_timed(study, evaluate, 2)
    assert total >= first
    assert study.user_attrs[_cells.WALL] == total
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(complete) == 5
    for t in complete:
        assert t.user_attrs[_results.TRUE_VALUE] == objective.true_value(dict(t.params))


def test_the_true_value_can_be_the_observed_one(tmp_path: Path) -> None:
    # A table's evaluation is one training seed's value; its true value is the mean over seeds.
    noisy = get_objective("hpobench/kc1", seed=1)
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'lm.db'}", direction=noisy.direction,
        sampler=optuna.samplers.RandomSampler(seed=0),
    )  # fmt: skip
    study.optimize(_cells.recording_true_value(noisy, observed=True), n_trials=3)
    assert any(t.value != noisy.true_value(dict(t.params)) for t in study.trials)
    for t in study.trials:
        assert t.user_attrs[_results.TRUE_VALUE] == t.value
