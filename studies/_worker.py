"""A worker of a bilevel run: what its tasks are, on the work queue every worker shares.

Every process that takes part in a run, the one that started it (``bilevel-optuna run`` or
:func:`run_bilevel_study`) and any number of ``bilevel-optuna worker`` processes on other
servers, runs the same loop (:class:`~bilevel_optuna.studies._workqueue.QueueWorker`, which
claims, beats and hands back); :class:`RunWorker` says what a bilevel run's tasks are:

1. settle the outer trials whose repeats are in (``_settling``): race them after each complete
   repeat, and compute the value of one whose every repeat is in;
2. once the budget's outer trials are all finished, queue the held-out evaluation of the best
   configuration and the baselines on the held-out objectives;
3. claim the next task: baselines first, then the repeats of running outer trials, then a new
   outer trial (a *slot*), then the held-out tasks; run it; mark it done;
4. stop when nothing is left to claim and nothing runs anywhere.

A claimed inner study is resumed, never restarted: its finished trials are kept, and trials it
left RUNNING (a worker killed or cut off mid-trial) are failed and queued again with the same
parameters by Optuna's retry callback. A worker that loses its claim (its heartbeat went stale
and another worker took the task over) stops before its next inner trial and writes nothing
more for that task.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from collections.abc import Sequence

import optuna
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna import _optuna_private
from bilevel_optuna._logging import get_logger
from bilevel_optuna._storage import heartbeat_settings
from bilevel_optuna._transient import is_disconnect
from bilevel_optuna.exceptions import RunFailedError
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.studies._arms import LEVEL0_ARM
from bilevel_optuna.studies._arms import ArmRunner
from bilevel_optuna.studies._arms import arm_label
from bilevel_optuna.studies._arms import arm_of
from bilevel_optuna.studies._arms import make_sampler
from bilevel_optuna.studies._config import LEVEL0
from bilevel_optuna.studies._config import OuterSpace
from bilevel_optuna.studies._config import ProposerConfig
from bilevel_optuna.studies._progress import ProgressBar
from bilevel_optuna.studies._racing import OuterRacing
from bilevel_optuna.studies._settings import RunSettings
from bilevel_optuna.studies._settling import SLOT
from bilevel_optuna.studies._settling import TASKS
from bilevel_optuna.studies._settling import OuterSettler
from bilevel_optuna.studies._workqueue import CANCELLED
from bilevel_optuna.studies._workqueue import DONE
from bilevel_optuna.studies._workqueue import FAILED
from bilevel_optuna.studies._workqueue import RUNNING
from bilevel_optuna.studies._workqueue import WAITING
from bilevel_optuna.studies._workqueue import Claim
from bilevel_optuna.studies._workqueue import LostClaim
from bilevel_optuna.studies._workqueue import QueueWorker
from bilevel_optuna.studies._workqueue import Task
from bilevel_optuna.studies._workqueue import WorkQueue
from bilevel_optuna.studies._workqueue import task_id

_logger = get_logger(__name__)

# Task priorities: lower is claimed first.
_BASELINE, _INNER, _SLOT, _HELDOUT = 0, 1_000_000_000, 2_000_000_000, 3_000_000_000
_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)

Progress = Callable[[str], None]
Callback = Callable[[optuna.Study, FrozenTrial], None]


def slot_key(run_name: str, k: int) -> str:
    return f"{run_name}#outer-{k}"


class RunWorker(QueueWorker):
    """One process's part in a bilevel run.

    Args:
        settings: The run's settings (studies/_settings.py): objectives' names, repeats'
            seeds, baselines, budget, aggregate, ``stale_after``.
        storage: The run's storage.
        run_name: The run (= the outer study's name).
        outer: The outer study.
        objectives, heldout: The training and held-out objectives, in the settings' order;
            None where this process cannot build one (a worker then leaves that objective's
            tasks to others).
        runner: Runs an arm's inner study.
        racing: The racing rule.
        space: The outer space, or None when this process cannot build it (it then takes no
            new outer trial).
        outer_sampler: ``"tpe"``/``"random"`` (reseeded by trial number, so that workers
            asking at once do not draw the same start-up configurations), a sampler, or None.
        progress: Called with one line per finished inner study and outer trial.
        callbacks: Called as ``(outer_study, frozen_trial)`` after an outer trial this worker
            finished.
        model_label: The model this worker runs, for ``status``.
        bar: A progress bar over the whole run (studies/_progress.py), redrawn each turn.
        local: Keep the claims in this process when the storage has no database of its own
            (a journal file: one process).
    """

    def __init__(
        self,
        *,
        settings: RunSettings,
        storage: BaseStorage,
        run_name: str,
        outer: optuna.Study,
        objectives: Sequence[Objective | None],
        heldout: Sequence[Objective | None],
        runner: ArmRunner,
        racing: OuterRacing,
        space: OuterSpace | None,
        outer_sampler: str | BaseSampler | None,
        progress: Progress | None = None,
        callbacks: Sequence[Callback] = (),
        model_label: str | None = None,
        bar: ProgressBar | None = None,
        local: bool = False,
    ) -> None:
        interval, _ = heartbeat_settings(storage)
        super().__init__(
            WorkQueue(storage, run_name, stale_after=settings.stale_after, local=local),
            heartbeat_interval=max(float(interval or 15.0), 0.2),
            model_label=model_label,
        )
        self.storage = storage
        self.run_name = run_name
        self.outer = outer
        self.objective_names = list(settings.objective_names)
        self.heldout_names = list(settings.heldout_names)
        self.objectives = {
            n: o for n, o in zip(self.objective_names, objectives, strict=True) if o is not None
        }
        self.objectives.update(
            {n: o for n, o in zip(self.heldout_names, heldout, strict=True) if o is not None}
        )
        self.seeds = list(settings.seeds)
        self.heldout_seeds = list(settings.heldout_seeds)
        self.baselines = list(settings.baselines)
        self.runner = runner
        self.space = space
        self.outer_sampler = outer_sampler
        self.n_outer_trials = settings.n_outer_trials
        self.seed = settings.seed
        self.progress: Progress = progress or (lambda message: None)
        self.bar = bar
        self.settler = OuterSettler(
            settings,
            outer=outer,
            storage=storage,
            queue=self.queue,
            worker_id=self.worker_id,
            objectives=self.objectives,
            runner=runner,
            racing=racing,
            progress=self.progress,
            callbacks=callbacks,
        )

    # --- Setting a run up --------------------------------------------------------------------

    def ensure_tasks(self) -> None:
        """Queue the baselines and the outer slots (idempotent: a resumed run adds nothing).

        Slots already used by finished outer trials of a run from before workers existed are
        marked done, so the budget counts them.
        """
        seq = 0
        for arm in self.baselines:
            for name in self.objective_names:
                for seed in self.seeds:
                    config = LEVEL0 if arm == LEVEL0_ARM else None
                    self._add_inner(
                        arm, name, seed, kind="baseline", config=config, priority=_BASELINE + seq
                    )
                    seq += 1
        slots = self.queue.tasks(kind="outer")
        existing = {t.key for t in slots}
        # A resumed run with a smaller budget: its extra slots that nothing claimed yet go.
        self.queue.cancel(
            [t.key for t in slots if t.payload.get("slot", 0) >= self.n_outer_trials
             and t.state == WAITING]
        )
        counted = [
            t for t in self.outer.get_trials(deepcopy=False, states=_COUNTED)
            if SLOT not in t.user_attrs
        ]
        for k in range(self.n_outer_trials):
            key = slot_key(self.run_name, k)
            # Adding is idempotent, and brings back a slot a smaller budget had cancelled.
            added = self.queue.add(key, kind="outer", priority=_SLOT + k, payload={"slot": k})
            if added and k < len(counted) and not existing:
                # A finished trial of an older run holds this slot.
                claim = self.queue.claim(task_id(self.run_name, key), self.worker_id)
                if claim is not None:
                    self.queue.set_outer_trial(claim, counted[k].number)
                    self.queue.finish(claim)

    def _add_inner(
        self,
        arm: str,
        objective_name: str,
        seed: int,
        *,
        kind: str,
        config: ProposerConfig | None,
        priority: int,
        outer_trial: int | None = None,
    ) -> str:
        key = self.runner.study_name_of(arm, objective_name, seed)
        self.queue.add(
            key,
            kind=kind,
            priority=priority,
            payload={
                "arm": arm,
                "objective": objective_name,
                "seed": seed,
                "kind": kind,
                "config": config.to_dict() if config is not None else None,
                "outer_trial": outer_trial,
            },
        )
        return key

    # --- The turn: the hooks of the queue's loop ----------------------------------------------

    def before_claim(self) -> None:
        """Settle the outer trials whose repeats are in, queue the held-out phase once the
        budget is spent, and redraw the bar."""
        self.settle()
        self._queue_post_phase()
        if self.bar is not None:
            self.bar.update(
                self.queue.tasks(),
                outer_done=len(self.outer.get_trials(deepcopy=False, states=_COUNTED)),
            )

    def settle(self) -> None:
        """Race and finish the running outer trials whose repeats are in (``_settling``)."""
        self.settler.settle()

    def can_run(self, task: Task) -> bool:
        if task.kind == "outer":
            return self.space is not None and self.outer_sampler is not None
        # An objective given to run_bilevel_study as a Python object has no spec form: its
        # tasks are left to the process that started the run (run_worker says so once).
        return task.payload.get("objective") in self.objectives

    def run_task(self, claim: Claim) -> None:
        if claim.task.kind == "outer":
            self._start_outer_trial(claim)
        else:
            self._run_inner(claim)

    # --- Inner tasks -------------------------------------------------------------------------

    def _run_inner(self, claim: Claim) -> None:
        task = claim.task
        payload = task.payload
        objective = self.objectives[payload["objective"]]
        config = (
            ProposerConfig.from_dict(payload["config"]) if payload.get("config") else None
        )

        def guard(study: optuna.Study, trial: FrozenTrial) -> None:
            if self.lost(claim):
                study.stop()

        try:
            self.runner.run(
                payload["arm"],
                objective,
                int(payload["seed"]),
                kind=payload["kind"],
                config=config,
                outer_trial=payload.get("outer_trial"),
                guard=guard,
                worker=self.worker_id,
            )
        except Exception as err:
            if is_disconnect(err):
                raise  # the loop waits for the database and resumes the claim if still held
            if self.lost(claim):
                raise LostClaim() from err
            self._task_failed(claim, err)
            raise RunFailedError(
                f"The inner study {task.key} failed on this worker: {type(err).__name__}: "
                f"{err}. It is marked failed; fix the cause and start a worker again (failed "
                "tasks are retried when a worker starts)."
            ) from err
        self.finish(claim)

    def _task_failed(self, claim: Claim, err: BaseException) -> None:
        error = f"{type(err).__name__}: {err}"
        key = claim.task.key
        self.queue.fail(claim, error)
        for trial in self.outer.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if key in trial.user_attrs.get(TASKS, []):
                self.settler.fail_outer(trial, f"inner study {key} failed: {error}")

    # --- Outer slots -------------------------------------------------------------------------

    def _outer_trial_for(self, claim: Claim) -> optuna.Trial | None:
        """The outer trial of a claimed slot: the one an earlier claim made, or a new one."""
        number = claim.task.outer_trial
        if number is not None:
            frozen = self._outer_trial(number)
            if frozen is not None and frozen.state == TrialState.RUNNING:
                return _optuna_private.live_trial(self.outer, frozen)
            if frozen is not None and frozen.state in _COUNTED:
                self.queue.finish(claim)
                return None
        with warnings.catch_warnings():
            # Outer trials have no heartbeat of their own: their repeats' tasks beat instead.
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
            trial = self.outer.ask()
        if isinstance(self.outer_sampler, str):
            # Reseeded by trial number before anything is sampled (Optuna samples at the first
            # suggest): a resumed run, or two workers asking at once, must not draw the same
            # random start-up configurations.
            self.outer.sampler = make_sampler(self.outer_sampler, seed=self.seed + trial.number)
        if not self.queue.set_outer_trial(claim, trial.number):
            self.outer.tell(trial, state=TrialState.FAIL)
            raise LostClaim()
        trial.set_user_attr(SLOT, claim.task.key)
        return trial

    def _start_outer_trial(self, claim: Claim) -> None:
        assert self.space is not None
        trial = self._outer_trial_for(claim)
        if trial is None:
            return
        config = self.space.suggest(trial)
        arm = arm_of(config)
        trial.set_user_attr(_attrs.CONFIG, config.to_dict())
        trial.set_user_attr(_attrs.ARM, arm)
        keys = []
        for repeat, seed in enumerate(self.seeds):
            for j, name in enumerate(self.objective_names):
                keys.append(
                    self._add_inner(
                        arm,
                        name,
                        seed,
                        kind="inner",
                        config=config,
                        outer_trial=trial.number,
                        priority=_INNER + trial.number * 10_000 + repeat * 100 + j,
                    )
                )
        trial.set_user_attr(TASKS, keys)
        self.finish(claim)
        _logger.info("Outer trial %d: %s", trial.number, arm_label(arm, config))

    def _outer_trial(self, number: int) -> FrozenTrial | None:
        trials = self.outer.get_trials(deepcopy=False)
        return trials[number] if number < len(trials) else None

    # --- After the budget: the held-out evaluation -------------------------------------------

    def _budget_spent(self, tasks: Sequence[Task] | None = None) -> bool:
        slots = tasks if tasks is not None else self.queue.tasks(kind="outer")
        slots = [t for t in slots if t.kind == "outer" and t.state != CANCELLED]
        if len(slots) < self.n_outer_trials or any(t.state != DONE for t in slots):
            return False
        return not self.outer.get_trials(deepcopy=False, states=(TrialState.RUNNING,))

    def _queue_post_phase(self) -> None:
        """Once every outer trial is in: the best configuration on every objective and the
        baselines on the held-out objectives (idempotent)."""
        if not self._budget_spent():
            return
        best = self.best()
        if best is None:
            return
        best_arm = arm_of(best)
        if self.outer.user_attrs.get(_attrs.BEST_ARM) == best_arm:
            return
        jobs: list[tuple[str, str, int, str, ProposerConfig | None]] = [
            (arm, name, seed, "baseline", LEVEL0 if arm == LEVEL0_ARM else None)
            for arm in self.baselines
            for name in self.heldout_names
            for seed in self.heldout_seeds
        ]
        jobs += [(best_arm, n, s, "inner", best) for n in self.objective_names for s in self.seeds]
        jobs += [
            (best_arm, n, s, "heldout", best)
            for n in self.heldout_names
            for s in self.heldout_seeds
        ]
        for seq, (arm, name, seed, kind, config) in enumerate(jobs):
            self._add_inner(arm, name, seed, kind=kind, config=config, priority=_HELDOUT + seq)
        self.outer.set_user_attr(_attrs.BEST_CONFIG, best.to_dict())
        self.outer.set_user_attr(_attrs.BEST_ARM, best_arm)

    def finished(self, tasks: Sequence[Task]) -> bool:
        if any(t.state in (WAITING, RUNNING) for t in tasks):
            return False
        if not self._budget_spent(tasks):
            return False
        best = self.best()
        return best is None or self.outer.user_attrs.get(_attrs.BEST_ARM) == arm_of(best)

    def best(self) -> ProposerConfig | None:
        """The configuration of the best complete outer trial, or None."""
        complete = self.outer.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            return None
        best_trial = min(complete, key=lambda t: t.values[0])
        return ProposerConfig.from_dict(best_trial.user_attrs[_attrs.CONFIG])

    def check_blocked(self, tasks: Sequence[Task]) -> None:
        failed = [t for t in tasks if t.state == FAILED and t.kind != "inner"]
        if failed and not any(t.state == RUNNING for t in tasks):
            first = failed[0]
            raise RunFailedError(
                f"The run cannot finish: {len(failed)} task(s) failed, e.g. {first.key} on "
                f"{first.worker}: {first.error}. Fix the cause and start a worker again "
                "(failed tasks are retried when a worker starts)."
            )
