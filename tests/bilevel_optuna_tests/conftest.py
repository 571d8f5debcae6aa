"""Fresh PostgreSQL and MariaDB databases, one per test, dropped after it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy
from sqlalchemy.engine import make_url


def _fresh_database(server_url: str) -> Iterator[str]:
    name = f"bo_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            if admin.dialect.name == "postgresql":
                connection.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
            else:
                connection.exec_driver_sql(f"DROP DATABASE {name}")
        admin.dispose()


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database."""
    yield from _fresh_database(postgres_url)


@pytest.fixture
def mysql_db(mysql_url: str) -> Iterator[str]:
    """The URL of a new, empty MariaDB/MySQL database."""
    yield from _fresh_database(mysql_url)


@pytest.fixture(params=["postgresql", "mysql"])
def server_db(request: pytest.FixtureRequest) -> str:
    """A new database on each server in turn."""
    return request.getfixturevalue("postgres_db" if request.param == "postgresql" else "mysql_db")
