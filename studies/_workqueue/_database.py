"""Which database holds a run's claims, and its clock.

The claims live in the run's own RDB storage, beside Optuna's tables; a journal file or an
in-memory storage (one process) keeps them in a private in-memory SQLite database instead. Every
time the queue writes or compares is the database's clock, never a worker's, so servers whose
clocks differ agree on which claim is stale.
"""

from __future__ import annotations

import sqlalchemy as sa
from optuna.storages import BaseStorage

from bilevel_optuna.exceptions import ConfigurationError

_PRIVATE: dict[int, sa.engine.Engine] = {}


def engine_of(storage: BaseStorage) -> sa.engine.Engine:
    """The storage's database engine; :class:`ConfigurationError` if it has none."""
    engine = getattr(storage, "engine", None)
    if engine is None:
        raise ConfigurationError(
            f"Workers share a run through an RDB storage (a database URL), but got "
            f"{type(storage).__name__}. Use sqlite:///FILE.db on one machine, or a PostgreSQL or "
            "MySQL URL across servers."
        )
    return engine


def private_engine(storage: BaseStorage) -> sa.engine.Engine:
    """An in-memory SQLite database for the claims of a storage that has none of its own."""
    key = id(storage)
    if key not in _PRIVATE:
        _PRIVATE[key] = sa.create_engine(
            "sqlite://",
            poolclass=sa.pool.StaticPool,
            connect_args={"check_same_thread": False},
        )
    return _PRIVATE[key]


def db_now(engine: sa.engine.Engine) -> sa.ColumnElement[float]:
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
