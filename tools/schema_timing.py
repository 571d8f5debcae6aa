"""What the versioned work-queue schema costs a process that opens the queue.

Times, on a SQLite file (and PostgreSQL/MariaDB when given), the median of ``--repeats`` runs
of: the check of a database at head (every run and worker pays it once), the creation of the
tables in a fresh database, the stamping of the previous layout, and, for comparison, the
``create_all`` the queue ran before the schema was versioned (on every open, tables there or
not).

Usage: python tools/schema_timing.py [--repeats 20] [--url postgresql+psycopg2://postgres@127.0.0.1:5432/]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from bilevel_optuna.studies._workqueue import _schema
from bilevel_optuna.studies._workqueue._tables import metadata


def _median_ms(setup: Callable[[], sa.Engine], run: Callable[[sa.Engine], object], n: int) -> float:
    times = []
    for _ in range(n):
        engine = setup()
        start = time.perf_counter()
        run(engine)
        times.append(time.perf_counter() - start)
        engine.dispose()
    return 1000 * statistics.median(times)


def measure(make_url: Callable[[], str], repeats: int) -> dict[str, float]:
    def fresh() -> sa.Engine:
        return sa.create_engine(make_url())

    def at_head() -> sa.Engine:
        engine = fresh()
        _schema.ensure_schema(engine)
        return engine

    def previous() -> sa.Engine:
        engine = fresh()
        metadata.create_all(engine)
        return engine

    return {
        "check at head": _median_ms(at_head, _schema.ensure_schema, repeats),
        "create at head (fresh)": _median_ms(fresh, _schema.ensure_schema, repeats),
        "stamp the previous layout": _median_ms(previous, _schema.ensure_schema, repeats),
        "before: create_all, tables there": _median_ms(previous, metadata.create_all, repeats),
        "before: create_all, fresh": _median_ms(fresh, metadata.create_all, repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--url", action="append", default=[], help="a server URL ending in /")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    targets: dict[str, Callable[[], str]] = {
        "sqlite": lambda: f"sqlite:///{folder}/{uuid.uuid4().hex}.db"
    }
    made: list[tuple[str, str]] = []
    for server in args.url:
        def new_database(server: str = server) -> str:
            name = f"bo_timing_{uuid.uuid4().hex[:8]}"
            admin = sa.create_engine(
                server + ("postgres" if server.startswith("postgresql") else ""),
                isolation_level="AUTOCOMMIT",
            )
            with admin.connect() as conn:
                conn.execute(sa.text(f"CREATE DATABASE {name}"))
            admin.dispose()
            made.append((server, name))
            return server + name

        targets[sa.make_url(server).get_backend_name()] = new_database
    print("| database | " + " | ".join(measure(targets["sqlite"], 1)) + " |")
    print("|---" * 6 + "|")
    try:
        for label, make_url in targets.items():
            row = measure(make_url, args.repeats)
            print(f"| {label} | " + " | ".join(f"{v:.1f} ms" for v in row.values()) + " |")
    finally:
        for server, name in made:
            admin = sa.create_engine(
                server + ("postgres" if server.startswith("postgresql") else ""),
                isolation_level="AUTOCOMMIT",
            )
            force = " WITH (FORCE)" if server.startswith("postgresql") else ""
            with admin.connect() as conn:
                conn.execute(sa.text(f"DROP DATABASE {name}{force}"))
            admin.dispose()


if __name__ == "__main__":
    main()
