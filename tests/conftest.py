from __future__ import annotations

import socket
import sys
from pathlib import Path

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
