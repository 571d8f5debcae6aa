"""Time `bilevel_optuna.stats.compare` on 100 studies of 100 trials, on SQLite and PostgreSQL.

Builds the studies first (4 arms x 25 seeds, trials added in bulk with ``create_trial`` and
``Study.add_trials``; with SQLite's fsync and PostgreSQL's synchronous commit switched off for
the build only, since durability of throwaway data is not what is measured), then times:

- compare: ``compare(url, run=...)`` from a URL, so each call opens the storage and reads every
  study from it (the whole cost a user of ``bilevel-optuna compare`` pays), median of
  ``--repeat`` calls;
- read: the part of that spent reading the storage (``load_arms``);
- report: ``to_text()`` plus ``to_markdown()``;
- plots: ``plot()`` writing PNG and HTML (once; needs matplotlib and plotly).

Usage:
    python benchmarks/report_time.py                       # both backends
    python benchmarks/report_time.py --skip-postgres --studies 20 --trials 50
    python benchmarks/report_time.py --postgres postgresql+psycopg2://postgres@127.0.0.1:5432/test

The PostgreSQL studies are created under a unique run name and deleted afterwards.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import platform
import statistics
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from sqlalchemy import event
from sqlalchemy.engine import Engine

from bilevel_optuna import _attrs
from bilevel_optuna.stats import DegenerateDataWarning
from bilevel_optuna.stats import NoPowerWarning
from bilevel_optuna.stats import compare
from bilevel_optuna.stats import load_arms

ARMS = ("tpe", "random", "llm-level0", "outer-0003")
_FAST_BUILD = False


@event.listens_for(Engine, "connect")
def _no_sync_while_building(dbapi_connection: Any, connection_record: Any) -> None:
    if not _FAST_BUILD:
        return
    cursor = dbapi_connection.cursor()
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor.execute("PRAGMA synchronous=OFF")
    else:
        cursor.execute("SET synchronous_commit TO OFF")
    cursor.close()


@contextlib.contextmanager
def _fast_build() -> Iterator[None]:
    global _FAST_BUILD
    _FAST_BUILD = True
    try:
        yield
    finally:
        _FAST_BUILD = False


def build(url: str, run: str, n_studies: int, n_trials: int, *, threads: int = 1) -> float:
    """Create the studies (``threads`` at a time: a server takes parallel writers, SQLite
    does not); returns the seconds it took."""
    start = time.perf_counter()
    with _fast_build():
        storage = optuna.storages.RDBStorage(url)
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda i: _build_one(storage, run, i, n_trials), range(n_studies)))
        storage.engine.dispose()
    return time.perf_counter() - start


def _build_one(storage: optuna.storages.BaseStorage, run: str, i: int, n_trials: int) -> None:
    rng = np.random.default_rng(i)
    dist = {"x": FloatDistribution(-5.0, 5.0), "y": FloatDistribution(-5.0, 5.0)}
    arm = ARMS[i % len(ARMS)]
    repeat = i // len(ARMS)
    study = optuna.create_study(storage=storage, study_name=f"{run}-{arm}-{repeat:03d}")
    for key, value in {
        _attrs.KIND: "baseline",
        _attrs.RUN: run,
        _attrs.ARM: arm,
        _attrs.OBJECTIVE: "sphere",
        _attrs.SEED: repeat,
        _attrs.OPTIMUM: 0.0,
    }.items():
        study.set_user_attr(key, value)
    # Arms differ a little (narrower box, offset), so the tests have something to find.
    xy = rng.uniform(-5.0, 5.0, size=(n_trials, 2)) * (1.0 - 0.1 * (i % len(ARMS)))
    values = (xy**2).sum(axis=1) + 0.2 * (i % len(ARMS))
    study.add_trials(
        [
            optuna.trial.create_trial(
                value=float(v), params={"x": float(p[0]), "y": float(p[1])}, distributions=dist
            )
            for v, p in zip(values, xy)
        ]
    )


def clean(url: str, run: str) -> None:
    storage = optuna.storages.RDBStorage(url)
    for s in storage.get_all_studies():
        if s.user_attrs.get(_attrs.RUN) == run:
            optuna.delete_study(study_name=s.study_name, storage=storage)
    storage.engine.dispose()


def measure(url: str, run: str, repeat: int, plots_dir: Path | None) -> dict[str, float]:
    times: dict[str, list[float]] = {"compare": [], "read": [], "report": []}
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = compare(url, run=run)
        times["compare"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        load_arms(url, run=run)
        times["read"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        result.to_text()
        result.to_markdown()
        times["report"].append(time.perf_counter() - t0)
    out = {k: statistics.median(v) for k, v in times.items()}
    if plots_dir is not None:
        t0 = time.perf_counter()
        try:
            result.plot(plots_dir)
            out["plots"] = time.perf_counter() - t0
        except ImportError:
            out["plots"] = float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="compare() calls per backend")
    parser.add_argument("--postgres", default="postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--build-threads", type=int, default=4, help="PostgreSQL build writers")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", NoPowerWarning)
    warnings.simplefilter("ignore", DegenerateDataWarning)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        backends = []
        if not args.skip_sqlite:
            backends.append(("SQLite", f"sqlite:///{Path(tmp) / 'bench.db'}"))
        if not args.skip_postgres:
            backends.append(("PostgreSQL", args.postgres))
        for name, url in backends:
            run = f"bench-{uuid.uuid4().hex[:8]}"
            try:
                threads = 1 if name == "SQLite" else args.build_threads
                built = build(url, run, args.studies, args.trials, threads=threads)
                plots = None if args.no_plots else Path(tmp) / f"plots-{name}"
                timing = measure(url, run, args.repeat, plots)
            finally:
                if name == "PostgreSQL":
                    clean(url, run)
            rows.append((name, built, timing))

    print(
        f"compare() on {args.studies} studies x {args.trials} trials "
        f"({len(ARMS)} arms, paired by seed); median of {args.repeat} calls"
    )
    print(
        f"machine: {platform.machine()}, Python {platform.python_version()}, "
        f"optuna {optuna.__version__}"
    )
    header = (
        f"{'backend':<11} {'build s':>8} {'compare s':>10} {'  of it read s':>14} "
        f"{'report s':>9} {'plots s':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, built, t in rows:
        plots = t.get("plots", float("nan"))
        print(
            f"{name:<11} {built:8.1f} {t['compare']:10.2f} {t['read']:14.2f} "
            f"{t['report']:9.3f} {plots:8.2f}"
        )


if __name__ == "__main__":
    main()
