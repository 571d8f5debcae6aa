"""The work queue's two tables, the states of a task and the rows as this release reads them.

``bilevel_tasks`` holds one row per unit of work of a run, ``bilevel_workers`` one row per worker
process (its heartbeat and what it runs, for ``bilevel-optuna status``). The migrations in
``_migrations`` make them (``_schema``); :data:`metadata` is what Alembic compares them with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import sqlalchemy as sa

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
    """The row id of a run's task: the same for every worker, so a key is added once."""
    return hashlib.sha1(f"{run}\x00{key}".encode()).hexdigest()


def task_of(row: Any) -> Task:
    """A :class:`Task` from a row of ``bilevel_tasks``."""
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
