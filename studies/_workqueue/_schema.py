"""The work-queue tables' schema version: Alembic migrations shipped in the package.

Optuna versions its own tables with Alembic (``alembic_version``); the work queue's tables
(``bilevel_tasks``, ``bilevel_workers``, see ``_tables``) live in the same database and are
versioned the same way, in a version table of their own (:data:`VERSION_TABLE`), by the
migrations in ``_migrations/versions``.

What a process finds when it opens the queue:

- no table of ours: a fresh database, created at the newest revision (head);
- the tables and no version row: the layout made before the schema was versioned (revision
  :data:`BASELINE`), stamped so when that is head, else too old (below);
- head: used as it is;
- an older revision: it stops with :class:`~bilevel_optuna.exceptions.SchemaVersionError`,
  naming ``bilevel-optuna storage upgrade --storage URL``;
- a revision this release does not know (a newer release made it): it stops and names the
  upgrade of the package.

Why Alembic rather than a version number of our own: it is already installed with Optuna, it
writes each dialect's DDL (SQLite's table rebuilds included), and its version table is the
record a database administrator already knows how to read.
"""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path

from typing import TYPE_CHECKING

import sqlalchemy as sa

from bilevel_optuna._logging import get_logger
from bilevel_optuna._urls import hide_password
from bilevel_optuna._version import __version__
from bilevel_optuna.exceptions import SchemaVersionError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

# Alembic is imported by the functions that use it: Optuna's RDBStorage loads it anyway, but
# `import bilevel_optuna` (the CLI's --help, a journal or in-memory storage) need not.

_logger = get_logger(__name__)

#: Our version table: not Optuna's ``alembic_version``, which holds Optuna's own revision.
VERSION_TABLE = "bilevel_alembic_version"
#: The revision of the tables made before the schema was versioned (``create_all``).
BASELINE = "0001_work_queue"
#: The tables whose presence, without a version row, marks the previous layout.
TABLES = ("bilevel_tasks", "bilevel_workers")
UPGRADE_COMMAND = "bilevel-optuna storage upgrade --storage {url}"
_MIGRATIONS = Path(__file__).with_name("_migrations")
# Several processes may open a fresh database at once; all but one fail to create the tables
# and wait this long for the one that succeeds to write the version row.
_CREATE_WAIT_S = 30.0
# Alembic's ``context`` and ``op`` are module-level proxies: one migration at a time per process
# (threads of one process, e.g. workers started in-process, would otherwise share them).
_ALEMBIC = threading.Lock()


def _config(connection: sa.Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@functools.cache
def _script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def head() -> str:
    """The newest revision this release knows."""
    revision = _script().get_current_head()
    assert revision is not None, "the package ships no migration"
    return revision


def known_revisions() -> set[str]:
    return {script.revision for script in _script().walk_revisions()}


def current_revision(engine: sa.Engine) -> str | None:
    """The database's revision; :data:`BASELINE` for tables made before versioning; None for
    a database without our tables."""
    versioned, tables = _read(engine)
    return versioned if versioned is not None or not tables else BASELINE


def _read(engine: sa.Engine) -> tuple[str | None, bool]:
    """The revision in our version table (None if none) and whether our tables exist."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        versioned = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()
        return versioned, versioned is not None or sa.inspect(conn).has_table(TABLES[0])


def ours(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's ``include_name`` filter: our tables only (autogenerate would otherwise see
    Optuna's tables in the same database and propose to drop them)."""
    return type_ != "table" or name in TABLES


def problem(
    current: str | None,
    *,
    url: str,
    latest: str | None = None,
    known: set[str] | None = None,
) -> str | None:
    """What stops a process that meets revision ``current``, in one line, or None.

    ``latest`` and ``known`` are this release's head and revisions unless given.
    """
    latest = head() if latest is None else latest
    known = known_revisions() if known is None else known
    if current is None or current == latest:
        return None
    if current not in known:
        return (
            f"The work-queue tables in {url} are at schema revision {current!r}, which "
            f"bilevel-optuna {__version__} does not know (a newer release made them): upgrade "
            "bilevel-optuna here (pip install -U bilevel-optuna) to join this database."
        )
    return (
        f"The work-queue tables in {url} are at schema revision {current!r}, older than "
        f"{latest!r} of bilevel-optuna {__version__}: stop the workers of the older release "
        f"and run `{UPGRADE_COMMAND.format(url=url)}`."
    )


def ensure_schema(engine: sa.Engine) -> None:
    """Make the work-queue tables at head in a fresh database, stamp the unversioned layout of
    the baseline, and stop with :class:`SchemaVersionError` on any other revision but head."""
    url = _label(engine)
    try:
        versioned, tables = _read(engine)
    except sa.exc.DBAPIError:  # MariaDB: a table another process is creating cannot be read
        versioned, tables = _wait_for_version(engine, url), True
    if versioned is None:
        # A fresh database, or the previous layout: the version row is written here, if the
        # previous layout is this release's head.
        message = problem(BASELINE if tables else None, url=url)
        if message is not None:
            raise SchemaVersionError(message)
        try:
            _logger.info(upgrade(engine))
            return
        except sa.exc.DBAPIError:  # another process is doing the same: wait for its version row
            versioned = _wait_for_version(engine, url)
    message = problem(versioned, url=url)
    if message is not None:
        raise SchemaVersionError(message) from None


def _wait_for_version(engine: sa.Engine, url: str) -> str:
    """The version row another process is writing, once it is there (reads that fail while
    that process holds the tables are retried)."""
    deadline = time.monotonic() + _CREATE_WAIT_S
    while time.monotonic() < deadline:
        try:
            versioned = _read(engine)[0]
        except sa.exc.DBAPIError:
            versioned = None
        if versioned is not None:
            return versioned
        time.sleep(0.2)
    raise SchemaVersionError(
        f"The work-queue tables in {url} were not created within {_CREATE_WAIT_S:.0f} s by the "
        f"process creating them: run `{UPGRADE_COMMAND.format(url=url)}` once, then start again."
    )


def upgrade(engine: sa.Engine) -> str:
    """Bring the work-queue tables to head and say what was done, in one line: created (no
    tables), stamped (tables made before versioning), upgraded, or at head already. Raises
    :class:`SchemaVersionError` for a revision this release does not know."""
    from alembic import command

    url = _label(engine)
    latest = head()
    before = current_revision(engine)
    if before is not None and before not in known_revisions():
        raise SchemaVersionError(problem(before, url=url) or "")
    unversioned = before is not None and _read(engine)[0] is None
    if unversioned:
        _stamp(engine, BASELINE)
    with _ALEMBIC, engine.begin() as conn:
        command.upgrade(_config(conn), "head")
    if before is None:
        return f"Created the work-queue tables in {url} at schema revision {latest}."
    if unversioned:
        then = "" if BASELINE == latest else f", then upgraded them to {latest}"
        return (
            f"Stamped the work-queue tables in {url}, made before the schema was versioned, "
            f"as revision {BASELINE}{then}."
        )
    if before == latest:
        return f"The work-queue tables in {url} are at schema revision {latest} already."
    return f"Upgraded the work-queue tables in {url} from revision {before} to {latest}."


def ensure_storage_schema(storage: object) -> None:
    """:func:`ensure_schema` on a storage's database; nothing for a storage without one (a
    journal file or memory, whose claims live in the process)."""
    engine = getattr(storage, "engine", None)
    if isinstance(engine, sa.Engine):
        ensure_schema(engine)


def _label(engine: sa.Engine) -> str:
    return hide_password(engine.url.render_as_string(hide_password=False))


def _stamp(engine: sa.Engine, revision: str) -> None:
    from alembic import command

    with _ALEMBIC, engine.begin() as conn:
        command.stamp(_config(conn), revision)
