"""is_loopback and hide_password: the one copy the chat backends, the storage and the CLI use."""

from __future__ import annotations

import pytest

from bilevel_optuna._urls import hide_password
from bilevel_optuna._urls import is_loopback


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("http://127.0.0.1:8000/v1", True),
        ("http://LOCALHOST:8000/v1", True),
        ("http://[::1]:8000/v1", True),
        ("0.0.0.0", False),
        ("192.168.1.5", False),
        ("https://api.openai.com/v1", False),
        ("localhost.example.com", False),
        ("localhost:8000/v1", False),  # no scheme: not a URL, not a host name
    ],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg2://u:s3cret@db/runs", "postgresql+psycopg2://u:***@db/runs"),
        ("mysql+pymysql://root:p%40ss@127.0.0.1/test", "mysql+pymysql://root:***@127.0.0.1/test"),
        ("https://u:key@host/v1?x=1", "https://u:***@host/v1?x=1"),
        ("postgresql://user@db/runs", "postgresql://user@db/runs"),
        ("sqlite:///runs.db", "sqlite:///runs.db"),
        ("runs.log", "runs.log"),
        # libpq and MySQL drivers also take a password in the query string.
        (
            "postgresql://u@db/runs?sslmode=require&password=s3cret",
            "postgresql://u@db/runs?sslmode=require&password=***",
        ),
        ("mysql://u:a@db/x?passwd=b&charset=utf8", "mysql://u:***@db/x?passwd=***&charset=utf8"),
        ("sqlite:///runs.db?pool_size=2", "sqlite:///runs.db?pool_size=2"),
    ],
)
def test_hide_password(url: str, shown: str) -> None:
    assert hide_password(url) == shown
