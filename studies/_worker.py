"""A worker of a bilevel run: claims tasks from the run's database until the run is done.

Every process that takes part in a run, the one that started it (``bilevel-optuna run`` or
:func:`run_bilevel_study`) and any number of ``bilevel-optuna worker`` processes on other
servers, runs the same loop (:meth:`RunWorker.work`):

1. settle the outer trials whose repeats are in: race them after each complete repeat (in
   repeat order), and compute the value of one whose every repeat is in. Whichever worker
   notices first does it; doing it twice writes the same values, and Optuna refuses the second
   ``tell``;
2. once the budget's outer trials are all finished, queue the held-out evaluation of the best
   configuration and the baselines on the held-out objectives;
3. claim the next task (:mod:`bilevel_optuna.studies._work`): baselines first, then the repeats
   of running outer trials, then a new outer trial (a *slot*), then the held-out tasks; run it
   while a thread beats its heartbeat; mark it done;
4. stop when nothing is left to claim and nothing runs anywhere.

A claimed inner study is resumed, never restarted: its finished trials are kept, and trials it
left RUNNING (a worker killed or cut off mid-trial) are failed and queued again with the same
parameters by Optuna's retry callback. A worker that loses its claim (its heartbeat went stale
and another worker took the task over) stops before its next inner trial and writes nothing
more for that task.
"""

from __future__ import annotations

import statistics
import threading
import time
import warnings
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna._logging import get_logger
from bilevel_optuna._storage import heartbeat_settings
from bilevel_optuna._transient import is_disconnect
from bilevel_optuna.exceptions import BilevelOptunaError
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.studies import _work
from bilevel_optuna.studies._arms import LEVEL0_ARM
from bilevel_optuna.studies._arms import ArmRunner
from bilevel_optuna.studies._arms import arm_label
from bilevel_optuna.studies._arms import arm_of
from bilevel_optuna.studies._arms import make_sampler
from bilevel_optuna.studies._config import LEVEL0
from bilevel_optuna.studies._config import OuterSpace
from bilevel_optuna.studies._config import ProposerConfig
from bilevel_optuna.studies._inner import InnerResult
from bilevel_optuna.studies._inner import read_inner_result
from bilevel_optuna.studies._outer import outer_line
from bilevel_optuna.studies._progress import ProgressBar
from bilevel_optuna.studies._racing import OuterRacing
from bilevel_optuna.studies._scoring import Scorer
from bilevel_optuna.studies._settings import RunSettings
from bilevel_optuna.studies._work import Claim
from bilevel_optuna.studies._work import Task
from bilevel_optuna.studies._work import WorkQueue

_logger = get_logger(__name__)

#: Outer trial attributes (README, "Storage data model"): its tasks in (repeat, objective)
#: order, written once queued (a RUNNING trial without them is being set up), and its slot.
TASKS = _attrs.TASKS
SLOT = _attrs.SLOT

# Task priorities: lower is claimed first.
_BASELINE, _INNER, _SLOT, _HELDOUT = 0, 1_000_000_000, 2_000_000_000, 3_000_000_000
_IDLE_POLL_S = 0.5
_OUTAGE_POLL_S = 2.0
#: Seconds a worker waits for an unreachable database before it stops.
MAX_OUTAGE_S = 900.0
_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)

Progress = Callable[[str], None]
Callback = Callable[[optuna.Study, FrozenTrial], None]


class RunFailed(BilevelOptunaError):
    """A task of the run failed (its objective raised); the run cannot finish until it is fixed."""


class LostClaim(Exception):
    """The task was taken over by another worker: this one stops writing for it."""


def slot_key(run_name: str, k: int) -> str:
    return f"{run_name}#outer-{k}"


class RunWorker:
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
        self.scorer = Scorer(settings.aggregate)
        self.racing = racing
        self.space = space
        self.outer_sampler = outer_sampler
        self.n_outer_trials = settings.n_outer_trials
        self.seed = settings.seed
        self.cost = settings.cost_objective
        self.queue = WorkQueue(storage, run_name, stale_after=settings.stale_after, local=local)
        interval, _ = heartbeat_settings(storage)
        self.heartbeat_interval = max(float(interval or 15.0), 0.2)
        self.progress: Progress = progress or (lambda message: None)
        self.callbacks = list(callbacks)
        self.model_label = model_label
        self.bar = bar
        self.worker_id = _work.new_worker_id()
        self.n_done = 0
        self._claim: Claim | None = None
        self._interrupted: Claim | None = None  # the claim in hand when the database went away
        # The claim the heartbeat found taken over. A claim, not a flag: a beat of the claim
        # just finished can return after the next one is claimed, and must not mark that one.
        self._lost: Claim | None = None
        self._stop = threading.Event()
        self._scales_ready: set[str] = set()

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
             and t.state == _work.WAITING]
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
                claim = self.queue.claim(_work.task_id(self.run_name, key), self.worker_id)
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

    # --- The loop ----------------------------------------------------------------------------

    def work(self) -> int:
        """Claim and run tasks until the run is done; returns the tasks this worker did.

        Raises:
            RunFailed: A task failed here, or the run is blocked by a task that failed on
                another worker.
            KeyboardInterrupt: After handing the claim in hand back (:meth:`_run_claim`).
        """
        self.queue.reset_failed()
        self.queue.register_worker(self.worker_id, model=self.model_label)
        beater = threading.Thread(target=self._beat, name="bilevel-heartbeat", daemon=True)
        beater.start()
        interrupted: Claim | None = None  # a claim the database went away under
        outage: float | None = None
        try:
            while True:
                try:
                    if interrupted is not None:
                        claim, interrupted = interrupted, None
                        if self.queue.holds(claim):
                            self._run_claim(claim)  # resumes its inner study
                        else:
                            _logger.warning("Lost %s while the database was away.", claim.task.key)
                        continue
                    if self._step():
                        return self.n_done
                    outage = None
                except Exception as err:
                    if not is_disconnect(err):
                        raise
                    interrupted, self._interrupted = self._interrupted, None
                    outage = self._wait_out(err, outage)
        finally:
            self._stop.set()
            beater.join(timeout=5)
            try:
                self.queue.stop_worker(self.worker_id)
            except Exception as err:  # noqa: BLE001 - the database may be what failed
                _logger.debug("Could not mark worker %s stopped: %s", self.worker_id, err)

    def _step(self) -> bool:
        """One turn of the loop; True when the run is done."""
        self.settle()
        self._queue_post_phase()
        if self.bar is not None:
            self.bar.update(
                self.queue.tasks(),
                outer_done=len(self.outer.get_trials(deepcopy=False, states=_COUNTED)),
            )
        claim = self.queue.claim_next(self.worker_id, accept=self._can_run)
        if claim is None:
            tasks = self.queue.tasks()
            if self._finished(tasks):
                return True
            self._check_blocked(tasks)
            time.sleep(_IDLE_POLL_S)
            return False
        self._run_claim(claim)
        return False

    def _wait_out(self, err: BaseException, since: float | None) -> float:
        """Sleep through an outage of the database; give up after :data:`MAX_OUTAGE_S`."""
        now = time.monotonic()
        if since is None:
            since = now
            _logger.warning(
                "The database is unreachable (%s); waiting for it (claims held meanwhile are "
                "taken over by other workers after %.0f s).",
                type(err).__name__,
                self.queue.stale_after,
            )
        if now - since > MAX_OUTAGE_S:
            raise RunFailed(
                f"The database has been unreachable for {now - since:.0f} s ({err}); this worker "
                "stops. Start it again once the database is reachable."
            ) from err
        time.sleep(_OUTAGE_POLL_S)
        return since

    def _beat(self) -> None:
        """Heartbeat thread: the claim in hand and the worker's row, every interval."""
        while not self._stop.wait(self.heartbeat_interval):
            claim = self._claim
            try:
                if claim is not None and not self.queue.beat(claim) and self._claim is claim:
                    self._lost = claim
                self.queue.beat_worker(
                    self.worker_id,
                    task_key=claim.task.key if claim is not None else None,
                    n_done=self.n_done,
                )
            except Exception as err:  # noqa: BLE001 - cut off: try again next beat
                _logger.warning("Heartbeat failed (%s); retrying.", type(err).__name__)

    def _can_run(self, task: Task) -> bool:
        if task.kind == "outer":
            return self.space is not None and self.outer_sampler is not None
        # An objective given to run_bilevel_study as a Python object has no spec form: its
        # tasks are left to the process that started the run (run_worker says so once).
        return task.payload.get("objective") in self.objectives

    def _run_claim(self, claim: Claim) -> None:
        self._claim = claim
        try:
            if claim.task.kind == "outer":
                self._start_outer_trial(claim)
            else:
                self._run_inner(claim)
        except KeyboardInterrupt:
            # Ctrl-C: the task is waiting again at once, for any worker, with no grace period.
            if self.queue.release(claim):
                _logger.warning("Handed %s back: another worker can take it now.", claim.task.key)
            raise
        except Exception as err:
            if is_disconnect(err):
                self._interrupted = claim
            if not isinstance(err, LostClaim):
                raise
            _logger.warning(
                "Lost %s to another worker (this one went silent for too long); its work there "
                "is kept, and this worker writes nothing more for it.",
                claim.task.key,
            )
        finally:
            self._claim = None

    # --- Inner tasks -------------------------------------------------------------------------

    def _run_inner(self, claim: Claim) -> None:
        task = claim.task
        payload = task.payload
        objective = self.objectives[payload["objective"]]
        config = (
            ProposerConfig.from_dict(payload["config"]) if payload.get("config") else None
        )

        def guard(study: optuna.Study, trial: FrozenTrial) -> None:
            if self._lost is claim or not self.queue.holds(claim):
                self._lost = claim
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
            if self._lost is claim or not self.queue.holds(claim):
                raise LostClaim() from err
            self._task_failed(claim, err)
            raise RunFailed(
                f"The inner study {task.key} failed on this worker: {type(err).__name__}: "
                f"{err}. It is marked failed; fix the cause and start a worker again (failed "
                "tasks are retried when a worker starts)."
            ) from err
        if self._lost is claim:
            raise LostClaim()
        if not self.queue.finish(claim):
            raise LostClaim()
        self.n_done += 1

    def _task_failed(self, claim: Claim, err: BaseException) -> None:
        error = f"{type(err).__name__}: {err}"
        key = claim.task.key
        self.queue.fail(claim, error)
        for trial in self.outer.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if key in trial.user_attrs.get(TASKS, []):
                self._fail_outer(trial, f"inner study {key} failed: {error}")

    def _fail_outer(self, trial: FrozenTrial, reason: str) -> None:
        self.storage.set_trial_user_attr(trial._trial_id, _attrs.FAILURE_REASON, reason[:500])
        try:
            self.outer.tell(trial.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError):  # finished elsewhere meanwhile
            return
        slot = trial.user_attrs.get(SLOT)
        if slot is not None:
            self.queue.reopen_slot(slot)
        self.progress(f"outer trial {trial.number} failed: {reason}")

    # --- Outer slots -------------------------------------------------------------------------

    def _outer_trial_for(self, claim: Claim) -> optuna.Trial | None:
        """The outer trial of a claimed slot: the one an earlier claim made, or a new one."""
        number = claim.task.outer_trial
        if number is not None:
            frozen = self._outer_trial(number)
            if frozen is not None and frozen.state == TrialState.RUNNING:
                return optuna.trial.Trial(self.outer, frozen._trial_id)
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
        if not self.queue.finish(claim):
            raise LostClaim()
        self.n_done += 1
        _logger.info("Outer trial %d: %s", trial.number, arm_label(arm, config))

    def _outer_trial(self, number: int) -> FrozenTrial | None:
        trials = self.outer.get_trials(deepcopy=False)
        return trials[number] if number < len(trials) else None

    # --- Settling outer trials ---------------------------------------------------------------

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
            if any(tasks.get(k) is None or tasks[k].state != _work.DONE for k in keys):
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
                        self._fail_outer(trial, "its worker stopped before queuing its repeats")
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
            if any(tasks.get(k) is None or tasks[k].state != _work.DONE for k in repeat_keys):
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
        tokens = 0
        handle = _StoredTrial(self.outer, trial)
        for repeat in range(len(self.seeds)):
            repeat_keys = keys[repeat * n_obj : (repeat + 1) * n_obj]
            if any(tasks.get(k) is None or tasks[k].state != _work.DONE for k in repeat_keys):
                return  # racing and the value wait for this repeat
            scores = []
            for key, name in zip(repeat_keys, self.objective_names, strict=True):
                objective = self.objectives[name]
                result = self._result(key, objective)
                names.append(key)
                tokens += result.tokens
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
                    summary={"per_repeat": per_repeat, "tokens": tokens},
                )
            except optuna.TrialPruned:
                self._finish_outer(trial, state=TrialState.PRUNED)
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
            "tokens": tokens,
            "aggregate": self.scorer.aggregate,
        }
        config = ProposerConfig.from_dict(trial.user_attrs[_attrs.CONFIG])
        if config.mechanisms:
            # Proof of injection: a mechanism that never ran or never changed a proposal is
            # named here and warned about.
            from bilevel_optuna.samplers import summarize_mechanisms

            studies = [optuna.load_study(study_name=n, storage=self.storage) for n in names]
            summary["mechanisms"] = {
                name: s.status for name, s in summarize_mechanisms(studies).items()
            }
        handle.set_user_attr(_attrs.INNER_STUDIES, names)
        handle.set_user_attr(_attrs.SUMMARY, summary)
        values = [mean, tokens / len(self.seeds)] if self.cost else [mean]
        self._finish_outer(trial, state=TrialState.COMPLETE, values=values)

    def _finish_outer(
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

    # --- After the budget: the held-out evaluation -------------------------------------------

    def _budget_spent(self, tasks: Sequence[Task] | None = None) -> bool:
        slots = tasks if tasks is not None else self.queue.tasks(kind="outer")
        slots = [t for t in slots if t.kind == "outer" and t.state != _work.CANCELLED]
        if len(slots) < self.n_outer_trials or any(t.state != _work.DONE for t in slots):
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

    def _finished(self, tasks: Sequence[Task]) -> bool:
        if any(t.state in (_work.WAITING, _work.RUNNING) for t in tasks):
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

    def _check_blocked(self, tasks: Sequence[Task]) -> None:
        failed = [t for t in tasks if t.state == _work.FAILED and t.kind != "inner"]
        if failed and not any(t.state == _work.RUNNING for t in tasks):
            first = failed[0]
            raise RunFailed(
                f"The run cannot finish: {len(failed)} task(s) failed, e.g. {first.key} on "
                f"{first.worker}: {first.error}. Fix the cause and start a worker again "
                "(failed tasks are retried when a worker starts)."
            )


class _StoredTrial:
    """A running outer trial written through the storage, from any worker (for racing)."""

    def __init__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.study = study
        self.number = trial.number
        self._trial_id = trial._trial_id

    def report(self, value: float, step: int) -> None:
        self.study._storage.set_trial_intermediate_value(self._trial_id, step, float(value))

    def set_user_attr(self, key: str, value: Any) -> None:
        self.study._storage.set_trial_user_attr(self._trial_id, key, value)

