"""open_storage's URL options: the engine and heartbeats they set, and the errors they give."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from bilevel_optuna._storage import CONNECT_TIMEOUT_S
from bilevel_optuna._storage import GRACE_PERIOD_S
from bilevel_optuna._storage import HEARTBEAT_INTERVAL_S
from bilevel_optuna._storage import heartbeat_settings
from bilevel_optuna._storage import open_storage
from bilevel_optuna._storage import parse_storage_options
from bilevel_optuna.exceptions import ConfigurationError


def _connect_timeout(storage: optuna.storages.RDBStorage) -> int:
    """The connect timeout the driver's own connection object was opened with."""
    raw = storage.engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        if storage.engine.dialect.name == "postgresql":
            return int(dbapi.get_dsn_parameters()["connect_timeout"])
        return int(dbapi.connect_timeout)
    finally:
        raw.close()


def test_pool_and_timeout_options_reach_the_engine_and_the_driver(server_db: str) -> None:
    query = "pool_size=2&max_overflow=1&pool_timeout=7.5&pool_recycle=300&connect_timeout=3"
    storage = open_storage(f"{server_db}?{query}")
    try:
        pool = storage.engine.pool
        assert pool.size() == 2 and pool._max_overflow == 1  # type: ignore[attr-defined]
        assert pool.timeout() == 7.5 and pool._recycle == 300  # type: ignore[attr-defined]
        assert pool._pre_ping is True  # type: ignore[attr-defined]  # on by default on servers
        assert _connect_timeout(storage) == 3
        assert "pool_size" not in storage.url and "connect_timeout" not in storage.url
        optuna.create_study(storage=storage, study_name="s").optimize(
            lambda t: t.suggest_float("x", 0, 1), n_trials=2
        )
    finally:
        storage.engine.dispose()


def test_a_server_gets_a_connect_timeout_and_pre_ping_by_default(server_db: str) -> None:
    storage = open_storage(server_db)
    try:
        assert _connect_timeout(storage) == CONNECT_TIMEOUT_S
        assert storage.engine.pool._pre_ping is True  # type: ignore[attr-defined]
    finally:
        storage.engine.dispose()


def test_the_drivers_own_keys_stay_in_the_url(postgres_db: str, mysql_db: str) -> None:
    pg = open_storage(f"{postgres_db}?application_name=bo-worker&pool_size=1")
    my = open_storage(f"{mysql_db}?charset=latin1&pool_pre_ping=false")
    try:
        with pg.engine.connect() as connection:
            name = connection.exec_driver_sql("SELECT current_setting('application_name')")
            assert name.scalar() == "bo-worker"
        with my.engine.connect() as connection:
            charset = connection.exec_driver_sql("SELECT @@character_set_client").scalar()
            assert charset == "latin1"
        assert my.engine.pool._pre_ping is False  # type: ignore[attr-defined]
    finally:
        pg.engine.dispose()
        my.engine.dispose()


def test_the_url_wins_over_the_options_mapping(mysql_db: str) -> None:
    storage = open_storage(f"{mysql_db}?connect_timeout=4", options={"connect_timeout": 9})
    try:
        assert _connect_timeout(storage) == 4  # the URL wins over the options mapping
    finally:
        storage.engine.dispose()


def test_heartbeat_timing_comes_from_the_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/h.db"
    assert heartbeat_settings(open_storage(url)) == (HEARTBEAT_INTERVAL_S, GRACE_PERIOD_S)
    assert heartbeat_settings(open_storage(f"{url}?heartbeat_interval=1&grace_period=4")) == (1, 4)
    # An interval alone keeps the default ratio (15 s / 45 s).
    assert heartbeat_settings(open_storage(f"{url}?heartbeat_interval=2")) == (2, 6)
    assert heartbeat_settings(open_storage(url, heartbeat=False)) == (None, None)
    opened = open_storage(f"{url}?grace_period=60", options={"heartbeat_interval": 5})
    assert heartbeat_settings(opened) == (5, 60)
    assert opened.get_heartbeat_interval() == 5 and opened.grace_period == 60


def test_heartbeat_settings_of_a_storage_made_elsewhere() -> None:
    assert heartbeat_settings(optuna.storages.InMemoryStorage()) == (None, None)
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        storage = optuna.storages.RDBStorage("sqlite:///:memory:", heartbeat_interval=3)
    assert heartbeat_settings(storage) == (3, 6)  # optuna's default grace: two intervals
    assert heartbeat_settings(optuna.storages.get_storage(storage)) == (3, 6)


def test_sqlite_takes_connect_timeout_as_its_lock_wait(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/t.db?connect_timeout=5")
    assert storage.engine_kwargs["connect_args"] == {"timeout": 5}
    assert "pool_pre_ping" not in storage.engine_kwargs


@pytest.mark.parametrize(
    ("query", "options", "match"),
    [
        ("pool_sise=3", None, r"Unknown storage option 'pool_sise'.*did you mean pool_size\?"),
        ("heartbeat_intervall=3", None, r"did you mean heartbeat_interval\?"),
        ("pool_size=abc", None, r"pool_size .* must be an integer >= 0 but got 'abc'"),
        ("pool_size=2.5", None, r"must be an integer"),
        ("max_overflow=-2", None, r"max_overflow .* must be an integer >= -1"),
        ("pool_pre_ping=maybe", None, r"pool_pre_ping .* must be true or false"),
        ("connect_timeout=0", None, r"connect_timeout .* must be an integer >= 1"),
        ("pool_timeout=nan", None, r"pool_timeout .* must be a number >= 0"),
        ("pool_size=1&pool_size=2", None, r"pool_size is given twice"),
        ("heartbeat_interval=5&grace_period=5", None, r"grace_period \(5 s\) must be longer"),
        ("", {"pool_szie": 2}, r"'pool_szie' in storage_options \(did you mean pool_size\?\)"),
        ("", {"charset": "utf8"}, r"Unknown storage option 'charset'.*the options are"),
        ("", {"pool_timeout": True}, r"pool_timeout in storage_options must be a number"),
        ("", {"heartbeat_interval": 1.5}, r"heartbeat_interval .* must be an integer"),
    ],
)
def test_a_bad_option_names_the_key_and_the_valid_ones(
    query: str, options: dict[str, Any] | None, match: str
) -> None:
    url = f"postgresql+psycopg2://bo:s3cret-pw@127.0.0.1:1/db?{query}"
    with pytest.raises(ConfigurationError, match=match) as info:
        open_storage(url, options=options)
    assert "s3cret-pw" not in str(info.value)


def test_the_valid_options_are_listed_in_the_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_storage_options({"size": 1})
    for key in ("pool_size", "max_overflow", "pool_timeout", "pool_recycle", "pool_pre_ping"):
        assert key in str(info.value)
    for key in ("connect_timeout", "heartbeat_interval", "grace_period"):
        assert key in str(info.value)


def test_options_need_a_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="apply to a storage URL"):
        open_storage(optuna.storages.InMemoryStorage(), options={"pool_size": 1})
    with pytest.raises(ConfigurationError, match="journal file .* takes none"):
        open_storage(str(tmp_path / "run.log"), options={"pool_size": 1})


def test_a_pool_option_sqlite_memory_cannot_take_is_a_clear_error() -> None:
    # An in-memory SQLite database has one connection per thread and no overflow.
    with pytest.raises(ConfigurationError, match="does not apply to sqlite:///:memory:"):
        open_storage("sqlite:///:memory:?max_overflow=2")
