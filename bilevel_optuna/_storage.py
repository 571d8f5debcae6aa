"""Opening the storage every part of the package shares: one function, one set of rules.

A storage is an RDB URL (SQLite on one machine, PostgreSQL or MySQL across servers), the path
of an Optuna journal file (``*.log``, one machine), or a storage object, which is used as is.
With no storage given, ``OPTUNA_STORAGE`` is read, then :data:`DEFAULT_STORAGE`.

RDB storages get heartbeats, so the trials of a killed process are failed and retried, and run
again a transaction the server aborted (a deadlock, a serialization failure: see
:mod:`bilevel_optuna._transient`); SQLite files also get transactions that take the write lock
at ``BEGIN`` (see :func:`serialize_sqlite_transactions`). Optuna's journal storage has no
heartbeats: it is accepted where that does not matter (one machine), and refused with an
explanation where a caller needs them (``heartbeat=True``).

Server databases take options in the URL's query string (or a spec's ``[run] storage_options``
table), e.g. ``postgresql://user@host/db?pool_size=2&heartbeat_interval=5``: the
engine's pool (:data:`STORAGE_OPTIONS`), the connect timeout, whatever the driver is, and the
heartbeat timing. These keys are taken out of the URL before SQLAlchemy sees it; every other key
is the driver's, and is passed on to it untouched.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.storages import RetryHeartbeatStaleTrialCallback

from bilevel_optuna._connect import connection_error
from bilevel_optuna._connect import resolve_driver
from bilevel_optuna._experimental import HEARTBEAT
from bilevel_optuna._experimental import experimental
from bilevel_optuna._transient import RetryingRDBStorage
from bilevel_optuna._urls import hide_password
from bilevel_optuna.exceptions import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

#: The storage used when neither the caller nor ``OPTUNA_STORAGE`` names one.
DEFAULT_STORAGE = "sqlite:///bilevel_optuna.db"
#: The environment variable Optuna's own CLI reads for its storage.
STORAGE_ENV = "OPTUNA_STORAGE"
#: File suffixes taken as an Optuna journal file (JournalFileBackend) rather than a URL.
JOURNAL_SUFFIXES = (".log", ".jsonl")

# Heartbeats: a trial whose process stopped beating for GRACE_PERIOD_S is failed and retried
# (at most MAX_RETRY times) by the next trial any process starts. The URL can change both.
HEARTBEAT_INTERVAL_S = 15
GRACE_PERIOD_S = 45
MAX_RETRY = 2
# Seconds a server connection may take to open: a worker cut off from the database fails in
# seconds rather than after the kernel's two minutes of SYN retries.
CONNECT_TIMEOUT_S = 10
# Seconds an SQLite connection waits for the write lock before failing (its connect_timeout).
_SQLITE_TIMEOUT_S = 60


@dataclasses.dataclass(frozen=True)
class _Option:
    kind: type
    minimum: float | None
    meaning: str

    @property
    def valid(self) -> str:
        if self.kind is bool:
            return "true or false"
        name = "an integer" if self.kind is int else "a number"
        return name if self.minimum is None else f"{name} >= {self.minimum:g}"


#: The storage options of this package, in a URL's query string or a spec's
#: ``[run] storage_options``: key -> (type, minimum, meaning).
STORAGE_OPTIONS: dict[str, _Option] = {
    "pool_size": _Option(int, 0, "connections each process keeps open (SQLAlchemy's default 5)"),
    "max_overflow": _Option(int, -1, "connections opened beyond pool_size at a peak; -1: any"),
    "pool_timeout": _Option(float, 0, "seconds to wait for a free pooled connection"),
    "pool_recycle": _Option(int, -1, "reopen connections older than this many seconds; -1: never"),
    "pool_pre_ping": _Option(
        bool, None, "test each connection before use (default: true on servers)"
    ),
    "connect_timeout": _Option(
        int, 1, f"seconds to open a connection (default {CONNECT_TIMEOUT_S}; SQLite: lock wait)"
    ),
    "heartbeat_interval": _Option(
        int, 1, f"seconds between heartbeats (default {HEARTBEAT_INTERVAL_S})"
    ),
    "grace_period": _Option(
        int,
        1,
        f"seconds of silence before a worker's trials count as dead (default {GRACE_PERIOD_S})",
    ),
}
_POOL_OPTIONS = ("pool_size", "max_overflow", "pool_timeout", "pool_recycle", "pool_pre_ping")
# Each driver's name for the connect timeout (SQLite's is how long to wait for a lock).
_CONNECT_TIMEOUT_ARGS = {
    "psycopg2": "connect_timeout",
    "psycopg": "connect_timeout",
    "psycopg2cffi": "connect_timeout",
    "pg8000": "timeout",
    "pymysql": "connect_timeout",
    "mysqldb": "connect_timeout",
    "mariadbconnector": "connect_timeout",
    "mysqlconnector": "connection_timeout",
    "pysqlite": "timeout",
}


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
        "postgresql://... or mysql://... across servers) where workers can die."
    )


def open_storage(
    storage: str | BaseStorage | None = None,
    *,
    read_only: bool = False,
    heartbeat: bool | None = None,
    options: Mapping[str, Any] | None = None,
) -> BaseStorage:
    """The Optuna storage for a URL, a journal file path or a storage object.

    Args:
        storage: A URL (``sqlite:///runs.db``, ``postgresql://user@host/db``), a
            journal file (``runs.log``), a storage object (returned as is), or None for
            ``$OPTUNA_STORAGE`` or :data:`DEFAULT_STORAGE`.
        read_only: The caller only reads (a comparison): a file that does not exist is an
            error, not a new empty storage.
        heartbeat: None gives heartbeats where the storage has them (RDB); True requires them,
            and refuses a journal storage; False never sets them.
        options: Storage options (:data:`STORAGE_OPTIONS`) for an RDB URL, e.g. a spec's
            ``[run] storage_options``; the same key in the URL's query string wins.

    Raises:
        ConfigurationError: The storage cannot be opened, or cannot give what was asked.
    """
    if options and not isinstance(storage, (str, type(None))):
        raise ConfigurationError(
            f"Storage options {sorted(options)} apply to a storage URL, not to an open "
            f"{type(storage).__name__}; give the URL, or set the engine up on the object."
        )
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
        if options:
            raise ConfigurationError(
                f"Storage options {sorted(options)} apply to database URLs; the journal file "
                f"{url!r} takes none."
            )
        return _open_journal(url, read_only=read_only, heartbeat=heartbeat)
    return _open_rdb(url, read_only=read_only, heartbeat=heartbeat, options=options)


def make_storage(
    storage: str | BaseStorage | None, *, options: Mapping[str, Any] | None = None
) -> tuple[BaseStorage, str]:
    """:func:`open_storage` and the URL it opened (the object's ``url``, or its repr)."""
    opened = open_storage(storage, options=options)
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


def _open_rdb(
    url: str, *, read_only: bool, heartbeat: bool | None, options: Mapping[str, Any] | None
) -> BaseStorage:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError
    from sqlalchemy.exc import DBAPIError

    try:
        parsed = make_url(url)
    except ArgumentError as err:
        path = url if url.endswith((".db", ".sqlite", ".sqlite3")) else "runs.db"
        raise ConfigurationError(
            f"{hide_password(url)!r} is not a storage URL; expected a database URL such as "
            f"sqlite:///{path} or postgresql://user@host/db, or a journal file such as "
            "runs.log."
        ) from err
    parsed, from_url = _take_url_options(parsed)
    settings = {**parse_storage_options(options), **from_url}
    sqlite = parsed.get_backend_name() == "sqlite"
    database = parsed.database or ""
    if read_only and sqlite and database not in ("", ":memory:") and not Path(database).exists():
        raise ConfigurationError(
            f"No SQLite file at {database!r}; check the path in the storage URL."
        )
    if not read_only and sqlite and database not in ("", ":memory:"):
        # A run's outputs can live in one folder of their own (sqlite:///bilevel_demo/demo.db).
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    interval, grace = _heartbeat_timing(settings)
    parsed = resolve_driver(parsed)
    beats = heartbeat is not False
    try:
        with experimental(*HEARTBEAT):
            storage = RetryingRDBStorage(
                parsed.render_as_string(hide_password=False),
                engine_kwargs=_engine_kwargs(parsed, settings, sqlite=sqlite),
                heartbeat_interval=interval if beats else None,
                grace_period=grace if beats else None,
                heartbeat_stale_trial_callback=(
                    RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY) if beats else None
                ),
            )
    except (DBAPIError, optuna.exceptions.StorageInternalError) as err:
        raise connection_error(err, parsed) from err
    except TypeError as err:  # a pool option this database's pool does not take
        raise ConfigurationError(
            f"A storage option does not apply to {hide_password(url)}: {err}"
        ) from err
    if sqlite and not read_only:
        serialize_sqlite_transactions(storage)
    return storage


def _take_url_options(url: URL) -> tuple[URL, dict[str, Any]]:
    """The URL without our keys, and our keys' parsed values; the driver's keys stay in it."""
    ours = {key: value for key, value in url.query.items() if key in STORAGE_OPTIONS}
    where = f"the storage URL {hide_password(url.render_as_string(hide_password=False))}"
    for key in url.query:
        near = difflib.get_close_matches(key, list(STORAGE_OPTIONS), n=1, cutoff=0.8)
        if key not in STORAGE_OPTIONS and near:  # a misspelt key of ours, not a driver's
            raise _unknown_option(key, where, near[0])
    for key, value in ours.items():
        if not isinstance(value, str):
            raise ConfigurationError(f"Storage option {key} is given twice in {where}.")
    parsed = {key: _parse_option(key, value, where) for key, value in ours.items()}
    return url.difference_update_query(list(ours)), parsed


def parse_storage_options(
    options: Mapping[str, Any] | None, *, where: str = "storage_options"
) -> dict[str, Any]:
    """Checked storage options (see :data:`STORAGE_OPTIONS`) from a mapping such as a spec table.

    Every key must be one of ours: driver arguments belong in the URL's query string.

    Raises:
        ConfigurationError: An unknown key or a bad value, named with the valid ones.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ConfigurationError(
            f"{where} must be a table of storage options but got {type(options).__name__}."
        )
    for key in options:
        if key not in STORAGE_OPTIONS:
            near = difflib.get_close_matches(str(key), list(STORAGE_OPTIONS), n=1)
            raise _unknown_option(str(key), where, near[0] if near else None)
    return {key: _parse_option(key, value, where) for key, value in options.items()}


def _unknown_option(key: str, where: str, near: str | None) -> ConfigurationError:
    hint = f" (did you mean {near}?)" if near else ""
    return ConfigurationError(
        f"Unknown storage option {key!r} in {where}{hint}; the options are "
        f"{', '.join(sorted(STORAGE_OPTIONS))}."
    )


def _parse_option(key: str, value: Any, where: str) -> Any:
    option = STORAGE_OPTIONS[key]
    parsed = _coerce(value, option.kind)
    if parsed is None or (option.minimum is not None and parsed < option.minimum):
        raise ConfigurationError(
            f"Storage option {key} in {where} must be {option.valid} but got {value!r}."
        )
    return parsed


def _coerce(value: Any, kind: type) -> Any:
    """``value`` (a URL's string or a TOML value) as ``kind``, or None when it is not one."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(
            text
        )
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, str):
        number: float = value
    else:
        try:
            number = float(str(value).strip()) if kind is float else int(str(value).strip())
        except ValueError:
            return None
    if kind is int:
        return number if isinstance(number, int) else None
    return float(number) if math.isfinite(number) else None


def _heartbeat_timing(settings: Mapping[str, Any]) -> tuple[int, int]:
    interval = settings.get("heartbeat_interval", HEARTBEAT_INTERVAL_S)
    grace = settings.get("grace_period", interval * GRACE_PERIOD_S // HEARTBEAT_INTERVAL_S)
    if grace <= interval:
        raise ConfigurationError(
            f"grace_period ({grace} s) must be longer than heartbeat_interval ({interval} s): "
            "a live worker beats once per interval, so a shorter grace would take its trials "
            "for dead ones. Give a grace period of about three intervals."
        )
    return interval, grace


def _engine_kwargs(url: URL, settings: Mapping[str, Any], *, sqlite: bool) -> dict[str, Any]:
    kwargs = {key: settings[key] for key in _POOL_OPTIONS if key in settings}
    if not sqlite:
        kwargs.setdefault("pool_pre_ping", True)
    driver = url.get_driver_name()
    connect_arg = _CONNECT_TIMEOUT_ARGS.get(driver)
    if sqlite:
        connect_timeout = settings.get("connect_timeout", _SQLITE_TIMEOUT_S)
    else:
        connect_timeout = settings.get("connect_timeout", CONNECT_TIMEOUT_S)
    if connect_arg is None:
        if "connect_timeout" in settings:
            raise ConfigurationError(
                f"connect_timeout is not known for the driver {driver!r}; pass that driver's "
                "own argument in the URL's query string instead."
            )
    elif connect_arg not in url.query:  # the driver's own key, given by the user, wins
        kwargs["connect_args"] = {connect_arg: connect_timeout}
    return kwargs


def heartbeat_settings(storage: BaseStorage) -> tuple[int | None, int | None]:
    """The heartbeat interval and grace period (seconds) of ``storage``; (None, None) if none.

    Code that beats its own heartbeats on the same database (the claims of a worker) uses these,
    so that a storage URL's ``heartbeat_interval`` and ``grace_period`` time both alike.
    """
    from optuna.storages._heartbeat import BaseHeartbeat

    backend = getattr(storage, "_backend", storage)  # optuna's _CachedStorage wraps an RDB one
    if not isinstance(backend, BaseHeartbeat) or backend.get_heartbeat_interval() is None:
        return None, None
    interval = backend.get_heartbeat_interval()
    assert interval is not None
    grace = getattr(backend, "grace_period", None) or 2 * interval  # optuna's own default
    return interval, grace


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
