"""The work-queue schema under Alembic, on SQLite, PostgreSQL and MariaDB: a fresh database at
head, the unversioned previous layout recognised and upgraded, a newer schema refused in one
line through the CLI."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from databases import fresh_database
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from bilevel_optuna._storage import open_storage
from bilevel_optuna.cli import main
from bilevel_optuna.exceptions import SchemaVersionError
from bilevel_optuna.exceptions import StorageError
from bilevel_optuna.studies._workqueue import DONE
from bilevel_optuna.studies._workqueue import WorkQueue
from bilevel_optuna.studies._workqueue import _schema
from bilevel_optuna.studies._workqueue._tables import metadata

@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    yield from fresh_database(request.param, "bo_schema", tmp_path)


def _previous_layout(engine: sa.Engine) -> None:
    """The tables as bilevel-optuna 0.1.0 made them with ``create_all`` (frozen here: what
    the package defines today may move on), with one waiting task and one stopped worker."""
    old = sa.MetaData()
    tasks = sa.Table(
        "bilevel_tasks",
        old,
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("run", sa.String(512), nullable=False, index=True),
        sa.Column("task_key", sa.String(1024), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("priority", sa.BigInteger, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, default=0),
        sa.Column("heartbeat", sa.Double, nullable=True),
        sa.Column("outer_trial", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    workers = sa.Table(
        "bilevel_workers",
        old,
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("run", sa.String(512), nullable=False, index=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("started", sa.Double, nullable=False),
        sa.Column("heartbeat", sa.Double, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("task_key", sa.String(1024), nullable=True),
        sa.Column("n_done", sa.Integer, nullable=False, default=0),
    )
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(tasks).values(
                id="a" * 40, run="run", task_key="old-task", kind="baseline", priority=0,
                payload="{}", state="waiting", attempts=0,
            )
        )
        conn.execute(
            sa.insert(workers).values(
                id="host:1:old", run="run", host="host", pid=1, started=0.0, heartbeat=0.0,
                state="stopped", n_done=3,
            )
        )


def _engine(url: str) -> sa.Engine:
    return open_storage(url).engine  # type: ignore[attr-defined,no-any-return]


def _versions(engine: sa.Engine, table: str) -> list[str]:
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(sa.text(f"SELECT version_num FROM {table}"))]


def _stamp(engine: sa.Engine, revision: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {_schema.VERSION_TABLE} SET version_num = :r"), {"r": revision})


def test_a_fresh_database_is_made_at_head_in_a_version_table_of_its_own(url: str) -> None:
    engine = _engine(url)
    optuna_revisions = _versions(engine, "alembic_version")
    WorkQueue(open_storage(url), "run")
    assert _versions(engine, _schema.VERSION_TABLE) == [_schema.head()]
    assert _versions(engine, "alembic_version") == optuna_revisions  # Optuna's, untouched
    # The migrations make exactly the tables this release reads and writes.
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": _schema.ours})
        assert compare_metadata(context, metadata) == []
    # A second process finds head and changes nothing.
    WorkQueue(open_storage(url), "run")
    assert _versions(engine, _schema.VERSION_TABLE) == [_schema.head()]


def test_processes_opening_a_fresh_database_at_once_all_find_it_at_head(url: str) -> None:
    engine = _engine(url)  # Optuna's tables first: the race under test is over ours
    storages = [open_storage(url) for _ in range(4)]
    barrier = threading.Barrier(len(storages))
    errors: list[BaseException] = []

    def open_queue(storage: object) -> None:
        barrier.wait()
        try:
            WorkQueue(storage, "run")  # type: ignore[arg-type]
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=open_queue, args=(s,)) for s in storages]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert _versions(engine, _schema.VERSION_TABLE) == [_schema.head()]


_OPENER = """
import pathlib, sys, time
from bilevel_optuna._storage import open_storage
from bilevel_optuna.studies._workqueue import WorkQueue
url, folder, n, me = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
storage = open_storage(url)
(folder / me).touch()
while len(list(folder.iterdir())) < n:  # all imported: open the queue together
    time.sleep(0.01)
WorkQueue(storage, "run")
"""


def test_processes_racing_to_create_the_tables_all_succeed(url: str, tmp_path: Path) -> None:
    engine = _engine(url)
    folder = tmp_path / "ready"
    folder.mkdir()
    n = 3
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER, url, str(folder), str(n), str(k)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(n)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * n, errors
    assert _versions(engine, _schema.VERSION_TABLE) == [_schema.head()]


def test_the_previous_layout_is_recognised_and_stamped_with_its_rows_kept(url: str) -> None:
    engine = _engine(url)
    _previous_layout(engine)
    assert _schema.current_revision(engine) == _schema.BASELINE
    queue = WorkQueue(open_storage(url), "run")
    assert _versions(engine, _schema.VERSION_TABLE) == [_schema.BASELINE]
    claim = queue.claim_next("new")
    assert claim is not None and claim.task.key == "old-task"
    assert queue.finish(claim)
    assert queue.tasks()[0].state == DONE
    assert [w["n_done"] for w in queue.workers()] == [3]


def test_storage_upgrade_brings_the_previous_layout_to_head(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = _engine(url)
    _previous_layout(engine)
    assert main(["storage", "upgrade", "--storage", url]) == 0
    assert _versions(engine, _schema.VERSION_TABLE) == [_schema.head()]
    assert "Stamped the work-queue tables" in capsys.readouterr().out
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": _schema.ours})
        assert compare_metadata(context, metadata) == []
    (task,) = WorkQueue(open_storage(url), "run").tasks()
    assert task.key == "old-task"
    # Run again: nothing to do, and it says so.
    assert main(["storage", "upgrade", "--storage", url]) == 0
    assert "already" in capsys.readouterr().out


def test_storage_upgrade_creates_the_tables_in_a_fresh_database(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["storage", "upgrade", "--storage", url]) == 0
    assert "Created the work-queue tables" in capsys.readouterr().out
    assert _versions(_engine(url), _schema.VERSION_TABLE) == [_schema.head()]


def test_a_newer_schema_stops_a_worker_with_one_line_naming_the_upgrade(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = _engine(url)
    WorkQueue(open_storage(url), "run")
    _stamp(engine, "9999_from_the_future")
    with pytest.raises(SchemaVersionError):
        WorkQueue(open_storage(url), "run")
    assert main(["worker", "--storage", url, "--run", "run"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "9999_from_the_future" in err and "pip install -U bilevel-optuna" in err
    # The upgrade command refuses it too, rather than guessing.
    assert main(["storage", "upgrade", "--storage", url]) == 1
    assert "9999_from_the_future" in capsys.readouterr().err
    assert _versions(engine, _schema.VERSION_TABLE) == ["9999_from_the_future"]


def test_an_older_schema_names_the_storage_upgrade_command() -> None:
    url = "postgresql://alice:***@db/runs"
    message = _schema.problem(
        "0001_work_queue", url=url, latest="0002_next", known={"0001_work_queue", "0002_next"}
    )
    assert message is not None and "\n" not in message
    assert f"`bilevel-optuna storage upgrade --storage {url}`" in message
    assert _schema.problem("0002_next", url=url, latest="0002_next", known={"0002_next"}) is None
    assert _schema.problem(None, url=url) is None  # no tables yet: made at head
    assert issubclass(SchemaVersionError, StorageError)


def test_the_migrations_ship_in_the_package_data() -> None:
    # setup.cfg's package_data must name every file Alembic reads, or a wheel lacks them.
    import configparser
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    assert "bilevel_optuna.studies._workqueue" in config["options"]["packages"].split()
    data = config["options.package_data"]["bilevel_optuna.studies._workqueue"]
    queue = root / "studies" / "_workqueue"
    shipped = {p for pattern in data.replace(",", " ").split() for p in queue.glob(pattern)}
    needed = {p for p in (queue / "_migrations").rglob("*") if p.is_file()}
    needed = {p for p in needed if "__pycache__" not in p.parts}
    assert needed and needed <= shipped, sorted(str(p) for p in needed - shipped)


def test_storage_upgrade_refuses_a_journal_file_in_one_line(
    tmp_path, capsys: pytest.CaptureFixture[str]  # type: ignore[no-untyped-def]
) -> None:
    assert main(["storage", "upgrade", "--storage", str(tmp_path / "runs.log")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a database" in err
