"""Wrong URLs, missing drivers and refusing servers: one clear error each, password hidden."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import uuid

import pytest
from sqlalchemy.engine import make_url

from bilevel_optuna._connect import resolve_driver
from bilevel_optuna._storage import open_storage
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.exceptions import StorageError


@pytest.mark.parametrize(
    ("url", "match"),
    [
        (
            "postgres://u:pw@db/runs",
            r"postgres:// is not .*write postgresql:// instead: " r"postgresql://u:\*\*\*@db/runs",
        ),
        ("postgres+psycopg2://u@db/runs", r"write postgresql://.*postgresql\+psycopg2://u@db"),
        ("sqlite3:///runs.db", r"write sqlite:// instead"),
        (
            "postgresql+psycopg3://u@db/runs",
            r"'psycopg3' is not a driver .* postgresql\+psycopg://",
        ),
        ("mysql+pymsql://u@db/runs", r"'pymsql' is not a driver .* mysql\+pymysql://"),
        ("oracle2://u@db/runs", r"oracle2:// .* is not a database .*postgresql://user@host/db"),
        ("not a url", r"'not a url' is not a storage URL"),
        ("runs.db", r"sqlite:///runs.db"),
        (
            "mysql+mysqldb://u:pw@db/runs",
            r"driver mysqldb .* pip install 'mysqlclient', or use "
            r"mysql\+pymysql://, which is installed",
        ),
    ],
)
def test_a_wrong_url_says_what_to_write(url: str, match: str) -> None:
    pytest.importorskip("pymysql")
    with pytest.raises(ConfigurationError, match=match) as info:
        open_storage(url)
    assert "pw" not in str(info.value).replace("psycopg", "")


def test_a_url_without_a_driver_gets_an_installed_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("psycopg2")
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as in an install with psycopg2 only
    with caplog.at_level(logging.INFO, logger="bilevel_optuna"):
        url = resolve_driver(make_url("postgresql://u@db/runs"))
    assert url.drivername == "postgresql+psycopg2"
    assert "using postgresql+psycopg2://, which is" in caplog.text
    # mysqlclient, what mysql:// means to SQLAlchemy, is not among the test requirements.
    pytest.importorskip("pymysql")
    if "MySQLdb" not in sys.modules:
        monkeypatch.setitem(sys.modules, "MySQLdb", None)
    assert resolve_driver(make_url("mysql://u@db/runs")).drivername == "mysql+pymysql"
    assert resolve_driver(make_url("mariadb://u@db/runs")).drivername == "mariadb+pymysql"


def test_a_driver_named_in_the_url_is_kept_or_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("psycopg2")
    assert resolve_driver(make_url("postgresql+psycopg2://u@db/r")).drivername.endswith("psycopg2")
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(
        ConfigurationError,
        match=r"pip install 'psycopg\[binary\]', or use "
        r"postgresql\+psycopg2://, which is installed",
    ):
        resolve_driver(make_url("postgresql+psycopg://u@db/r"))


def test_no_driver_at_all_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("psycopg", "psycopg2"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(
        ConfigurationError,
        match=r"No driver for postgresql is installed .*"
        r"pip install 'bilevel-optuna\[postgresql\]'",
    ):
        open_storage("postgresql://u:pw@db/runs")
    with pytest.raises(
        ConfigurationError,
        match=r"pip install 'psycopg2-binary', or pip install "
        r"'bilevel-optuna\[postgresql\]' and write postgresql://",
    ):
        open_storage("postgresql+psycopg2://u:pw@db/runs")


@pytest.fixture(params=["postgresql+psycopg2", "postgresql+psycopg", "mysql+pymysql"])
def server(request: pytest.FixtureRequest) -> str:
    """A server URL without its database, through each driver."""
    driver = request.param
    pytest.importorskip(driver.split("+")[1])
    base = request.getfixturevalue("mysql_url" if "mysql" in driver else "postgres_url")
    return make_url(base).set(drivername=driver).render_as_string(hide_password=False)


def test_a_database_that_does_not_exist_says_how_to_create_it(server: str) -> None:
    name = f"bo_missing_{uuid.uuid4().hex[:8]}"
    url = make_url(server).set(database=name)
    client = (
        "psql -h 127.0.0.1 -p 5432" if "postgresql" in server else "mysql -h 127.0.0.1 -P 3306"
    )
    with pytest.raises(
        StorageError, match=rf"database '{name}' does not exist on 127.0.0.1:"
    ) as info:
        open_storage(url.render_as_string(hide_password=False), read_only=True)
    assert f"{client}" in str(info.value) and f"CREATE DATABASE {name}'" in str(info.value)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_no_server_at_that_port_says_check_host_and_port(server: str) -> None:
    url = make_url(server).set(port=_free_port(), password="s3cret-pw")
    with pytest.raises(
        StorageError,
        match=r"Cannot reach a database server at 127.0.0.1:\d+ "
        r"\(.*Connection refused.*\)\. Check the host and port",
    ) as info:
        open_storage(url.render_as_string(hide_password=False))
    assert "s3cret-pw" not in str(info.value) and ":***@" in str(info.value)


def test_an_unknown_user_is_refused_clearly(server: str) -> None:
    url = make_url(server).set(username=f"bo_nobody_{uuid.uuid4().hex[:6]}", password="s3cret-pw")
    with pytest.raises(
        StorageError, match=r"refused user 'bo_nobody_\w+' .* Check the user and " r"password"
    ) as info:
        open_storage(url.render_as_string(hide_password=False))
    assert "s3cret-pw" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql+pymysql://root@127.0.0.1:3306/bo_nope_{}", "CREATE DATABASE bo_nope_"),
        ("postgres://root:pw@127.0.0.1/test", "write postgresql:// instead"),
    ],
)
def test_the_cli_ends_in_one_clear_line(mysql_url: str, url: str, says: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bilevel_optuna",
            "status",
            "--storage",
            url.format(uuid.uuid4().hex[:6]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bilevel-optuna status: error: "), result.stderr
    assert says in lines[0] and "Traceback" not in result.stderr and ":pw@" not in lines[0]
