"""The outer objective: one proposer configuration, run on every (repeat seed, objective).

Each (repeat, objective) score is reported as an intermediate value, so that racing
(:mod:`bilevel_optuna.studies._racing`) can stop a poor configuration early. The decision is
asked in one place: :meth:`~bilevel_optuna.studies._racing.OuterRacing.after_repeat`.
"""

from __future__ import annotations

import statistics
from typing import Any

import optuna
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.samplers import summarize_mechanisms
from bilevel_optuna.studies._arms import ArmRunner
from bilevel_optuna.studies._arms import arm_of
from bilevel_optuna.studies._config import LEVEL0
from bilevel_optuna.studies._config import OuterSpace
from bilevel_optuna.studies._config import ProposerConfig
from bilevel_optuna.studies._inner import INTERRUPTED
from bilevel_optuna.studies._racing import OuterRacing
from bilevel_optuna.studies._scoring import Scorer


class OuterObjective:
    """Callable on an outer trial: suggest a configuration, run its repeats, return its score.

    Returns the mean score over repeats, or ``(mean score, tokens per repeat)`` with
    ``cost=True`` (two objectives, no pruning).
    """

    def __init__(
        self,
        *,
        space: OuterSpace,
        runner: ArmRunner,
        scorer: Scorer,
        objectives: list[Objective],
        racing: OuterRacing,
        cost: bool,
    ) -> None:
        self.space = space
        self.runner = runner
        self.scorer = scorer
        self.objectives = objectives
        self.racing = racing
        self.cost = cost

    def __call__(self, trial: optuna.Trial) -> Any:
        config = self.space.suggest(trial)
        arm = arm_of(config)
        trial.set_user_attr(_attrs.CONFIG, config.to_dict())
        trial.set_user_attr(_attrs.ARM, arm)
        names: list[str] = []
        per_repeat: list[float] = []
        tokens = 0
        seeds = self.runner.seeds
        try:
            for repeat, seed in enumerate(seeds):
                scores = []
                for objective in self.objectives:
                    result = self.runner.run(
                        arm, objective, seed, kind="inner", config=config, outer_trial=trial
                    )
                    names.append(result.study_name)
                    tokens += result.tokens
                    scores.append(self.scorer(result, objective))
                value = statistics.fmean(scores)
                per_repeat.append(value)
                trial.set_user_attr(_attrs.INNER_STUDIES, names)
                # Raises TrialPruned (inner studies kept and marked) if this one lost the race.
                self.racing.after_repeat(
                    trial,
                    repeat=repeat,
                    scores=scores,
                    inner_studies=names,
                    summary={"per_repeat": per_repeat, "tokens": tokens},
                )
        except KeyboardInterrupt:
            trial.set_user_attr(INTERRUPTED, True)
            raise
        mean = statistics.fmean(per_repeat)
        summary: dict[str, Any] = {
            "per_repeat": per_repeat,
            "mean": mean,
            "tokens": tokens,
            "aggregate": self.scorer.aggregate,
        }
        if config.mechanisms:
            # Proof of injection: a mechanism that never ran or never changed a proposal is
            # named here and warned about.
            studies = [optuna.load_study(study_name=n, storage=self.runner.storage) for n in names]
            summary["mechanisms"] = {
                name: s.status for name, s in summarize_mechanisms(studies).items()
            }
        trial.set_user_attr(_attrs.SUMMARY, summary)
        return (mean, tokens / len(seeds)) if self.cost else mean


def requeue_interrupted(study: optuna.Study) -> None:
    """Enqueue again the configurations of outer trials stopped by Ctrl-C, once each."""
    trials = study.get_trials(deepcopy=False)
    live = [
        t.params or t.system_attrs.get("fixed_params", {})
        for t in trials
        if t.state != TrialState.FAIL
    ]
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get(INTERRUPTED) and t.params not in live:
            study.enqueue_trial(t.params, user_attrs={_attrs.RESUMED_FROM: t.number})
            live.append(t.params)


def represents(space: OuterSpace, params: dict[str, Any], config: ProposerConfig) -> bool:
    """Whether ``params`` lie in ``space`` and suggest exactly ``config`` there."""
    for name, dist in space.distributions().items():
        if name not in params:
            return False
        try:
            if not dist._contains(dist.to_internal_repr(params[name])):
                return False
        except (ValueError, TypeError):
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
