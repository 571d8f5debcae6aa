"""The worker rows of a run (``bilevel_workers``): who works on it, alive or silent.

Each worker process writes one row when it starts, beats it with what it runs and how many tasks
it did, and marks it stopped when it ends; ``bilevel-optuna status`` reads them. A worker id is
``host:pid:random``, so that a process of this machine that no longer exists can be told from a
silent one elsewhere (:func:`alive`).
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

import sqlalchemy as sa

from bilevel_optuna._transient import retry_transient
from bilevel_optuna.studies._workqueue._tables import RUNNING
from bilevel_optuna.studies._workqueue._tables import workers_table


def new_worker_id() -> str:
    """``host:pid:random``: unique per process, readable in ``status``."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def this_host() -> str:
    """The host part of the worker ids this machine writes."""
    return socket.gethostname()[:80]


def alive(worker: str) -> bool:
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


class WorkerRows:
    """The rows of one run's workers.

    Args:
        engine: The database of the run's claims.
        run_name: The run.
        now: The database's clock, as a SQL expression (``_database.db_now``).
    """

    def __init__(
        self, engine: sa.engine.Engine, run_name: str, now: sa.ColumnElement[float]
    ) -> None:
        self.engine = engine
        self.run = run_name
        self._now = now

    def register(self, worker: str, *, model: str | None) -> None:
        """Write the row of a starting worker."""
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

    def beat(self, worker: str, *, task_key: str | None, n_done: int) -> None:
        """Renew the worker's heartbeat, with what it runs now and how many tasks it did."""
        w = workers_table

        def update() -> None:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.update(w)
                    .where(w.c.id == worker)
                    .values(heartbeat=self._now, task_key=task_key, n_done=n_done)
                )

        retry_transient(update)

    def stop(self, worker: str) -> None:
        """Mark the worker stopped (it ended, and holds nothing)."""
        w = workers_table

        def update() -> None:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.update(w).where(w.c.id == worker).values(state="stopped", task_key=None)
                )

        retry_transient(update)

    def read(self) -> list[dict[str, Any]]:
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
