from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Make tests/chat_doubles.py importable from every test folder.
sys.path.insert(0, str(Path(__file__).parent))

POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
MYSQL_URL = "mysql+pymysql://root@127.0.0.1:3306/test"


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def postgres_url() -> str:
    """The PostgreSQL test database; skips when no server listens on 127.0.0.1:5432."""
    if not _reachable(5432):
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    return POSTGRES_URL


@pytest.fixture
def mysql_url() -> str:
    """The MariaDB/MySQL test database; skips when no server listens on 127.0.0.1:3306."""
    if not _reachable(3306):
        pytest.skip("MariaDB/MySQL is not running on 127.0.0.1:3306")
    return MYSQL_URL


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "netns: runs workers in their own network namespaces (needs root and ip netns)"
    )


@pytest.fixture
def netns_servers() -> Iterator[Callable[[], Any]]:
    """A factory of separate "servers" (tests/netns.py), all removed when the test ends.

    Skips the test, with the reason, where network namespaces cannot be made (not root, no
    iproute2, a kernel or container that refuses).
    """
    import netns

    try:
        netns.check_available()
    except netns.NetnsUnavailable as err:
        pytest.skip(f"network namespaces unavailable: {err}")
    made: list[netns.Server] = []

    def make() -> netns.Server:
        made.append(netns.Server.create())
        return made[-1]

    yield make
    for server in made:
        server.close()
