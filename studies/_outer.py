"""The outer study's trials: the Level-0 reference point, and how a trial is shown.

An outer trial is one proposer configuration; its repeats are claimed and run by the run's
workers (:mod:`bilevel_optuna.studies._worker`), which also race and settle it.
"""

from __future__ import annotations

from typing import Any

import optuna

from bilevel_optuna import _attrs
from bilevel_optuna import _optuna_private
from bilevel_optuna.studies._arms import arm_label
from bilevel_optuna.studies._config import LEVEL0
from bilevel_optuna.studies._config import OuterSpace
from bilevel_optuna.studies._config import ProposerConfig


def outer_line(trial: optuna.trial.FrozenTrial) -> str:
    """``outer trial 3 complete: cfg-d65f7017 (t=0.7 h=24 tabu) value 0.8123``."""
    config = trial.user_attrs.get(_attrs.CONFIG)
    arm = str(trial.user_attrs.get(_attrs.ARM, ""))
    label = arm_label(arm, ProposerConfig.from_dict(config) if config else None)
    if trial.values:
        shown = " ".join(f"{v:.4g}" for v in trial.values)
    elif trial.intermediate_values:  # pruned: the last repeat's score
        last = trial.intermediate_values[max(trial.intermediate_values)]
        shown = f"{last:.4g} (after {len(trial.intermediate_values)} instances)"
    else:
        shown = "none"
    return f"outer trial {trial.number} {trial.state.name.lower()}: {label} value {shown}"


def represents(space: OuterSpace, params: dict[str, Any], config: ProposerConfig) -> bool:
    """Whether ``params`` lie in ``space`` and suggest exactly ``config`` there."""
    for name, dist in space.distributions().items():
        if name not in params:
            return False
        if not _optuna_private.contains(dist, params[name]):
            return False
    try:
        return space.suggest(optuna.trial.FixedTrial(params)) == config
    except (ValueError, TypeError):
        return False


def enqueue_level0(study: optuna.Study, space: OuterSpace) -> None:
    """On a new outer study, the Level-0 configuration as the first trial: a reference point
    for the outer sampler, and free, since its inner studies are the llm-level0 baseline's."""
    params = space.params_of(LEVEL0)
    if not study.trials and represents(space, params, LEVEL0):
        study.enqueue_trial(params, user_attrs={_attrs.REFERENCE: "llm-level0"})
