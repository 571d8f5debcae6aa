"""Benchmark: one bilevel run spread over 1, 2, 4 and 8 worker processes, and a kill -9.

    python benchmarks/workers.py                        # everything, ~10 min on 2 cores
    python benchmarks/workers.py --backends postgresql --workers 1,8 --no-kill
    python benchmarks/workers.py --report               # the table of what is recorded

The run: 8 outer trials x 2 repeats x 4 inner trials on ``sleep-branin`` (Branin that sleeps
1 s per trial, so that eight workers on two cores wait rather than compute), baselines random
and TPE, no pruning, proposer ``uniform`` (the null chat model: instant, no tokens). The work
is 20 inner studies of 4 trials, 80 s of sleep in all. A trial costs a worker about 0.3-0.5 s
of CPU besides its sleep on this machine (the sampler and its stored records, Optuna's ORM, the
claims; the databases run on the same two cores), so a shorter sleep makes eight workers
CPU-bound and measures the cores, not the distribution.

Each configuration gets a fresh database (PostgreSQL, MariaDB) or file (SQLite). The workers
are separate processes, exactly as on separate servers: one ``bilevel-optuna run SPEC`` and
``N - 1`` ``bilevel-optuna worker --storage URL --run NAME --model uniform``. Every process
imports the package first (3-4 s of CPU each, which eight processes on two cores would
otherwise spread over the first seconds) and then waits; the clock starts when all are told to
go at once, and stops when every task of the run is done. The creator starts the run; the other
workers join as soon as its tasks are in the database.

Per configuration, from the storage and the processes:

- wall: from go to the last task done; speed-up: the one-worker wall over this one;
- SQL ms/trial: time inside SQL statements (SQLAlchemy cursor events, every process, heartbeats
  included) per finished inner trial; overhead ms/trial: ``(N x wall - sleep) / trials``, what
  a trial costs a worker beyond its sleep (proposer, samplers, storage, waiting for work);
- lost and duplicated: finished inner trials per inner study against the budget (short = lost,
  over = duplicated), inner studies against the plan, outer trials against the budget, and
  tasks claimed more than once.

The kill: 4 workers; once a third of the inner studies are done, ``kill -9`` of a ``worker``
process that holds an inner study; recovery is the time from the kill until another worker has
claimed that study (the heartbeat grace period, 4 s here, plus the claim poll), the penalty the
wall time over the same run without the kill.

Each result is appended to ``--results`` (JSON lines), so a stopped benchmark resumes where it
stopped; ``--report`` prints the tables from it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BACKENDS = ("postgresql", "mysql", "sqlite")
SERVER_URLS = {
    "postgresql": "postgresql+psycopg2://postgres@127.0.0.1:5432/{db}",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/{db}",
}
ADMIN_URLS = {
    "postgresql": "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
}
INNER_KINDS = ("inner", "baseline", "heldout")
SPEC = """\
[run]
name = "{name}"
storage = "{url}"
model = "uniform"
seed = 0

[inner]
objectives = [{{name = "sleep", base = "branin", seconds = {seconds}}}]
n_trials = {inner}
n_repeats = {repeats}

[outer]
n_trials = {outer}
sampler = "tpe"
aggregate = "regret"
prune = false
baselines = ["random", "tpe"]

[outer.space]
temperature = {{type = "float", low = 0.2, high = 1.2}}
history_size = {{type = "int", low = 5, high = 15}}
mechanisms = ["tabu", "orthogonal", "trust_region"]
max_mechanisms = 2
"""


# ----------------------------------------------------------------------------- a child process
def child(role: str, ready: str, stats: str, argv: list[str], url: str, run: str) -> int:
    """One worker process: import everything, say ready, wait for go, then run the CLI.

    ``role`` is ``run`` (the creator) or ``worker`` (waits until the run's tasks exist, since
    ``bilevel-optuna worker`` refuses a run that is not in the storage yet).
    """
    import importlib

    import sqlalchemy as sa
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from bilevel_optuna import cli

    for module in (  # what the subcommands import lazily
        "bilevel_optuna.cli._run",
        "bilevel_optuna.cli._worker",
        "bilevel_optuna.studies",
        "bilevel_optuna.chat._uniform",
        "bilevel_optuna.objectives",
        "psycopg2",
        "pymysql",
    ):
        try:
            importlib.import_module(module)
        except ImportError:
            pass

    sql = {"seconds": 0.0, "statements": 0}

    @event.listens_for(Engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: Any, params: Any, context: Any, many: Any):
        conn.info.setdefault("bench_t0", []).append(time.perf_counter())

    @event.listens_for(Engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: Any, params: Any, context: Any, many: Any):
        sql["seconds"] += time.perf_counter() - conn.info["bench_t0"].pop()
        sql["statements"] += 1

    Path(ready).write_text(str(os.getpid()))
    sys.stdin.readline()  # go
    if role == "worker":
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        while True:
            try:
                with engine.connect() as conn:
                    n = conn.execute(
                        sa.text("SELECT COUNT(*) FROM bilevel_tasks WHERE run = :r"), {"r": run}
                    ).scalar_one()
                if n:
                    break
            except sa.exc.DBAPIError:
                pass  # the table is not there yet
            time.sleep(0.05)
        engine.dispose()
        sql.update(seconds=0.0, statements=0)  # the wait is not the run's
    rc = cli.main(argv)
    Path(stats).write_text(json.dumps(sql))
    return rc


# ----------------------------------------------------------------------------- databases
def create_database(backend: str, workdir: Path) -> tuple[str, str]:
    """A fresh database: ``(name, url)``."""
    name = f"bo_bench_{uuid.uuid4().hex[:10]}"
    if backend == "sqlite":
        return name, f"sqlite:///{workdir / (name + '.db')}"
    import sqlalchemy as sa

    engine = sa.create_engine(ADMIN_URLS[backend], isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return name, SERVER_URLS[backend].format(db=name)


def drop_database(backend: str, name: str) -> None:
    if backend == "sqlite":
        return  # in the temporary folder
    import sqlalchemy as sa

    engine = sa.create_engine(ADMIN_URLS[backend], isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
    engine.dispose()


def read_tasks(engine: Any, run: str) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    query = sa.text(
        "SELECT task_key, kind, state, worker, attempts FROM bilevel_tasks WHERE run = :r"
    )
    try:
        with engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query, {"r": run})]
    except sa.exc.DBAPIError:
        return []  # not created yet


# ----------------------------------------------------------------------------- one configuration
def measure(
    backend: str, n_workers: int, args: argparse.Namespace, *, kill: bool = False
) -> dict[str, Any]:
    import optuna
    import sqlalchemy as sa
    from optuna.trial import TrialState

    workdir = Path(tempfile.mkdtemp(prefix="bo-workers-"))
    db, url = create_database(backend, workdir)
    run = f"workers-{backend}-{n_workers}{'-kill' if kill else ''}"
    spec = workdir / "spec.toml"
    spec.write_text(
        SPEC.format(
            name=run,
            url=url,
            seconds=args.seconds,
            inner=args.inner,
            repeats=args.repeats,
            outer=args.outer,
        )
    )
    worker_url = url + ("?" + args.url_options if args.url_options else "")
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    for i in range(n_workers):
        role = "run" if i == 0 else "worker"
        argv = (
            ["run", str(spec), "--storage", worker_url, "--model", "uniform", "-q", "--no-progress"]
            if role == "run"
            else ["worker", "--storage", worker_url, "--run", run, "--model", "uniform"]
        )
        command = [
            sys.executable,
            __file__,
            "--child",
            json.dumps(
                {
                    "role": role,
                    "ready": str(workdir / f"ready-{i}"),
                    "stats": str(workdir / f"stats-{i}.json"),
                    "argv": argv,
                    "url": url,
                    "run": run,
                }
            ),
        ]
        log = open(workdir / f"log-{i}.txt", "wb")
        procs.append(
            (
                role,
                subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log, stderr=log),
            )
        )
    try:
        while not all((workdir / f"ready-{i}").exists() for i in range(n_workers)):
            dead = [p for _, p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a worker died before it was ready; see {workdir}/log-*.txt")
            time.sleep(0.05)
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        start = time.perf_counter()
        for _, proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.close()
        killed: dict[str, Any] = {}
        done_at = None
        while done_at is None:
            time.sleep(0.25)
            tasks = read_tasks(engine, run)
            inner = [t for t in tasks if t["kind"] in INNER_KINDS]
            finished = [t for t in inner if t["state"] in ("done", "cancelled")]
            if tasks and all(t["state"] in ("done", "cancelled") for t in tasks):
                # Every planned slot and study is in and done (slots create their studies).
                outer = [t for t in tasks if t["kind"] == "outer"]
                if len(outer) == args.outer and len(inner) >= planned_studies(args):
                    done_at = time.perf_counter() - start
            if kill and not killed and len(finished) * 3 >= planned_studies(args):
                killed = kill_one(procs, inner)
                if killed:
                    killed["at"] = time.perf_counter() - start
            if killed and "reclaimed" not in killed:
                row = next(t for t in inner if t["task_key"] == killed["task"])
                if row["attempts"] > killed["attempts"]:
                    killed["reclaimed"] = time.perf_counter() - start
            if time.perf_counter() - start > args.timeout:
                raise RuntimeError(f"{run} did not finish in {args.timeout} s; see {workdir}")
        for _, proc in procs:
            proc.wait(timeout=args.timeout)
        exit_at = time.perf_counter() - start
        codes = [p.returncode for _, p in procs]
        tasks = read_tasks(engine, run)
        engine.dispose()

        storage = optuna.storages.RDBStorage(url)
        trials = finished_trials = failed = 0
        short = over = 0
        studies = 0
        n_outer = 0
        for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
            kind = summary.user_attrs.get("bilevel:kind")
            states = [
                t.state for t in storage.get_all_trials(summary._study_id, deepcopy=False)
            ]
            if summary.study_name == run:
                n_outer = states.count(TrialState.COMPLETE)
            elif kind in INNER_KINDS:
                studies += 1
                complete = states.count(TrialState.COMPLETE)
                finished_trials += complete
                failed += states.count(TrialState.FAIL)
                short += max(args.inner - complete, 0)
                over += max(complete - args.inner, 0)
            trials += len(states)
        storage.remove_session()
        storage.engine.dispose()
        sql = [
            json.loads(p.read_text())
            for p in sorted(workdir.glob("stats-*.json"))
        ]
        sleep = finished_trials * args.seconds
        row = {
            "backend": backend,
            "workers": n_workers,
            "kill": kill,
            "wall_s": round(done_at, 2),
            "exit_s": round(exit_at, 2),
            "exit_codes": codes,
            "inner_studies": studies,
            "planned_studies": planned_studies(args),
            "outer_trials": n_outer,
            "finished_inner_trials": finished_trials,
            "failed_inner_trials": failed,
            "lost_trials": short + max(planned_studies(args) - studies, 0) * args.inner,
            "duplicated_trials": over,
            "extra_outer_trials": max(n_outer - args.outer, 0),
            "reclaimed_tasks": sum(max(t["attempts"] - 1, 0) for t in tasks),
            "sql_s": round(sum(s["seconds"] for s in sql), 3),
            "sql_statements": sum(s["statements"] for s in sql),
            "sleep_s": sleep,
            "overhead_ms_per_trial": round(
                1000 * (n_workers * done_at - sleep) / max(finished_trials, 1), 1
            ),
            "sql_ms_per_trial": round(
                1000 * sum(s["seconds"] for s in sql) / max(finished_trials, 1), 1
            ),
            "killed": killed,
        }
        return row
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if not args.keep:
            drop_database(backend, db)


def planned_studies(args: argparse.Namespace) -> int:
    return (args.outer + 2) * args.repeats  # outer trials and the two baselines, per repeat


def kill_one(procs: list[tuple[str, Any]], inner: list[dict[str, Any]]) -> dict[str, Any]:
    """``kill -9`` a ``worker`` process that holds an inner study; what it held."""
    for role, proc in procs[1:]:
        if role != "worker" or proc.poll() is not None:
            continue
        held = [
            t
            for t in inner
            if t["state"] == "running" and f":{proc.pid}:" in (t["worker"] or "")
        ]
        if held:
            os.kill(proc.pid, signal.SIGKILL)
            return {"pid": proc.pid, "task": held[0]["task_key"], "attempts": held[0]["attempts"]}
    return {}


# ----------------------------------------------------------------------------- the tables
def report(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| storage | workers | wall s | speed-up | SQL ms/trial | overhead ms/trial | "
        "inner studies | outer trials | lost | duplicated | claimed again | exit != 0 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = {r["backend"]: r["wall_s"] for r in rows if r["workers"] == 1 and not r["kill"]}
    for r in rows:
        if r["kill"]:
            continue
        speed = f"{base[r['backend']] / r['wall_s']:.2f}x" if r["backend"] in base else "-"
        lines.append(
            f"| {r['backend']} | {r['workers']} | {r['wall_s']:.1f} | {speed} | "
            f"{r['sql_ms_per_trial']:.1f} | {r['overhead_ms_per_trial']:.0f} | "
            f"{r['inner_studies']}/{r['planned_studies']} | {r['outer_trials']} | "
            f"{r['lost_trials']} | {r['duplicated_trials'] + r['extra_outer_trials']} | "
            f"{r['reclaimed_tasks']} | {sum(c != 0 for c in r['exit_codes'])} |"
        )
    kills = [r for r in rows if r["kill"]]
    if kills:
        lines += [
            "",
            "| storage | workers | killed at s | claimed again after s | wall s | penalty s | "
            "failed inner trials (retried) | lost | duplicated | exit != 0 (besides the killed) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        plain = {
            (r["backend"], r["workers"]): r["wall_s"] for r in rows if not r["kill"]
        }
        for r in kills:
            k = r["killed"]
            after = f"{k['reclaimed'] - k['at']:.1f}" if "reclaimed" in k else "never"
            ref = plain.get((r["backend"], r["workers"]))
            penalty = f"{r['wall_s'] - ref:+.1f}" if ref is not None else "-"
            lines.append(
                f"| {r['backend']} | {r['workers']} | {k.get('at', float('nan')):.1f} | "
                f"{after} | {r['wall_s']:.1f} | {penalty} | {r['failed_inner_trials']} | "
                f"{r['lost_trials']} | {r['duplicated_trials'] + r['extra_outer_trials']} | "
                f"{sum(c not in (0, -9) for c in r['exit_codes'])} |"
            )
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        conf = json.loads(sys.argv[2])
        return child(**conf)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--outer", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--inner", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--kill-backends", default="postgresql,mysql")
    parser.add_argument("--no-kill", action="store_true")
    parser.add_argument(
        "--url-options",
        default="heartbeat_interval=1&grace_period=4",
        help="storage URL query for the workers (heartbeat timing)",
    )
    parser.add_argument(
        "--results", default=str(Path(tempfile.gettempdir()) / "bilevel_optuna_workers.jsonl")
    )
    parser.add_argument("--fresh", action="store_true", help="forget recorded results")
    parser.add_argument("--report", action="store_true", help="only print the recorded tables")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()

    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    if args.fresh and results.exists():
        results.unlink()
    size = {k: getattr(args, k) for k in ("outer", "repeats", "inner", "seconds")}
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    rows = [r for r in rows if r.get("size") == size]
    if not args.report:
        plan = [(b, int(n), False) for b in args.backends.split(",") for n in args.workers.split(",")]
        if not args.no_kill:
            plan += [(b, 4, True) for b in args.kill_backends.split(",") if b]
        for backend, n, kill in plan:
            if any((r["backend"], r["workers"], r["kill"]) == (backend, n, kill) for r in rows):
                continue
            row = measure(backend, n, args, kill=kill)
            row["size"] = size
            row["date"] = datetime.date.today().isoformat()
            rows.append(row)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(
                f"  {backend} x{n}{' kill' if kill else ''}: {row['wall_s']:.1f} s, "
                f"codes {row['exit_codes']}",
                file=sys.stderr,
                flush=True,
            )
    rows.sort(key=lambda r: (BACKENDS.index(r["backend"]), r["kill"], r["workers"]))
    print(
        f"bilevel run of {args.outer} outer trials x {args.repeats} repeats x {args.inner} inner "
        f"trials of sleep-branin ({args.seconds:g} s), baselines random+tpe, proposer uniform; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print(f"Command: python benchmarks/workers.py {' '.join(sys.argv[1:])}".rstrip())
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
