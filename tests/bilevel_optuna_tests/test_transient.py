"""Transient errors from real servers: deadlocks on MariaDB and PostgreSQL, serialization
failures on PostgreSQL; recognized, retried, and retried inside Optuna's storage calls."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState

from bilevel_optuna._storage import open_storage
from bilevel_optuna._transient import _TRANSACTIONS
from bilevel_optuna._transient import MAX_DELAY_S
from bilevel_optuna._transient import RetryingRDBStorage
from bilevel_optuna._transient import backoff_delay
from bilevel_optuna._transient import is_transient
from bilevel_optuna._transient import retry_transient
from bilevel_optuna._transient import transient_reason


class _Draw:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("attempt", "draw", "delay"),
    [
        (1, 0.0, 0.025),
        (1, 0.5, 0.05),
        (2, 0.5, 0.1),
        (3, 0.0, 0.1),
        (3, 0.999, 0.2998),
        (10, 0.5, MAX_DELAY_S),  # 25.6 s uncapped
    ],
)
def test_backoff_delay(attempt: int, draw: float, delay: float) -> None:
    rng: Any = _Draw(draw)
    assert backoff_delay(attempt, 0.05, rng) == pytest.approx(delay)


@pytest.fixture
def engine(server_db: str) -> Iterator[sqlalchemy.engine.Engine]:
    engine = sqlalchemy.create_engine(server_db)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
        connection.exec_driver_sql("INSERT INTO t VALUES (1, 0), (2, 0)")
    yield engine
    engine.dispose()


def _crossed(
    engine: sqlalchemy.engine.Engine, isolation: str | None = None
) -> tuple[Callable[[int, int], None], threading.Barrier]:
    """A transaction that locks row ``first`` then row ``second``; two run crossed deadlock.

    Both first statements are done before either second one (the barrier, on the first attempt
    only), so the crossing is certain, not a matter of timing.
    """
    barrier = threading.Barrier(2, timeout=30)
    waited: set[int] = set()

    def transaction(first: int, second: int) -> None:
        options = {"isolation_level": isolation} if isolation else {}
        with engine.connect().execution_options(**options) as connection:
            with connection.begin():
                connection.exec_driver_sql(f"UPDATE t SET v = v + 1 WHERE id = {first}")
                if first not in waited:
                    waited.add(first)
                    barrier.wait()
                connection.exec_driver_sql(f"UPDATE t SET v = v + 1 WHERE id = {second}")

    return transaction, barrier


def _both(fn: Callable[..., Any]) -> list[BaseException]:
    """Run ``fn(1, 2)`` and ``fn(2, 1)`` at once; what each raised."""
    errors: list[BaseException] = []

    def run(first: int, second: int) -> None:
        try:
            fn(first, second)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            errors.append(err)

    threads = [threading.Thread(target=run, args=pair) for pair in ((1, 2), (2, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def _values(engine: sqlalchemy.engine.Engine) -> list[int]:
    with engine.connect() as connection:
        return [v for (v,) in connection.exec_driver_sql("SELECT v FROM t ORDER BY id")]


def test_a_real_deadlock_is_transient(engine: sqlalchemy.engine.Engine) -> None:
    transaction, _ = _crossed(engine)
    errors = _both(transaction)
    assert len(errors) == 1, errors  # the server aborted one of the two
    err = errors[0]
    assert isinstance(err, sqlalchemy.exc.DBAPIError)
    assert is_transient(err) and is_transient(err.orig)  # SQLAlchemy's wrapper and the driver's
    code = "PostgreSQL 40P01" if engine.dialect.name == "postgresql" else "MySQL 1213"
    assert transient_reason(err) == f"deadlock ({code})"
    assert _values(engine) == [1, 1]  # the aborted one left nothing behind


def test_a_real_serialization_failure_is_transient(postgres_db: str) -> None:
    engine = sqlalchemy.create_engine(postgres_db)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
            connection.exec_driver_sql("INSERT INTO t VALUES (1, 0), (2, 0)")
        # Write skew: each reads both rows, then writes the row the other read.
        barrier = threading.Barrier(2, timeout=30)

        def transaction(first: int, second: int) -> None:
            with engine.connect().execution_options(isolation_level="SERIALIZABLE") as c:
                with c.begin():
                    total = c.exec_driver_sql("SELECT sum(v) FROM t").scalar()
                    barrier.wait()
                    c.exec_driver_sql(f"UPDATE t SET v = {total} + 1 WHERE id = {first}")

        errors = _both(transaction)
        assert len(errors) == 1, errors
        assert transient_reason(errors[0]) == "serialization failure (PostgreSQL 40001)"
    finally:
        engine.dispose()


def test_retry_transient_runs_both_deadlocked_transactions_once_each(
    engine: sqlalchemy.engine.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    transaction, _ = _crossed(engine)
    with caplog.at_level(logging.INFO, logger="bilevel_optuna"):
        errors = _both(lambda first, second: retry_transient(transaction, first, second))
    assert errors == []
    assert _values(engine) == [2, 2]  # each transaction's two updates applied exactly once
    retries = [r.getMessage() for r in caplog.records if "retry 1 of 4" in r.getMessage()]
    assert (
        len(retries) == 1
        and retries[0].startswith("Deadlock (")
        and "in transaction" in retries[0]
    )


def test_other_errors_are_raised_at_once(engine: sqlalchemy.engine.Engine) -> None:
    calls = []

    def duplicate() -> None:
        calls.append(1)
        with engine.begin() as connection:
            connection.exec_driver_sql("INSERT INTO t VALUES (1, 5)")

    with pytest.raises(sqlalchemy.exc.IntegrityError) as info:
        retry_transient(duplicate)
    assert calls == [1] and not is_transient(info.value)
    assert not is_transient(ValueError("deadlock"))
    assert not is_transient(OSError(1213, "not a MySQL error"))


def test_the_last_transient_error_is_raised_after_every_attempt(
    engine: sqlalchemy.engine.Engine,
) -> None:
    transaction, _ = _crossed(engine)
    calls = []

    def always_deadlocks() -> None:  # one real deadlock, raised again and again
        calls.append(1)
        raise error

    error = _both(transaction)[0]
    with pytest.raises(sqlalchemy.exc.DBAPIError):
        retry_transient(always_deadlocks, attempts=3, base_delay=0.001)
    assert len(calls) == 3


# --- inside Optuna's storage ---


def test_the_retrying_storage_is_still_an_rdb_storage_with_heartbeats(tmp_path: Any) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/h.db?heartbeat_interval=1&grace_period=2")
    assert isinstance(storage, RetryingRDBStorage)
    assert isinstance(storage, optuna.storages.RDBStorage) and isinstance(storage, BaseHeartbeat)
    for name in _TRANSACTIONS:  # each wrapped method still exists in this Optuna
        assert getattr(optuna.storages.RDBStorage, name).__qualname__.startswith("RDBStorage.")
        assert getattr(RetryingRDBStorage, name).__wrapped__ is getattr(
            optuna.storages.RDBStorage, name
        )
    # A trial whose worker stopped beating is failed (and retried) as with Optuna's class.
    study = optuna.create_study(storage=storage, study_name="s")
    with pytest.warns(UserWarning, match="Heartbeat"):  # optuna prefers optimize; ask is fine
        stale = study.ask()
    storage.record_heartbeat(stale._trial_id)
    time.sleep(3)
    optuna.storages.fail_stale_trials(study)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states[0] == TrialState.FAIL and TrialState.WAITING in states


def _wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _finish_under_contention(
    storage: optuna.storages.RDBStorage, url: str
) -> BaseException | None:
    """Finish a trial while another connection forces the server to abort that transaction.

    PostgreSQL: the storage's transactions are SERIALIZABLE; another transaction updates the
    trial's row and commits while the storage waits for it: a serialization failure.
    MariaDB: the other transaction holds a gap lock where the trial's value will be inserted
    and, once the storage waits on it, asks for the trial's row: a deadlock, whose victim is
    the storage (the other one has written more).
    """
    study = optuna.create_study(storage=storage, study_name="contended")
    trial_id = study.ask()._trial_id
    other = sqlalchemy.create_engine(url)
    postgres = other.dialect.name == "postgresql"
    if not postgres:  # made before the transaction: CREATE TABLE commits in MySQL
        with other.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE heavy (i INTEGER)")
    outcome: list[BaseException | None] = []

    def finish() -> None:
        try:
            storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [1.0])
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - handed to the caller
            outcome.append(err)

    try:
        with other.connect() as connection, connection.begin():
            if postgres:
                waiting = (
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
                connection.exec_driver_sql(
                    "UPDATE trials SET datetime_start = datetime_start "
                    f"WHERE trial_id = {trial_id}"
                )
            else:
                waiting = (
                    "SELECT count(*) FROM information_schema.innodb_trx t "
                    "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
                    "WHERE t.trx_state = 'LOCK WAIT' AND p.db = DATABASE()"
                )
                connection.exec_driver_sql("INSERT INTO heavy VALUES " + ",".join(["(1)"] * 50))
                connection.exec_driver_sql(
                    f"SELECT * FROM trial_values WHERE trial_id = {trial_id} FOR UPDATE"
                )
            thread = threading.Thread(target=finish)
            thread.start()
            with other.connect() as probe:
                _wait_for(lambda: probe.exec_driver_sql(waiting).scalar() > 0)
            if not postgres:
                connection.exec_driver_sql(
                    f"SELECT * FROM trials WHERE trial_id = {trial_id} FOR UPDATE"
                )
        thread.join(timeout=60)
    finally:
        other.dispose()
    assert outcome, "the storage call did not return"
    return outcome[0]


def _serializable(storage: optuna.storages.RDBStorage) -> None:
    if storage.engine.dialect.name == "postgresql":

        @sqlalchemy.event.listens_for(storage.engine, "connect")
        def _isolation(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.set_session(isolation_level="SERIALIZABLE")

        storage.engine.dispose()


def test_optunas_own_storage_fails_under_contention(server_db: str) -> None:
    storage = optuna.storages.RDBStorage(server_db)
    _serializable(storage)
    try:
        error = _finish_under_contention(storage, server_db)
        assert isinstance(error, optuna.exceptions.StorageInternalError)
        assert is_transient(error)  # through Optuna's wrapper and SQLAlchemy's
    finally:
        storage.engine.dispose()


def test_the_retrying_storage_finishes_the_trial_under_contention(
    server_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    storage = open_storage(server_db, heartbeat=False)
    _serializable(storage)
    try:
        with caplog.at_level(logging.INFO, logger="bilevel_optuna"):
            assert _finish_under_contention(storage, server_db) is None
        trial = optuna.load_study(study_name="contended", storage=storage).trials[0]
        assert trial.state == TrialState.COMPLETE and trial.value == 1.0
        reason = "Serialization failure" if "postgresql" in server_db else "Deadlock"
        assert any(
            r.getMessage().startswith(reason) and "in set_trial_state_values" in r.getMessage()
            for r in caplog.records
        )
    finally:
        storage.engine.dispose()
