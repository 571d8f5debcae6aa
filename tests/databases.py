"""A fresh, throw-away database per test on SQLite, PostgreSQL or MariaDB (the servers on this
machine), for the tests of tables that must behave alike on all three."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

SERVERS = {
    "postgresql": "postgresql+psycopg2://postgres@127.0.0.1:5432/",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/",
}


def _admin(url: str, sql: str) -> None:
    engine = sa.create_engine(
        url + ("postgres" if url.startswith("postgresql") else ""), isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(sql))
    finally:
        engine.dispose()


def fresh_database(kind: str, prefix: str, tmp_path: Path) -> Iterator[str]:
    """Yield the URL of a new database of ``kind``, dropped afterwards; skip where the server
    is not reachable."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/{prefix}.db"
        return
    server = SERVERS[kind]
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        _admin(server, f"CREATE DATABASE {name}")
    except sa.exc.OperationalError as err:
        pytest.skip(f"{kind} is not reachable: {err}")
    try:
        yield server + name
    finally:
        force = " WITH (FORCE)" if kind == "postgresql" else ""  # engines still open
        _admin(server, f"DROP DATABASE {name}{force}")
