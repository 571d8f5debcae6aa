"""Opening the storage every part of the package shares: one function, one set of rules.

A storage is an RDB URL (SQLite on one machine, PostgreSQL or MySQL across servers), the path
of an Optuna journal file (``*.log``, one machine), or a storage object, which is used as is.
With no storage given, ``OPTUNA_STORAGE`` is read, then :data:`DEFAULT_STORAGE`.

RDB storages get heartbeats, so the trials of a killed process are failed and retried; SQLite
files also get transactions that take the write lock at ``BEGIN`` (see
:func:`serialize_sqlite_transactions`). Optuna's journal storage has no heartbeats: it is
accepted where that does not matter (one machine), and refused with an explanation where a
caller needs them (``heartbeat=True``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage

from bilevel_optuna._experimental import HEARTBEAT
from bilevel_optuna._experimental import experimental
from bilevel_optuna._urls import hide_password
from bilevel_optuna.exceptions import ConfigurationError

#: The storage used when neither the caller nor ``OPTUNA_STORAGE`` names one.
DEFAULT_STORAGE = "sqlite:///bilevel_optuna.db"
#: The environment variable Optuna's own CLI reads for its storage.
STORAGE_ENV = "OPTUNA_STORAGE"
#: File suffixes taken as an Optuna journal file (JournalFileBackend) rather than a URL.
JOURNAL_SUFFIXES = (".log", ".jsonl")

# Heartbeats: a trial whose process stopped beating for GRACE_PERIOD_S is failed and retried
# (at most MAX_RETRY times) by the next trial any process starts.
HEARTBEAT_INTERVAL_S = 15
GRACE_PERIOD_S = 45
MAX_RETRY = 2
# Seconds an SQLite connection waits for the write lock before failing.
_SQLITE_TIMEOUT_S = 60


def default_storage_url(storage: str | None = None) -> str:
    """``storage`` if given, else ``$OPTUNA_STORAGE``, else :data:`DEFAULT_STORAGE`."""
    return storage or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def is_journal(storage: Any) -> bool:
    """Whether ``storage`` is a journal file path or a ``JournalStorage``."""
    if isinstance(storage, str):
        return "://" not in storage and storage.endswith(JOURNAL_SUFFIXES)
    return isinstance(storage, optuna.storages.JournalStorage)


def has_heartbeat(storage: BaseStorage) -> bool:
    """Whether Optuna can fail and retry the trials of a killed process on ``storage``."""
    from optuna.storages._heartbeat import BaseHeartbeat

    return isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval() is not None


def storage_label(storage: str | BaseStorage) -> str:
    """How to show a storage in messages and reports: the URL with no password in it."""
    if isinstance(storage, str):
        return hide_password(storage)
    url = getattr(storage, "url", None)
    return hide_password(url) if isinstance(url, str) else type(storage).__name__


def _no_heartbeat_error(what: str) -> ConfigurationError:
    return ConfigurationError(
        f"{what} has no heartbeats, so a trial of a killed worker would stay RUNNING forever "
        "instead of being retried. Use an RDB URL (sqlite:///FILE.db on one machine, "
        "postgresql+psycopg2://... or mysql+pymysql://... across servers) where workers can die."
    )


def open_storage(
    storage: str | BaseStorage | None = None,
    *,
    read_only: bool = False,
    heartbeat: bool | None = None,
) -> BaseStorage:
    """The Optuna storage for a URL, a journal file path or a storage object.

    Args:
        storage: A URL (``sqlite:///runs.db``, ``postgresql+psycopg2://user@host/db``), a
            journal file (``runs.log``), a storage object (returned as is), or None for
            ``$OPTUNA_STORAGE`` or :data:`DEFAULT_STORAGE`.
        read_only: The caller only reads (a comparison): a file that does not exist is an
            error, not a new empty storage.
        heartbeat: None gives heartbeats where the storage has them (RDB); True requires them,
            and refuses a journal storage; False never sets them.

    Raises:
        ConfigurationError: The storage cannot be opened, or cannot give what was asked.
    """
    if isinstance(storage, BaseStorage):
        if heartbeat and not has_heartbeat(storage):
            raise _no_heartbeat_error(f"The storage {type(storage).__name__}")
        return storage
    if storage is not None and not isinstance(storage, str):
        raise ConfigurationError(
            f"storage must be a URL or an optuna storage but got {type(storage).__name__}."
        )
    url = default_storage_url(storage)
    if is_journal(url):
        return _open_journal(url, read_only=read_only, heartbeat=heartbeat)
    return _open_rdb(url, read_only=read_only, heartbeat=heartbeat)


def make_storage(storage: str | BaseStorage | None) -> tuple[BaseStorage, str]:
    """:func:`open_storage` and the URL it opened (the object's ``url``, or its repr)."""
    opened = open_storage(storage)
    if isinstance(storage, BaseStorage):
        return opened, getattr(storage, "url", repr(storage))
    return opened, default_storage_url(storage)


def _open_journal(path: str, *, read_only: bool, heartbeat: bool | None) -> BaseStorage:
    if heartbeat:
        raise _no_heartbeat_error(f"The journal file {path!r}")
    if read_only and not Path(path).exists():
        raise ConfigurationError(f"No journal file at {path!r}; check the path.")
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(path))


def _open_rdb(url: str, *, read_only: bool, heartbeat: bool | None) -> BaseStorage:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise ConfigurationError(
            f"{url!r} is not a storage URL; expected a database URL such as sqlite:///runs.db "
            "or postgresql+psycopg2://user@host/db, or a journal file such as runs.log."
        ) from err
    sqlite = parsed.get_backend_name() == "sqlite"
    database = parsed.database or ""
    if read_only and sqlite and database not in ("", ":memory:") and not Path(database).exists():
        raise ConfigurationError(
            f"No SQLite file at {database!r}; check the path in the storage URL."
        )
    beats = heartbeat is not False
    try:
        with experimental(*HEARTBEAT):
            storage = _rdb_storage(url, sqlite=sqlite, beats=beats)
    except ImportError as err:
        raise ConfigurationError(
            f"The driver for {parsed.drivername} is not installed ({err}). For PostgreSQL, "
            "pip install psycopg2-binary and use postgresql+psycopg2://...; for MySQL, "
            "pip install pymysql and use mysql+pymysql://..."
        ) from err
    if sqlite and not read_only:
        serialize_sqlite_transactions(storage)
    return storage


def _rdb_storage(url: str, *, sqlite: bool, beats: bool) -> optuna.storages.RDBStorage:
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    return optuna.storages.RDBStorage(
        url,
        engine_kwargs={"connect_args": {"timeout": _SQLITE_TIMEOUT_S}} if sqlite else None,
        heartbeat_interval=HEARTBEAT_INTERVAL_S if beats else None,
        grace_period=GRACE_PERIOD_S if beats else None,
        heartbeat_stale_trial_callback=(
            RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY) if beats else None
        ),
    )


def serialize_sqlite_transactions(storage: optuna.storages.RDBStorage) -> None:
    """Make every SQLite transaction take the write lock at its start (``BEGIN IMMEDIATE``).

    SQLite ignores ``SELECT ... FOR UPDATE``, so two processes can both read a WAITING trial
    and both start it: a queued candidate would run twice. Taking the lock at ``BEGIN`` makes
    Optuna's read-check-write atomic across processes, at the cost of serializing writers
    (what SQLite does anyway). Server databases lock rows and need none of this.
    """
    from sqlalchemy import event

    engine = storage.engine

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver must not emit its own BEGIN

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners must not be reused
