"""Settling a bilevel run's outer trials from the work queue: racing them, scoring them, telling.

Whichever worker notices first that an outer trial's repeats are in (its inner-study tasks are
done) takes the trial's *settling lock* on its slot (:meth:`WorkQueue.lock_settling`), races it
after each complete repeat, in repeat order, and computes its value once every repeat is in.
Doing it twice writes the same values, and Optuna refuses the second ``tell``. An outer trial
whose inner study failed is failed here too, and its slot is reopened for a new configuration.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna import _optuna_private
from bilevel_optuna._logging import get_logger
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.samplers import summarize_mechanisms
from bilevel_optuna.studies._arms import ArmRunner
from bilevel_optuna.studies._config import ProposerConfig
from bilevel_optuna.studies._inner import InnerResult
from bilevel_optuna.studies._inner import read_inner_result
from bilevel_optuna.studies._outer import outer_line
from bilevel_optuna.studies._racing import OuterRacing
from bilevel_optuna.studies._scoring import Scorer
from bilevel_optuna.studies._settings import RunSettings
from bilevel_optuna.studies._workqueue import DONE
from bilevel_optuna.studies._workqueue import Task
from bilevel_optuna.studies._workqueue import WorkQueue

_logger = get_logger(__name__)

#: Outer trial attributes (README, "Storage data model"): its tasks in (repeat, objective)
#: order, written once queued (a RUNNING trial without them is being set up), and its slot.
TASKS = _attrs.TASKS
SLOT = _attrs.SLOT

Progress = Callable[[str], None]
Callback = Callable[[optuna.Study, FrozenTrial], None]


#: Share of a configuration's inner trials proposed by the base sampler from which the outer
#: trial's line warns: its value then measures the base sampler more than the model.
FALLBACK_WARN = 0.5


def spend_of(results: Sequence[InnerResult]) -> dict[str, Any]:
    """What an outer trial's inner studies cost and who proposed their trials.

    ``tokens`` the model spent, ``seconds`` the inner trials' wall time, ``sources`` the trials
    by ``llm:source`` and ``fallback_share`` the share the base sampler proposed (these two
    absent when no trial carries a source). The outer value scores regret at equal trials and charges neither, so a configuration
    whose model answers are refused can look as good as TPE at many times its cost; these
    fields let a user (and the dashboard) see it.
    """
    sources: Counter[str] = Counter()
    for result in results:
        sources.update(result.sources)
    spend: dict[str, Any] = {
        "tokens": sum(r.tokens for r in results),
        "seconds": round(sum(r.seconds for r in results), 3),
    }
    if sources:
        spend["sources"] = dict(sorted(sources.items()))
        spend["fallback_share"] = round(sources["fallback"] / sources.total(), 4)
    return spend


def _warn_fallback(number: int, summary: dict[str, Any]) -> None:
    share = summary.get("fallback_share")
    if share is not None and share >= FALLBACK_WARN:
        _logger.warning(
            "Outer trial %d: the base sampler proposed %.0f%% of its inner trials (the model's "
            "answers were refused or failed; see each inner study's llm:fallback). Its value "
            "measures the base sampler more than this configuration.",
            number,
            100 * share,
        )


class OuterSettler:
    """Races, scores and finishes the running outer trials of a run, from any worker.

    Args:
        settings: The run's settings (objectives' names, repeats' seeds, aggregate, cost).
        outer: The outer study.
        storage: The run's storage.
        queue: The run's work queue.
        worker_id: The worker that settles (holder of the settling locks it takes).
        objectives: The objectives this process can build, by name.
        runner: Names the inner studies and knows their trial budget.
        racing: The racing rule.
        progress: Called with one line per finished outer trial.
        callbacks: Called as ``(outer_study, frozen_trial)`` after an outer trial finished here.
    """

    def __init__(
        self,
        settings: RunSettings,
        *,
        outer: optuna.Study,
        storage: BaseStorage,
        queue: WorkQueue,
        worker_id: str,
        objectives: dict[str, Objective],
        runner: ArmRunner,
        racing: OuterRacing,
        progress: Progress,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.outer = outer
        self.storage = storage
        self.queue = queue
        self.worker_id = worker_id
        self.objectives = objectives
        self.objective_names = list(settings.objective_names)
        self.seeds = list(settings.seeds)
        self.cost = settings.cost_objective
        self.scorer = Scorer(settings.aggregate)
        self.runner = runner
        self.racing = racing
        self.progress = progress
        self.callbacks = list(callbacks)
        self._scales_ready: set[str] = set()

    def _result(self, key: str, objective: Objective) -> InnerResult:
        study = optuna.load_study(study_name=key, storage=self.storage)
        return read_inner_result(study, objective, n_trials=self.runner.n_inner_trials)

    def _scales_for(
        self, names: Sequence[str], seeds: Sequence[int], tasks: dict[str, Task]
    ) -> bool:
        """Set random search's scales for these objectives once its studies are in."""
        if self.scorer.aggregate not in ("regret", "auc"):
            return True
        for name in names:
            if name in self._scales_ready:
                continue
            keys = [self.runner.study_name_of("random", name, s) for s in seeds]
            if any(tasks.get(k) is None or tasks[k].state != DONE for k in keys):
                return False
            objective = self.objectives.get(name)
            if objective is None:
                return False
            self.scorer.set_scales({name: [self._result(k, objective) for k in keys]})
            self._scales_ready.add(name)
        return True

    def settle(self) -> None:
        """Race and finish the running outer trials whose repeats are in."""
        running = self.outer.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return
        tasks = {t.key: t for t in self.queue.tasks()}
        slots = {t.outer_trial for t in tasks.values() if t.kind == "outer"}
        # Scores need every training objective here, and random search's scale.
        can_score = all(name in self.objectives for name in self.objective_names) and (
            self._scales_for(self.objective_names, self.seeds, tasks)
        )
        for trial in running:
            keys = trial.user_attrs.get(TASKS)
            if keys is None:
                if trial.number not in slots and trial.datetime_start is not None:
                    silent = self.queue.now() - trial.datetime_start.timestamp()
                    if silent > self.queue.stale_after:
                        self.fail_outer(trial, "its worker stopped before queuing its repeats")
                continue
            if not can_score or not self._repeat_news(trial, list(keys), tasks):
                continue
            slot = trial.user_attrs.get(SLOT)
            if slot is None or not self.queue.lock_settling(slot, self.worker_id):
                continue  # another worker settles it now
            try:
                fresh = self.outer.get_trials(deepcopy=False)[trial.number]
                if fresh.state == TrialState.RUNNING:
                    self._settle(fresh, list(keys), tasks)
            except UpdateFinishedTrialError:
                _logger.debug("Outer trial %d was finished elsewhere.", trial.number)
            finally:
                self.queue.unlock_settling(slot, self.worker_id)

    def _repeat_news(self, trial: FrozenTrial, keys: list[str], tasks: dict[str, Task]) -> bool:
        """Whether every repeat of ``trial`` is in, or one that racing has not judged yet."""
        n_obj = len(self.objective_names)
        complete = 0
        for repeat in range(len(self.seeds)):
            repeat_keys = keys[repeat * n_obj : (repeat + 1) * n_obj]
            if any(tasks.get(k) is None or tasks[k].state != DONE for k in repeat_keys):
                break
            complete += 1
        if complete == len(self.seeds):
            return True
        if not self.racing.reports:
            return False
        steps = set(trial.intermediate_values)
        return any(
            not all(r * n_obj + j in steps for j in range(n_obj)) for r in range(complete)
        )

    def _settle(self, trial: FrozenTrial, keys: list[str], tasks: dict[str, Task]) -> None:
        n_obj = len(self.objective_names)
        per_repeat: list[float] = []
        names: list[str] = []
        results: list[InnerResult] = []
        handle = _StoredTrial(self.outer, trial)
        for repeat in range(len(self.seeds)):
            repeat_keys = keys[repeat * n_obj : (repeat + 1) * n_obj]
            if any(tasks.get(k) is None or tasks[k].state != DONE for k in repeat_keys):
                return  # racing and the value wait for this repeat
            scores = []
            for key, name in zip(repeat_keys, self.objective_names, strict=True):
                objective = self.objectives[name]
                result = self._result(key, objective)
                names.append(key)
                results.append(result)
                scores.append(self.scorer(result, objective))
            per_repeat.append(statistics.fmean(scores))
            steps = set(trial.intermediate_values)
            reported = all(repeat * n_obj + j in steps for j in range(n_obj))
            if reported and repeat + 1 < len(self.seeds):
                continue
            handle.set_user_attr(_attrs.INNER_STUDIES, names)
            try:
                self.racing.after_repeat(
                    handle,  # type: ignore[arg-type]
                    repeat=repeat,
                    scores=scores,
                    inner_studies=names,
                    summary={"per_repeat": per_repeat, **spend_of(results)},
                )
            except optuna.TrialPruned:
                self.finish_outer(trial, state=TrialState.PRUNED)
                others = {
                    k
                    for t in self.outer.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                    if t.number != trial.number
                    for k in t.user_attrs.get(TASKS, [])
                }
                self.queue.cancel([k for k in keys[len(names):] if k not in others])
                return
        mean = statistics.fmean(per_repeat)
        summary: dict[str, Any] = {
            "per_repeat": per_repeat,
            "mean": mean,
            "aggregate": self.scorer.aggregate,
            **spend_of(results),
        }
        _warn_fallback(trial.number, summary)
        config = ProposerConfig.from_dict(trial.user_attrs[_attrs.CONFIG])
        if config.mechanisms:
            # Proof of injection: a mechanism that never ran or never changed a proposal is
            # named here and warned about.
            studies = [optuna.load_study(study_name=n, storage=self.storage) for n in names]
            summary["mechanisms"] = {
                name: s.status for name, s in summarize_mechanisms(studies).items()
            }
        handle.set_user_attr(_attrs.INNER_STUDIES, names)
        handle.set_user_attr(_attrs.SUMMARY, summary)
        values = [mean, summary[self.cost] / len(self.seeds)] if self.cost else [mean]
        self.finish_outer(trial, state=TrialState.COMPLETE, values=values)

    def finish_outer(
        self, trial: FrozenTrial, *, state: TrialState, values: list[float] | None = None
    ) -> None:
        try:
            frozen = self.outer.tell(trial.number, values, state=state)
        except (RuntimeError, ValueError) as err:  # another worker settled it first
            _logger.debug("Outer trial %d settled elsewhere: %s", trial.number, err)
            return
        self.progress(outer_line(frozen))
        for callback in self.callbacks:
            callback(self.outer, frozen)

    def fail_outer(self, trial: FrozenTrial, reason: str) -> None:
        self.storage.set_trial_user_attr(
            _optuna_private.trial_id_of(trial), _attrs.FAILURE_REASON, reason[:500]
        )
        try:
            self.outer.tell(trial.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError):  # finished elsewhere meanwhile
            return
        slot = trial.user_attrs.get(SLOT)
        if slot is not None:
            self.queue.reopen_slot(slot)
        self.progress(f"outer trial {trial.number} failed: {reason}")


class _StoredTrial:
    """A running outer trial written through the storage, from any worker (for racing)."""

    def __init__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.study = study
        self.number = trial.number
        self._trial_id = _optuna_private.trial_id_of(trial)
        self._storage = _optuna_private.storage_of(study)

    def report(self, value: float, step: int) -> None:
        self._storage.set_trial_intermediate_value(self._trial_id, step, float(value))

    def set_user_attr(self, key: str, value: Any) -> None:
        self._storage.set_trial_user_attr(self._trial_id, key, value)

