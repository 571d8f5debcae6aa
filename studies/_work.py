"""The claim table: how the workers of a bilevel run share its work through the database.

Optuna's RDB storage holds the studies and trials; beside its tables, in the same database, this
module keeps two of its own:

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

import dataclasses
import hashlib
import json
import os
import socket
import uuid
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from optuna.storages import BaseStorage

from bilevel_optuna._logging import get_logger
from bilevel_optuna._transient import retry_transient
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.studies._schema import ensure_schema

_logger = get_logger(__name__)

WAITING = "waiting"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
SETTLING = "settling"  # a done slot whose outer trial one worker is settling now
#: Task kinds: an outer slot, or an inner study of the given study kind.
KINDS = ("outer", "baseline", "inner", "heldout")

#: The tables as this release reads and writes them; ``_migrations`` makes them (see ``_schema``).
metadata = sa.MetaData()
tasks_table = sa.Table(
    "bilevel_tasks",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # sha1 of run and key
    sa.Column("run", sa.String(512), nullable=False, index=True),
    sa.Column("task_key", sa.String(1024), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("priority", sa.BigInteger, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("worker", sa.String(128), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    # Database clock, epoch seconds; DOUBLE: a MySQL FLOAT would round them to 128 s.
    sa.Column("heartbeat", sa.Double, nullable=True),
    sa.Column("outer_trial", sa.Integer, nullable=True),  # slots: the trial the claim created
    sa.Column("error", sa.Text, nullable=True),
)
workers_table = sa.Table(
    "bilevel_workers",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("run", sa.String(512), nullable=False, index=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("model", sa.String(255), nullable=True),
    sa.Column("started", sa.Double, nullable=False),
    sa.Column("heartbeat", sa.Double, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # running, stopped
    sa.Column("task_key", sa.String(1024), nullable=True),
    sa.Column("n_done", sa.Integer, nullable=False, default=0),
)


@dataclasses.dataclass(frozen=True)
class Task:
    """One row of ``bilevel_tasks``, as read."""

    id: str
    run: str
    key: str
    kind: str
    priority: int
    payload: dict[str, Any]
    state: str
    worker: str | None
    attempts: int
    heartbeat: float | None
    outer_trial: int | None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Claim:
    """A task held by this worker: the row and the fencing token (``attempts``)."""

    task: Task
    worker: str
    attempts: int


def task_id(run: str, key: str) -> str:
    return hashlib.sha1(f"{run}\x00{key}".encode()).hexdigest()


def new_worker_id() -> str:
    """``host:pid:random``: unique per process, readable in ``status``."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _engine_of(storage: BaseStorage) -> sa.engine.Engine:
    engine = getattr(storage, "engine", None)
    if engine is None:
        raise ConfigurationError(
            f"Workers share a run through an RDB storage (a database URL), but got "
            f"{type(storage).__name__}. Use sqlite:///FILE.db on one machine, or a PostgreSQL or "
            "MySQL URL across servers."
        )
    return engine


_PRIVATE: dict[int, sa.engine.Engine] = {}


def _private_engine(storage: BaseStorage) -> sa.engine.Engine:
    """An in-memory SQLite database for the claims of a storage that has none of its own."""
    key = id(storage)
    if key not in _PRIVATE:
        _PRIVATE[key] = sa.create_engine(
            "sqlite://",
            poolclass=sa.pool.StaticPool,
            connect_args={"check_same_thread": False},
        )
    return _PRIVATE[key]


def _db_now(engine: sa.engine.Engine) -> sa.ColumnElement[float]:
    """The database's clock in seconds since the epoch, as a SQL expression."""
    name = engine.dialect.name
    if name == "postgresql":
        return sa.literal_column("EXTRACT(EPOCH FROM CLOCK_TIMESTAMP())", sa.Double)
    if name in ("mysql", "mariadb"):
        return sa.literal_column("UNIX_TIMESTAMP(NOW(6))", sa.Double)
    if name == "sqlite":
        return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Double)
    raise ConfigurationError(
        f"Workers are supported on PostgreSQL, MySQL/MariaDB and SQLite, not {name}."
    )


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
        if local and getattr(storage, "engine", None) is None:
            # A journal file or an in-memory storage: one process, so the claims can live in
            # this process's memory (no worker can join such a run).
            self.engine = _private_engine(storage)
        else:
            self.engine = _engine_of(storage)
        self.run = run_name
        self.stale_after = float(stale_after)
        self._now = _db_now(self.engine)
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
                return [_task(row) for row in conn.execute(query)]

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
                return [_task(row) for row in conn.execute(query)]

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
        host = socket.gethostname()[:80]
        query = (
            sa.select(t)
            .where((t.c.run == self.run) & (t.c.state == RUNNING) & t.c.worker.like(f"{host}:%"))
            .order_by(t.c.priority, t.c.task_key)
        )

        def candidates() -> list[Task]:
            with self.engine.connect() as conn:
                return [_task(row) for row in conn.execute(query)]

        for task in retry_transient(candidates):
            if task.worker is None or _alive(task.worker) or not accept(task):
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
            task = _task(row)
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

    # --- Workers -----------------------------------------------------------------------------

    def register_worker(self, worker: str, *, model: str | None) -> None:
        host, pid = worker.split(":")[0], os.getpid()

        def insert() -> None:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.insert(workers_table).values(
                        id=worker,
                        run=self.run,
                        host=host,
                        pid=pid,
                        model=(model or "")[:255] or None,
                        started=self._now,
                        heartbeat=self._now,
                        state=RUNNING,
                        n_done=0,
                    )
                )

        retry_transient(insert)

    def beat_worker(self, worker: str, *, task_key: str | None, n_done: int) -> None:
        w = workers_table

        def update() -> None:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.update(w)
                    .where(w.c.id == worker)
                    .values(heartbeat=self._now, task_key=task_key, n_done=n_done)
                )

        retry_transient(update)

    def stop_worker(self, worker: str) -> None:
        w = workers_table

        def update() -> None:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.update(w).where(w.c.id == worker).values(state="stopped", task_key=None)
                )

        retry_transient(update)

    def workers(self) -> list[dict[str, Any]]:
        """The run's workers with ``silent_s``: seconds since their last heartbeat."""
        w = workers_table
        query = (
            sa.select(w, (self._now - w.c.heartbeat).label("silent_s"))
            .where(w.c.run == self.run)
            .order_by(w.c.started)
        )

        def read() -> list[dict[str, Any]]:
            with self.engine.connect() as conn:
                return [dict(row._mapping) for row in conn.execute(query)]

        return retry_transient(read)


def _alive(worker: str) -> bool:
    """Whether the process of a worker id of this machine (``host:pid:...``) still runs."""
    try:
        pid = int(worker.split(":")[1])
    except (IndexError, ValueError):
        return True  # not an id this package wrote: judge it by its heartbeat
    if pid == os.getpid():
        return True  # an earlier worker of this process: judge it by its heartbeat
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: gone all the same
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _task(row: Any) -> Task:
    m = row._mapping
    return Task(
        id=m["id"],
        run=m["run"],
        key=m["task_key"],
        kind=m["kind"],
        priority=int(m["priority"]),
        payload=json.loads(m["payload"]),
        state=m["state"],
        worker=m["worker"],
        attempts=int(m["attempts"] or 0),
        heartbeat=m["heartbeat"],
        outer_trial=m["outer_trial"],
        error=m["error"],
    )
