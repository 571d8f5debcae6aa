"""``bilevel-optuna storage upgrade --storage URL``: bring the work-queue tables to this release.

A worker or run that meets work-queue tables of an older schema stops and names this command;
Optuna's own tables have theirs (``optuna storage upgrade``).
"""

from __future__ import annotations

import argparse
from typing import Any

from bilevel_optuna._storage import open_storage
from bilevel_optuna._storage import storage_label
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.studies._workqueue import upgrade_schema


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "storage", help="manage the schema of the work-queue tables in a database"
    )
    commands = parser.add_subparsers(dest="storage_command", metavar="STORAGE_COMMAND")
    commands.required = True
    up = commands.add_parser(
        "upgrade",
        help="upgrade the work-queue tables to this release's schema",
        description=(
            "Bring the work-queue tables (bilevel_tasks, bilevel_workers) in the database at "
            "URL to this release's schema: creates them in a database that has none, stamps "
            "those made before the schema was versioned, and runs every migration since. Stop "
            "the workers of older releases first."
        ),
    )
    up.add_argument("--storage", required=True, help="the database URL")
    up.set_defaults(func=_upgrade)


def _upgrade(args: argparse.Namespace) -> int:
    storage = open_storage(args.storage)
    engine = getattr(storage, "engine", None)
    if engine is None:
        raise ConfigurationError(
            f"{storage_label(args.storage)} is not a database: only an RDB storage (a "
            "sqlite://, postgresql:// or mysql:// URL) holds work-queue tables."
        )
    print(upgrade_schema(engine))
    return 0
