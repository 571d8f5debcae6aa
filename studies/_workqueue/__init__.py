"""The work queue: how the processes of a bilevel run share its work through the database.

A run's units of work (an inner study of one repeat, an outer *slot*) are rows of a table of
our own beside Optuna's, in the run's database; a worker claims one with a compare-and-set,
keeps the claim alive with heartbeats on the database's clock, and marks it done. The tables are
versioned by Alembic migrations shipped here. This package knows the kinds of a run's tasks and
the rows they need, not what running one means, and imports nothing of the orchestration around
it; the orchestration (``studies/_worker.py``, ``_settling.py``, ``_join.py``, ``_progress.py``)
and the CLI call it through the names below, and nothing outside it imports its private
modules.

The interface:

- :class:`WorkQueue`: one run's tasks and workers (add, claim, beat, finish, fail, release,
  cancel; the settling lock of an outer slot; the worker rows ``status`` shows);
- :class:`Task`, :class:`Claim` and the task states :data:`WAITING`, :data:`RUNNING`,
  :data:`DONE`, :data:`FAILED`, :data:`CANCELLED`; :func:`task_id`;
- :class:`QueueWorker`: the worker loop (claim, heartbeat thread, Ctrl-C hands the claim back,
  outages waited out) whose hooks a run's worker fills in; :class:`LostClaim`;
- :func:`ensure_storage_schema` (a worker or run that meets another release's schema stops
  with one line naming the fix) and :func:`upgrade_schema` (``bilevel-optuna storage
  upgrade``).

The rooms: ``_tables`` (the tables and rows), ``_database`` (which database, its clock),
``_claims`` (:class:`WorkQueue` and the claim protocol), ``_workers`` (worker rows and ids),
``_fence`` (no statement of Optuna's for a claim not confirmed lately), ``_loop``
(:class:`QueueWorker`), ``_schema`` and ``_migrations`` (the schema's version).
"""

from bilevel_optuna.studies._workqueue._claims import WorkQueue
from bilevel_optuna.studies._workqueue._loop import LostClaim
from bilevel_optuna.studies._workqueue._loop import QueueWorker
from bilevel_optuna.studies._workqueue._schema import ensure_storage_schema
from bilevel_optuna.studies._workqueue._schema import upgrade as upgrade_schema
from bilevel_optuna.studies._workqueue._tables import CANCELLED
from bilevel_optuna.studies._workqueue._tables import DONE
from bilevel_optuna.studies._workqueue._tables import FAILED
from bilevel_optuna.studies._workqueue._tables import RUNNING
from bilevel_optuna.studies._workqueue._tables import WAITING
from bilevel_optuna.studies._workqueue._tables import Claim
from bilevel_optuna.studies._workqueue._tables import Task
from bilevel_optuna.studies._workqueue._tables import task_id

__all__ = [
    "CANCELLED",
    "Claim",
    "DONE",
    "FAILED",
    "LostClaim",
    "QueueWorker",
    "RUNNING",
    "Task",
    "WAITING",
    "WorkQueue",
    "ensure_storage_schema",
    "task_id",
    "upgrade_schema",
]
