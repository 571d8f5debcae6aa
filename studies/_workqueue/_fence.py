"""The fence: a worker sends nothing to the storage for a claim it may have lost.

The claim's heartbeat is what tells the other workers that a task is in hand; the ``attempts``
fencing token guards the queue's own rows (``_claims``). Optuna's statements (a trial created,
a value told, a user attribute) carry no such token. When the link to the database is cut for
longer than the stale window, another worker takes the task over; when the link comes back,
a statement this worker had begun before the cut (an ``ask`` waiting for a connection, say)
would go through on a fresh connection and write into a study that is now another worker's.

So every statement the task's thread sends through the storage's engine, and every commit,
first checks the claim's *lease*: the time since a heartbeat the database accepted, against
half the stale window. A fresh lease lets the statement go at no cost. A stale one (the
heartbeats failed, or the thread was stopped) is renewed at once with a heartbeat of its own;
if the database says the claim is gone, :class:`~bilevel_optuna.studies._workqueue.LostClaim`
is raised before the statement leaves. The other half of the window is the margin for a
statement already on its way: one that the network holds back for longer than that is the one
case this cannot see.

The queue's own statements (heartbeats, claims) carry the execution option
:data:`QUEUE_OPTION` and pass unchecked, as do other threads' (Optuna's heartbeat thread for
the inner trials, which writes only heartbeats).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

#: The execution option on the queue's engine: its statements are not fenced.
QUEUE_OPTION = "bilevel_queue"


class Fence:
    """Calls ``check`` before each statement and commit of one thread on ``engine``.

    Args:
        engine: The storage's engine (events on it also reach its option engines).
        check: Raises to stop the statement (the lease is lost); returns to let it go.
    """

    def __init__(self, engine: sa.engine.Engine, check: Callable[[], None]) -> None:
        self._engine = engine
        self._check = check
        self._thread = threading.get_ident()
        self._installed = False

    def __enter__(self) -> Fence:
        self._thread = threading.get_ident()
        sa.event.listen(self._engine, "before_cursor_execute", self._before_execute)
        sa.event.listen(self._engine, "commit", self._before_commit)
        self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            sa.event.remove(self._engine, "before_cursor_execute", self._before_execute)
            sa.event.remove(self._engine, "commit", self._before_commit)
            self._installed = False

    def _applies(self, options: dict[str, Any]) -> bool:
        return threading.get_ident() == self._thread and not options.get(QUEUE_OPTION)

    def _before_execute(
        self,
        conn: sa.engine.Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if self._applies(conn.get_execution_options()):
            self._check()

    def _before_commit(self, conn: sa.engine.Connection) -> None:
        if self._applies(conn.get_execution_options()):
            self._check()
