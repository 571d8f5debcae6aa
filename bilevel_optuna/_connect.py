"""From a storage URL to a connection: the dialect, the driver, and errors that say what to do.

A new user writes ``postgresql://`` or ``mysql://`` and has whichever driver their install
brought. SQLAlchemy then takes a fixed one (psycopg 3 for ``postgresql://`` since SQLAlchemy
2.1, psycopg2 before; mysqlclient for ``mysql://``) and fails with an ImportError when that one
is missing. Here a URL that names no driver gets an installed one instead, said at INFO, and
the error comes only when none is installed, with the pip command that installs one. A URL that
names its driver gets that driver or an error; it is never changed.

When the server refuses (no server at that address, no such database, a user it does not let
in), the driver's error becomes a :class:`~bilevel_optuna.exceptions.StorageError` that names
the problem and the fix, with the password hidden.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bilevel_optuna._logging import get_logger
from bilevel_optuna._transient import _causes
from bilevel_optuna._urls import hide_password
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.exceptions import StorageError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

_logger = get_logger(__name__)

# Schemes users write that SQLAlchemy does not know, and the one they mean.
_ALIASES = {
    "postgres": "postgresql",
    "pg": "postgresql",
    "psql": "postgresql",
    "pgsql": "postgresql",
    "sqlite3": "sqlite",
    "maria": "mariadb",
}
# For each server, its drivers in the order one is picked, with the pip name of each.
_DRIVERS = {
    "postgresql": (("psycopg", "psycopg[binary]"), ("psycopg2", "psycopg2-binary")),
    "mysql": (("pymysql", "pymysql"), ("mysqldb", "mysqlclient")),
    "mariadb": (("pymysql", "pymysql"), ("mysqldb", "mysqlclient")),
}
# The extra of this package that installs a driver for each server.
_EXTRAS = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql"}
_KNOWN = ("sqlite", "postgresql", "mysql", "mariadb")


def _label(url: URL) -> str:
    return hide_password(url.render_as_string(hide_password=False))


def _has_driver(url: URL) -> bool:
    dialect = url.get_dialect()
    try:
        dialect.import_dbapi()
    except ImportError:
        return False
    return True


def resolve_driver(url: URL) -> URL:
    """``url`` with a dialect SQLAlchemy knows and a driver that is installed.

    Raises:
        ConfigurationError: The scheme is no database SQLAlchemy knows, or the driver the URL
            names (or, naming none, every driver for its database) is not installed.
    """
    from sqlalchemy.exc import NoSuchModuleError

    backend = url.get_backend_name()
    explicit = "+" in url.drivername
    if backend in _ALIASES:
        fixed = url.set(drivername=url.drivername.replace(backend, _ALIASES[backend], 1))
        raise ConfigurationError(
            f"{backend}:// is not a database scheme SQLAlchemy knows; write "
            f"{_ALIASES[backend]}:// instead: {_label(fixed)}"
        )
    try:
        url.get_dialect()
    except NoSuchModuleError as err:
        if backend in _KNOWN:
            drivers = ", ".join(f"{backend}+{name}://" for name, _ in _DRIVERS.get(backend, ()))
            raise ConfigurationError(
                f"{url.get_driver_name()!r} is not a driver SQLAlchemy knows for {backend}; "
                f"use {drivers or f'{backend}://'} (or {backend}:// to pick an installed one)."
            ) from err
        raise ConfigurationError(
            f"{backend}:// in the storage URL {_label(url)} is not a database SQLAlchemy knows; "
            "use sqlite:///FILE.db, postgresql://user@host/db or mysql://user@host/db."
        ) from err
    if _has_driver(url):
        return url
    candidates = _DRIVERS.get(backend, ())
    installed = [
        name for name, _ in candidates if _has_driver(url.set(drivername=f"{backend}+{name}"))
    ]
    wanted = url.get_driver_name()
    pip_name = dict(candidates).get(wanted, wanted)
    if installed and not explicit:
        chosen = url.set(drivername=f"{backend}+{installed[0]}")
        _logger.info(
            "%s:// takes the driver %s, which is not installed; using %s, which is.",
            backend,
            wanted,
            f"{backend}+{installed[0]}://",
        )
        return chosen
    extra = _EXTRAS.get(backend, backend)
    if not explicit:
        raise ConfigurationError(
            f"No driver for {backend} is installed ({backend}:// takes {wanted}): "
            f"pip install 'bilevel-optuna[{extra}]'."
        )
    other = (
        f"use {backend}+{installed[0]}://, which is installed"
        if installed
        else f"pip install 'bilevel-optuna[{extra}]' and write {backend}://"
    )
    raise ConfigurationError(
        f"The driver {wanted} for {url.drivername}:// is not installed: "
        f"pip install '{pip_name}', or {other}."
    )


# Driver messages (PostgreSQL's libpq has no code on connection errors) -> the problem.
_PG_NO_DATABASE = re.compile(r'database "(?P<name>[^"]+)" does not exist')
_PG_UNREACHABLE = re.compile(
    r"Connection refused|could not translate host name|Name or service not known|"
    r"timeout expired|No route to host|Network is unreachable|Connection timed out"
)
_PG_DENIED = re.compile(
    r"password authentication failed|role \"[^\"]+\" does not exist|no pg_hba\.conf entry|"
    r"permission denied for database|no password supplied"
)
# MySQL/MariaDB client and server error numbers.
_MYSQL_NO_DATABASE = {1049}
_MYSQL_UNREACHABLE = {2002, 2003, 2005, 2013}
_MYSQL_DENIED = {1044, 1045, 1698}


def _driver_error(err: BaseException) -> tuple[int | None, str]:
    """The driver's error number (MySQL) and the first line of its message."""
    for cause in _causes(err):
        if type(cause).__module__.split(".")[0] in ("sqlalchemy", "optuna"):
            continue
        number = cause.args[0] if cause.args and isinstance(cause.args[0], int) else None
        text = str(cause.args[1]) if number is not None and len(cause.args) > 1 else str(cause)
        return number, text.strip().splitlines()[0] if text.strip() else type(cause).__name__
    return None, str(err).strip().splitlines()[0]


def connection_error(err: BaseException, url: URL) -> StorageError:
    """What to tell a user whose storage URL the server refused with ``err``."""
    number, text = _driver_error(err)
    host = f"{url.host or 'localhost'}" + (f":{url.port}" if url.port else "")
    database = url.database or ""
    where = f"the storage URL {_label(url)}"
    missing = _PG_NO_DATABASE.search(text)
    if number in _MYSQL_NO_DATABASE or missing:
        name = missing.group("name") if missing else database
        server = url.host or "localhost"
        if url.get_backend_name() == "postgresql":
            port = f" -p {url.port}" if url.port else ""
            user = url.username or "postgres"
            command = f"psql -h {server}{port} -U {user} -d postgres -c 'CREATE DATABASE {name}'"
        else:
            port = f" -P {url.port}" if url.port else ""
            command = (
                f"mysql -h {server}{port} -u {url.username or 'root'} -e 'CREATE DATABASE {name}'"
            )
        return StorageError(
            f"The database {name!r} does not exist on {host}. Create it once ({command}), "
            f"or name an existing database in {where}."
        )
    if number in _MYSQL_UNREACHABLE or _PG_UNREACHABLE.search(text):
        return StorageError(
            f"Cannot reach a database server at {host} ({text}). Check the host and port in "
            f"{where}, that the server runs, and that it accepts TCP connections from here."
        )
    if number in _MYSQL_DENIED or _PG_DENIED.search(text):
        return StorageError(
            f"The database server at {host} refused user {url.username or ''!r} ({text}). "
            f"Check the user and password in {where}, and that this user may use the database "
            f"{database!r} from this machine."
        )
    return StorageError(f"Could not open {where}: {text}")
