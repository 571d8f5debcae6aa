"""Transient database errors: what they are, retrying a call on them, and a storage that does.

Many workers on one PostgreSQL or MySQL database lock the same rows (a study's row when they
create trials, a trial's row when they finish it, the claims of the work queue). The server
then sometimes breaks a tie by aborting one transaction: a deadlock (MySQL/MariaDB 1213,
PostgreSQL 40P01), a lock wait that timed out (MySQL/MariaDB 1205), or, under SERIALIZABLE or
REPEATABLE READ on PostgreSQL, a serialization failure (40001). Each of these means "nothing of
this transaction was kept; run it again": the server rolled it back, and running it again is
what the database manuals ask of the client. Every other error is not retried here.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any
from typing import TypeVar

import optuna

from bilevel_optuna import _optuna_private
from bilevel_optuna._logging import get_logger

_logger = get_logger(__name__)

T = TypeVar("T")

# MySQL/MariaDB error numbers: 1213 deadlock, 1205 lock wait timeout, 1020 "record has changed
# since last read" (MariaDB's snapshot isolation, on by default since 11.8).
_MYSQL_TRANSIENT = {1213: "deadlock", 1205: "lock wait timeout", 1020: "record changed"}
# PostgreSQL SQLSTATEs: serialization_failure and deadlock_detected.
_POSTGRES_TRANSIENT = {"40001": "serialization failure", "40P01": "deadlock"}

#: How often :func:`retry_transient` calls a function at most, and the first retry's delay.
ATTEMPTS = 5
BASE_DELAY_S = 0.05
#: The longest delay between two attempts, whatever the attempt.
MAX_DELAY_S = 2.0


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, what it wraps (SQLAlchemy's ``orig``) and what it was raised from, once each."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        err = todo.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        yield err
        for inner in (getattr(err, "orig", None), err.__cause__, err.__context__):
            if isinstance(inner, BaseException):
                todo.append(inner)


def transient_reason(exc: BaseException) -> str | None:
    """What makes ``exc`` transient ("deadlock (MySQL 1213)"), or None when it is not."""
    for err in _causes(exc):
        if _is_mysql_error(err):
            # PyMySQL and mysqlclient put the number first in args; the Oracle and MariaDB
            # connectors name it errno. (Their SQLSTATE is coarser: 40001 for 1213.)
            number = getattr(err, "errno", None)
            if not isinstance(number, int) and err.args and isinstance(err.args[0], int):
                number = err.args[0]
            if number in _MYSQL_TRANSIENT:
                return f"{_MYSQL_TRANSIENT[number]} (MySQL {number})"
            continue
        # psycopg 3 names it sqlstate, psycopg2 pgcode.
        state = getattr(err, "sqlstate", None) or getattr(err, "pgcode", None)
        if isinstance(state, str) and state in _POSTGRES_TRANSIENT:
            return f"{_POSTGRES_TRANSIENT[state]} (PostgreSQL {state})"
    return None


def _is_mysql_error(err: BaseException) -> bool:
    return type(err).__module__.split(".")[0] in ("pymysql", "MySQLdb", "mysql", "mariadb")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a deadlock, a lock wait timeout or a serialization failure.

    Looks through SQLAlchemy's ``DBAPIError`` wrappers and Optuna's ``StorageInternalError``,
    which is raised from them, down to the driver's error.
    """
    return transient_reason(exc) is not None


# Driver errors that mean the connection is gone or cannot be made: MySQL client errors 2002
# and 2003 (cannot connect), 2006 (server has gone away), 2013 (lost connection).
_MYSQL_DISCONNECT = {2002, 2003, 2006, 2013}


def is_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached (a cut network, a restarted server).

    Unlike :func:`is_transient`, retrying at once does not help: a worker waits for the
    database to come back (``studies/_workqueue/_loop.py``).
    """
    import sqlalchemy.exc

    for err in _causes(exc):
        if getattr(err, "connection_invalidated", False):
            return True
        if isinstance(err, (sqlalchemy.exc.DisconnectionError, sqlalchemy.exc.InterfaceError)):
            return True
        if _is_mysql_error(err) and err.args and err.args[0] in _MYSQL_DISCONNECT:
            return True
        if type(err).__module__.split(".")[0] == "psycopg2" and type(err).__name__ in (
            "OperationalError",
            "InterfaceError",
        ):
            return transient_reason(err) is None  # psycopg2 gives no code for these
        if type(err).__module__.split(".")[0] == "psycopg" and type(err).__name__ in (
            "OperationalError",
            "InterfaceError",
        ):
            return transient_reason(err) is None
    return False


def backoff_delay(attempt: int, base_delay: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (1 for the first): jittered exponential backoff.

    The delay is drawn from [0.5, 1.5) times ``base_delay * 2 ** (attempt - 1)``, capped at
    :data:`MAX_DELAY_S`: two workers that deadlocked each other do not retry in step.
    """
    draw = (rng or random).random()
    return min(MAX_DELAY_S, base_delay * 2.0 ** (attempt - 1) * (0.5 + draw))


def retry_transient(
    fn: Callable[..., T],
    *args: Any,
    attempts: int = ATTEMPTS,
    base_delay: float = BASE_DELAY_S,
    **kwargs: Any,
) -> T:
    """``fn(*args, **kwargs)``, called again after a transient error, at most ``attempts`` times.

    ``fn`` must be one transaction (rolled back when it raises), so that calling it again
    cannot apply anything twice. Each retry is logged at INFO; the last error is raised.

    Example::

        retry_transient(claim_next_task, engine, worker_id)
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1 but got {attempts}.")
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            reason = transient_reason(err)
            if reason is None or attempt == attempts:
                raise
            delay = backoff_delay(attempt, base_delay)
            _logger.info(
                "%s in %s; retry %d of %d in %.2f s.",
                reason[0].upper() + reason[1:],
                getattr(fn, "__name__", "a database call"),
                attempt,
                attempts - 1,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("not reached")


# The RDBStorage methods that are each one transaction (one ``_create_scoped_session`` block,
# committed at its end and rolled back on any error), including the private ones Optuna's
# _CachedStorage calls. Public methods not listed are made of these (get_all_trials calls
# _get_trials; get_best_trial, _get_best_trial_id and get_trial; set_trial_param,
# _set_trial_param), so each transaction is retried once, not a whole sequence.
# _create_new_trial is left out: Optuna already retries it five times on any storage error.
_TRANSACTIONS = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "record_heartbeat",
) + _optuna_private.RDB_PRIVATE_TRANSACTIONS


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage, with each transaction run again after a transient error.

    Why running one again is safe: every method retried here is a single transaction of
    Optuna's (``_create_scoped_session``), and the errors retried are those with which the
    server aborts a transaction as a whole (a deadlock, a serialization failure; for a lock
    wait timeout, where MySQL may undo only the statement, Optuna's session rolls the rest back
    before the error reaches us). So when the error arrives nothing of the call was written,
    and the second attempt starts from the database as it is then: a trial another worker
    finished meanwhile fails the second attempt with Optuna's own error, as it would have the
    first. Errors that leave the outcome unknown (a connection lost during COMMIT) are not
    retried.

    It is an ``RDBStorage`` (and so a ``BaseHeartbeat``): heartbeats, ``fail_stale_trials``
    and pickling to other processes work as with Optuna's class.
    """


def _retrying(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def call(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> T:
        return retry_transient(method, self, *args, **kwargs)

    return call


for _name in _TRANSACTIONS:
    setattr(RetryingRDBStorage, _name, _retrying(getattr(optuna.storages.RDBStorage, _name)))
