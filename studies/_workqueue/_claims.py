"""The claims: how the workers of a bilevel run share its work through the database.

Optuna's RDB storage holds the studies and trials; beside its tables, in the same database, the
queue keeps two of its own (``_tables``):

- ``bilevel_tasks``: one row per unit of work of a run. A unit is one inner study (an arm's
  repeat on one objective, keyed by the study's name) or one outer *slot* (``<run>#outer-<k>``:
  claiming it creates one outer trial, so a run never has more outer trials than its budget).
- ``bilevel_workers``: one row per worker process, with its heartbeat and what it runs, for
  ``bilevel-optuna status``.

The claim protocol. A task row is ``waiting``, ``running``, ``done``, ``failed`` or
``cancelled`` (and a done slot is ``settling`` while one worker races or scores its trial). A
worker claims a row with one compare-and-set ``UPDATE ... WHERE id = :id AND
(state = 'waiting' OR (state = 'running' AND heartbeat < now - stale_after))``: the database
locks that row for the statement, so of two workers racing for it exactly one sees a row count
of 1. The claim increments ``attempts``, which is the claim's fencing token: every later write
of the claimant (heartbeat, done, release) carries ``worker`` and ``attempts`` in its ``WHERE``
and changes nothing once another worker has taken the row over. A claim is *stale* when its
heartbeat is older than ``stale_after`` seconds; every time is the database's clock, never a
worker's, so servers whose clocks differ agree on what is stale.

Why rows of our own rather than Optuna's trial queue (``enqueue_trial`` + heartbeats + the retry
callback): a worker must claim a *given* unit exactly once, the run's budget must hold however
many workers ask at once (``study.ask`` creates a new trial when the queue is empty), and a
retried unit must keep its identity (Optuna's retry makes a new trial and stops after
``max_retry``). Inside a claimed inner study, Optuna's own heartbeats and retry callback do
their usual job on the inner trials.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from optuna.storages import BaseStorage

from bilevel_optuna._logging import get_logger
from bilevel_optuna._transient import retry_transient
from bilevel_optuna.studies._workqueue._database import db_now
from bilevel_optuna.studies._workqueue._database import engine_of
from bilevel_optuna.studies._workqueue._database import private_engine
from bilevel_optuna.studies._workqueue._fence import QUEUE_OPTION
from bilevel_optuna.studies._workqueue._schema import ensure_schema
from bilevel_optuna.studies._workqueue._tables import CANCELLED
from bilevel_optuna.studies._workqueue._tables import DONE
from bilevel_optuna.studies._workqueue._tables import FAILED
from bilevel_optuna.studies._workqueue._tables import KINDS
from bilevel_optuna.studies._workqueue._tables import RUNNING
from bilevel_optuna.studies._workqueue._tables import SETTLING
from bilevel_optuna.studies._workqueue._tables import WAITING
from bilevel_optuna.studies._workqueue._tables import Claim
from bilevel_optuna.studies._workqueue._tables import Task
from bilevel_optuna.studies._workqueue._tables import task_id
from bilevel_optuna.studies._workqueue._tables import task_of
from bilevel_optuna.studies._workqueue._tables import tasks_table
from bilevel_optuna.studies._workqueue._workers import WorkerRows
from bilevel_optuna.studies._workqueue._workers import alive
from bilevel_optuna.studies._workqueue._workers import this_host

_logger = get_logger(__name__)


class WorkQueue:
    """The tasks and workers of one run, in the run's database.

    Args:
        storage: The run's RDB storage (its engine is used; the tables are created if missing,
            and a schema of another release stops here: see ``_schema``).
        run_name: The bilevel run.
        stale_after: Seconds after its last heartbeat at which a running claim may be taken
            over by another worker.
    """

    def __init__(
        self,
        storage: BaseStorage,
        run_name: str,
        *,
        stale_after: float = 60.0,
        local: bool = False,
    ) -> None:
        #: The storage's own engine, whose statements a worker fences (``_fence``); None when
        #: the claims live in a private database (one process: nothing to fence).
        self.storage_engine: sa.engine.Engine | None
        if local and getattr(storage, "engine", None) is None:
            # A journal file or an in-memory storage: one process, so the claims can live in
            # this process's memory (no worker can join such a run).
            self.storage_engine = None
            self.engine = private_engine(storage)
        else:
            self.storage_engine = engine_of(storage)
            # The same pool, with the option that lets the queue's statements through the fence.
            self.engine = self.storage_engine.execution_options(**{QUEUE_OPTION: True})
        self.run = run_name
        self.stale_after = float(stale_after)
        self._now = db_now(self.engine)
        self._workers = WorkerRows(self.engine, run_name, self._now)
        retry_transient(ensure_schema, self.engine)

    # --- Reading ---------------------------------------------------------------------------

    def tasks(self, *, kind: str | None = None, keys: Iterable[str] | None = None) -> list[Task]:
        """The run's tasks (optionally of one kind, or these keys), by priority."""
        t = tasks_table
        query = sa.select(t).where(t.c.run == self.run)
        if kind is not None:
            query = query.where(t.c.kind == kind)
        if keys is not None:
            ids = [task_id(self.run, k) for k in keys]
            if not ids:
                return []
            query = query.where(t.c.id.in_(ids))
        query = query.order_by(t.c.priority, t.c.task_key)

        def read() -> list[Task]:
            with self.engine.connect() as conn:
                return [task_of(row) for row in conn.execute(query)]

        return retry_transient(read)

    def now(self) -> float:
        """The database's clock."""

        def read() -> float:
            with self.engine.connect() as conn:
                return float(conn.execute(sa.select(self._now)).scalar_one())

        return retry_transient(read)

    # --- Writing tasks -----------------------------------------------------------------------

    def add(
        self, key: str, *, kind: str, priority: int, payload: dict[str, Any]
    ) -> bool:
        """Add a waiting task unless one with this key exists; True if this call added it."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS} but got {kind!r}.")
        row = {
            "id": task_id(self.run, key),
            "run": self.run,
            "task_key": key,
            "kind": kind,
            "priority": int(priority),
            "payload": json.dumps(payload, sort_keys=True, default=str),
            "state": WAITING,
            "attempts": 0,
        }

        def insert() -> bool:
            with self.engine.begin() as conn:
                found = conn.execute(
                    sa.select(tasks_table.c.state).where(tasks_table.c.id == row["id"])
                ).first()
                if found is not None:
                    if found[0] in (CANCELLED, FAILED):  # needed again (e.g. a config redrawn)
                        conn.execute(
                            sa.update(tasks_table)
                            .where(tasks_table.c.id == row["id"])
                            .values(state=WAITING, worker=None, heartbeat=None, error=None)
                        )
                    return False
                try:
                    conn.execute(sa.insert(tasks_table).values(**row))
                except sa.exc.IntegrityError:  # another worker added it in between
                    return False
                return True

        try:
            return retry_transient(insert)
        except sa.exc.IntegrityError:
            return False

    def reset_failed(self) -> int:
        """Failed baseline and held-out tasks back to waiting (a worker starting again retries
        them). A failed repeat of an outer trial is not: its trial failed and its slot went to
        a new configuration; it runs again only if a configuration needs it again."""
        t = tasks_table
        return self._update(
            (t.c.run == self.run) & (t.c.state == FAILED) & (t.c.kind != "inner"),
            state=WAITING,
            worker=None,
            error=None,
        )

    def cancel(self, keys: Sequence[str]) -> int:
        """Cancel waiting or running tasks (a configuration racing stopped)."""
        if not keys:
            return 0
        t = tasks_table
        ids = [task_id(self.run, k) for k in keys]
        return self._update(t.c.id.in_(ids) & t.c.state.in_((WAITING, RUNNING)), state=CANCELLED)

    # --- Claims ------------------------------------------------------------------------------

    def _claimable(self) -> sa.ColumnElement[bool]:
        t = tasks_table
        return (t.c.state == WAITING) | (
            (t.c.state == RUNNING) & (t.c.heartbeat < self._now - self.stale_after)
        )

    def claim_next(
        self, worker: str, *, accept: Callable[[Task], bool] = lambda task: True
    ) -> Claim | None:
        """Claim the claimable task of lowest priority that ``accept`` takes, or None."""
        t = tasks_table
        query = (
            sa.select(t)
            .where((t.c.run == self.run) & self._claimable())
            .order_by(t.c.priority, t.c.task_key)
            .limit(64)
        )

        def candidates() -> list[Task]:
            with self.engine.connect() as conn:
                return [task_of(row) for row in conn.execute(query)]

        for task in retry_transient(candidates):
            if not accept(task):
                continue
            claim = self.claim(task.id, worker)
            if claim is not None:
                return claim
        return self._claim_from_the_dead(worker, accept)

    def _claim_from_the_dead(
        self, worker: str, accept: Callable[[Task], bool]
    ) -> Claim | None:
        """Take over, at once, a running task whose worker was a process of this machine that
        no longer exists (a crashed or killed ``run``, restarted here): no grace period to
        wait out. A process on another server is judged by its heartbeat alone."""
        t = tasks_table
        host = this_host()
        query = (
            sa.select(t)
            .where((t.c.run == self.run) & (t.c.state == RUNNING) & t.c.worker.like(f"{host}:%"))
            .order_by(t.c.priority, t.c.task_key)
        )

        def candidates() -> list[Task]:
            with self.engine.connect() as conn:
                return [task_of(row) for row in conn.execute(query)]

        for task in retry_transient(candidates):
            if task.worker is None or alive(task.worker) or not accept(task):
                continue
            claim = self._claim_if(
                task.id,
                worker,
                (t.c.state == RUNNING) & (t.c.worker == task.worker)
                & (t.c.attempts == task.attempts),
            )
            if claim is not None:
                _logger.info(
                    "Took over %s at once: its worker %s is no longer running on this machine.",
                    task.key,
                    task.worker,
                )
                return claim
        return None

    def claim(self, tid: str, worker: str) -> Claim | None:
        """Claim one task by id (compare-and-set); None if another worker holds it."""
        return self._claim_if(tid, worker, self._claimable())

    def _claim_if(
        self, tid: str, worker: str, condition: sa.ColumnElement[bool]
    ) -> Claim | None:
        t = tasks_table

        def update() -> Claim | None:
            with self.engine.begin() as conn:
                result = conn.execute(
                    sa.update(t)
                    .where((t.c.id == tid) & condition)
                    .values(
                        state=RUNNING,
                        worker=worker,
                        attempts=t.c.attempts + 1,
                        heartbeat=self._now,
                        error=None,
                    )
                )
                if result.rowcount != 1:
                    return None
                row = conn.execute(sa.select(t).where(t.c.id == tid)).one()
            task = task_of(row)
            return Claim(task=task, worker=worker, attempts=task.attempts)

        claim = retry_transient(update)
        if claim is not None and claim.attempts > 1:
            _logger.info(
                "Took over %s (attempt %d): its last claim went silent.",
                claim.task.key,
                claim.attempts,
            )
        return claim

    def _fenced(self, claim: Claim) -> sa.ColumnElement[bool]:
        t = tasks_table
        return (
            (t.c.id == claim.task.id)
            & (t.c.worker == claim.worker)
            & (t.c.attempts == claim.attempts)
            & (t.c.state == RUNNING)
        )

    def beat(self, claim: Claim) -> bool:
        """Renew the claim's heartbeat; False when the claim is no longer this worker's."""
        return self._update(self._fenced(claim), heartbeat=self._now) == 1

    def holds(self, claim: Claim) -> bool:
        """Whether the claim is still this worker's (read, no write)."""
        t = tasks_table

        def read() -> bool:
            with self.engine.connect() as conn:
                found = conn.execute(sa.select(t.c.id).where(self._fenced(claim))).first()
                return found is not None

        return retry_transient(read)

    def finish(self, claim: Claim, **values: Any) -> bool:
        """Mark the claimed task done; False (nothing written) if the claim was lost."""
        return self._update(self._fenced(claim), state=DONE, heartbeat=self._now, **values) == 1

    def fail(self, claim: Claim, error: str) -> bool:
        """Mark the claimed task failed with ``error`` (a worker starting again retries it)."""
        return self._update(self._fenced(claim), state=FAILED, error=error[:2000]) == 1

    def release(self, claim: Claim) -> bool:
        """Hand the claim back at once (Ctrl-C): the task is waiting again."""
        return self._update(self._fenced(claim), state=WAITING, worker=None, heartbeat=None) == 1

    def set_outer_trial(self, claim: Claim, number: int) -> bool:
        """Record on a claimed slot the outer trial its claim created."""
        return self._update(self._fenced(claim), outer_trial=int(number)) == 1

    def lock_settling(self, slot: str, worker: str) -> bool:
        """Take the right to settle (race, score, tell) the outer trial of a done slot.

        One worker at a time settles a trial: a compare-and-set from ``done`` to ``settling``
        (or over a stale ``settling``, whose worker went silent), undone by
        :meth:`unlock_settling`.
        """
        t = tasks_table
        tid = task_id(self.run, slot)
        stale = (t.c.state == SETTLING) & (t.c.heartbeat < self._now - self.stale_after)
        return (
            self._update(
                (t.c.id == tid) & ((t.c.state == DONE) | stale),
                state=SETTLING,
                worker=worker,
                heartbeat=self._now,
            )
            == 1
        )

    def unlock_settling(self, slot: str, worker: str) -> None:
        t = tasks_table
        self._update(
            (t.c.id == task_id(self.run, slot)) & (t.c.state == SETTLING) & (t.c.worker == worker),
            state=DONE,
        )

    def reopen_slot(self, key: str) -> int:
        """A slot whose outer trial failed: waiting again, with no trial, so another is made."""
        t = tasks_table
        return self._update(
            (t.c.id == task_id(self.run, key)) & (t.c.kind == "outer"),
            state=WAITING,
            worker=None,
            heartbeat=None,
            outer_trial=None,
        )

    def _update(self, where: sa.ColumnElement[bool], **values: Any) -> int:
        def update() -> int:
            with self.engine.begin() as conn:
                result = conn.execute(sa.update(tasks_table).where(where).values(**values))
                return int(result.rowcount)

        return retry_transient(update)

    # --- Workers ----------------------------------------------------------------------------

    def register_worker(self, worker: str, *, model: str | None) -> None:
        """Write the row of a starting worker (``_workers``)."""
        self._workers.register(worker, model=model)

    def beat_worker(self, worker: str, *, task_key: str | None, n_done: int) -> None:
        """Renew a worker's heartbeat, with what it runs and how many tasks it did."""
        self._workers.beat(worker, task_key=task_key, n_done=n_done)

    def stop_worker(self, worker: str) -> None:
        """Mark a worker stopped."""
        self._workers.stop(worker)

    def workers(self) -> list[dict[str, Any]]:
        """The run's workers with ``silent_s``: seconds since their last heartbeat."""
        return self._workers.read()
