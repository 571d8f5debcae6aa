"""Fixtures: SQLite storages for the stats tests, and one of real studies built per session.

SQLite commits here run with ``PRAGMA synchronous=OFF``: durability is not under test, and an
fsync per commit made building a few studies take seconds on this machine's disk.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from stats_tests._storage import add_study

from bilevel_optuna import _attrs


@event.listens_for(Engine, "connect")
def _sqlite_without_fsync(dbapi_connection: Any, connection_record: Any) -> None:
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.close()


@dataclass
class Db:
    """A fresh SQLite storage: its URL (what compare() gets) and an open storage to fill it."""

    url: str
    storage: optuna.storages.RDBStorage

    def add(self, name: str, values: list[Any], **kwargs: Any) -> optuna.Study:
        return add_study(self.storage, name, values, **kwargs)


@pytest.fixture(scope="session")
def _empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file with optuna's tables, created once (table creation takes a second)."""
    path = tmp_path_factory.mktemp("template") / "empty.db"
    optuna.storages.RDBStorage(f"sqlite:///{path}").remove_session()
    return path


@pytest.fixture
def db(tmp_path: Path, _empty_db: Path) -> Iterator[Db]:
    path = tmp_path / "edge.db"
    shutil.copy(_empty_db, path)
    url = f"sqlite:///{path}"
    storage = optuna.storages.RDBStorage(url)
    yield Db(url, storage)
    storage.remove_session()
    storage.engine.dispose()


# Arms differ by the box random search draws from; the optimum (1, -2) lies in all three.
DEMO_ARMS = {
    "near": ((0.0, 2.0), (-3.0, -1.0)),
    "mid": ((-3.0, 5.0), (-6.0, 2.0)),
    "far": ((-10.0, 10.0), (-10.0, 10.0)),
}
DEMO_SEEDS = range(8)
DEMO_TRIALS = 8


def build_demo(storage: str | optuna.storages.BaseStorage, *, prefix: str = "") -> list[str]:
    """Optimize (x - 1)^2 + (y + 2)^2 with seeded random search; store every study.

    Studies are optimized in memory and their trials added to ``storage`` with add_trials:
    the same trials as optimizing on the storage, four times faster on SQLite.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = []
    for arm, (bx, by) in DEMO_ARMS.items():
        for seed in DEMO_SEEDS:

            def objective(trial: optuna.Trial) -> float:
                x = trial.suggest_float("x", *bx)
                y = trial.suggest_float("y", *by)
                return (x - 1.0) ** 2 + (y + 2.0) ** 2

            work = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
            work.optimize(objective, n_trials=DEMO_TRIALS)
            name = f"{prefix}demo-{arm}-{seed}"
            stored = optuna.create_study(storage=storage, study_name=name)
            for key, value in {
                _attrs.KIND: "baseline",
                _attrs.RUN: f"{prefix}demo",
                _attrs.ARM: arm,
                _attrs.OBJECTIVE: "quadratic",
                _attrs.SEED: seed,
                _attrs.OPTIMUM: 0.0,
            }.items():
                stored.set_user_attr(key, value)
            stored.add_trials(work.trials)
            names.append(name)
    return names


@pytest.fixture(scope="session")
def demo_url(tmp_path_factory: pytest.TempPathFactory, _empty_db: Path) -> str:
    path = tmp_path_factory.mktemp("stats") / "demo.db"
    shutil.copy(_empty_db, path)
    url = f"sqlite:///{path}"
    storage = optuna.storages.RDBStorage(url)
    build_demo(storage)
    storage.engine.dispose()
    return url
