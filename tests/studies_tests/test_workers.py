"""Workers across servers (issue 15): N workers, ``kill -9``, a cut-off server, clear errors.

Every test runs real ``bilevel-optuna`` processes against a fresh PostgreSQL or MariaDB
database of its own, with the instant ``uniform`` proposer and a sleeping Branin (so a repeat
lasts long enough to be interrupted) and heartbeats of 1 s with a grace period of 4 s from the
URL. The cut-off test puts the worker in its own network namespace (tests/netns.py) and takes
its link down.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from bilevel_optuna import _attrs

RUN = "faults"
N_OUTER = 3
N_REPEATS = 2
N_INNER = 5
BASELINES = ("random", "tpe")
HEARTBEAT = "heartbeat_interval=1&grace_period=4"
GRACE_S = 4
# Inner studies: one per (outer trial, repeat) and per (baseline, repeat), one objective.
N_INNER_STUDIES = (N_OUTER + len(BASELINES)) * N_REPEATS
# How long a whole run may take here (2 shared cores, Python start-up per process).
RUN_TIMEOUT_S = 120
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Outer trial attribute: the slot whose claim created it; inner trial attribute: its worker.
SLOT_ATTR = "bilevel:slot"
WORKER_ATTR = "bilevel:worker"

ADMIN = {
    "postgresql": "postgresql+psycopg2://postgres@127.0.0.1:5432/{db}",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/{db}",
}
BACKENDS = [
    pytest.param("postgresql", marks=pytest.mark.postgres, id="postgresql"),
    pytest.param("mysql", marks=pytest.mark.mysql, id="mariadb"),
]


# --- a fresh database per test ------------------------------------------------------------------


def _admin(backend: str, sql: str) -> None:
    if backend == "postgresql":
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
        conn.autocommit = True
    else:
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
    finally:
        conn.close()


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a database made for this test (and dropped after it); no query options."""
    backend = request.param
    name = f"bo_{uuid.uuid4().hex[:10]}"
    try:
        _admin(backend, f"CREATE DATABASE {name}")
    except Exception as err:  # the server is down or refuses: nothing to test against
        pytest.skip(f"{backend} at 127.0.0.1 is not usable: {err}")
    yield ADMIN[backend].format(db=name)
    force = " WITH (FORCE)" if backend == "postgresql" else ""
    _admin(backend, f"DROP DATABASE IF EXISTS {name}{force}")


def _with_heartbeat(url: str) -> str:
    return f"{url}?{HEARTBEAT}"


# --- processes ----------------------------------------------------------------------------------


def _spec(tmp_path: Path, seconds: float) -> Path:
    path = tmp_path / "faults.toml"
    path.write_text(
        f"""
[run]
name = "{RUN}"
model = "uniform"
seed = 0

[inner]
objectives = [{{name = "sleep", base = "branin", seconds = {seconds}}}]
n_trials = {N_INNER}
n_repeats = {N_REPEATS}

[outer]
n_trials = {N_OUTER}
sampler = "random"
prune = false
baselines = {list(BASELINES)!r}

[outer.space]
temperature = {{type = "float", low = 0.2, high = 1.2}}
history_size = {{type = "int", low = 5, high = 15}}
""".replace(
            "'", '"'
        ),
        encoding="utf-8",
    )
    return path


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bilevel_optuna", *args]


def _run_argv(spec: Path, url: str) -> list[str]:
    return _cli("run", str(spec), "--storage", url, "--quiet", "--no-progress")


def _worker_argv(url: str) -> list[str]:
    return _cli("worker", "--storage", url, "--run", RUN, "--model", "uniform")


Wrap = Callable[[list[str]], list[str]]


def _start(argv: list[str], log: Path, wrap: Wrap | None = None) -> Any:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = log.open("wb")
    return subprocess.Popen(
        wrap(argv) if wrap else argv, stdout=out, stderr=subprocess.STDOUT, env=env
    )


def _wait_all(procs: list[Any], logs: list[Path], timeout: float = RUN_TIMEOUT_S) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail(f"workers did not finish in {timeout} s:\n{_tails(logs)}")
    return codes


def _tails(logs: list[Path]) -> str:
    return "\n".join(
        f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
        for log in logs
        if log.exists()
    )


@pytest.fixture
def procs() -> Iterator[list[Any]]:
    """Processes a test starts; killed at the end if still running."""
    started: list[Any] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


# --- reading the stored run ---------------------------------------------------------------------


def _storage(url: str) -> optuna.storages.BaseStorage:
    from bilevel_optuna._storage import open_storage

    return open_storage(url, heartbeat=False)


def _task_rows(url: str) -> int:
    """Rows in the run's task table, read with SQL (opening an Optuna storage here would race
    the run's own creation of Optuna's tables)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            count = conn.execute(sqlalchemy.text("SELECT COUNT(*) FROM bilevel_tasks"))
            return int(count.scalar_one())
    finally:
        engine.dispose()


def _tasks(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    from bilevel_optuna.studies._workqueue import WorkQueue

    rows = WorkQueue(storage, RUN).tasks()
    return [row if isinstance(row, dict) else row.as_dict() for row in rows]


def _inner_studies(storage: optuna.storages.BaseStorage) -> list[optuna.study.StudySummary]:
    return [
        s
        for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
        if s.user_attrs.get(_attrs.RUN) == RUN and s.study_name != RUN
    ]


def _run_study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """The outer study and every inner study of the run."""
    return [RUN] + sorted(s.study_name for s in _inner_studies(storage))


def _trials(storage: optuna.storages.BaseStorage, name: str) -> list[optuna.trial.FrozenTrial]:
    study_id = storage.get_study_id_from_name(name)
    return storage.get_all_trials(study_id, deepcopy=False)


def _finished(trials: list[optuna.trial.FrozenTrial]) -> int:
    return sum(t.state in FINISHED for t in trials)


def _wait_for(what: str, check: Callable[[], Any], timeout: float, logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout
    error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            found = check()
        except Exception as err:  # the run's tables are not there yet
            found, error = None, err
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what} (last error: {error!r}):\n{_tails(logs)}")


def _running_inner_task(storage: optuna.storages.BaseStorage) -> dict[str, Any] | None:
    """A running inner task whose study has at least one finished trial (mid-repeat).

    At least two trials are still to come, so the repeat cannot end before the caller acts.
    """
    for task in _tasks(storage):
        if task["kind"] in ("inner", "baseline") and task["state"] == "running":
            try:
                trials = _trials(storage, task["key"])
            except KeyError:
                continue
            if 1 <= _finished(trials) <= N_INNER - 2:
                return task
    return None


def _values(storage: optuna.storages.BaseStorage) -> dict[tuple[str, int], float]:
    """Every COMPLETE inner trial's value, by (study name, trial number)."""
    return {
        (s.study_name, t.number): t.value
        for s in _inner_studies(storage)
        for t in _trials(storage, s.study_name)
        if t.state == TrialState.COMPLETE and t.value is not None
    }


def _check_complete_run(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    """The budget and no duplicates, checked on the stored run; the task rows."""
    outer = _trials(storage, RUN)
    states = [t.state for t in outer]
    assert sum(s in FINISHED for s in states) == N_OUTER, states
    assert not [s for s in states if s in (TrialState.RUNNING, TrialState.WAITING)], states

    tasks = _tasks(storage)
    assert [t for t in tasks if t["state"] != "done"] == [], "tasks left undone"
    slots = [t for t in tasks if t["kind"] == "outer"]
    assert len(slots) == N_OUTER, slots
    slot_trials = [t["outer_trial"] for t in slots]
    assert len(set(slot_trials)) == N_OUTER, f"two slots share an outer trial: {slots}"
    finished_numbers = {t.number for t in outer if t.state in FINISHED}
    assert set(slot_trials) == finished_numbers, (slots, finished_numbers)
    slot_of = [t.user_attrs.get(SLOT_ATTR) for t in outer if t.state in FINISHED]
    assert len(set(slot_of)) == N_OUTER, f"finished outer trials share a slot: {slot_of}"

    keys = [t["key"] for t in tasks if t["kind"] in ("inner", "baseline")]
    assert len(keys) == len(set(keys)) == N_INNER_STUDIES, keys
    studies = {s.study_name for s in _inner_studies(storage)}
    assert studies == set(keys), (sorted(studies), sorted(keys))
    for name in keys:
        trials = _trials(storage, name)
        # A trial failed by the heartbeat is retried: FAILs do not count against the budget.
        assert _finished(trials) == N_INNER, (name, [t.state.name for t in trials])
        assert not [t for t in trials if t.state == TrialState.RUNNING], name
    return tasks


# --- the harness --------------------------------------------------------------------------------


def _connect_argv(backend: str, host: str, port: int) -> list[str]:
    if backend == "postgresql":
        code = (
            "import psycopg2; c = psycopg2.connect(host=%r, port=%d, user='postgres', "
            "dbname='postgres', connect_timeout=3); cur = c.cursor(); cur.execute('select 1'); "
            "print(cur.fetchone()[0])" % (host, port)
        )
    else:
        code = (
            "import pymysql; c = pymysql.connect(host=%r, port=%d, user='root', "
            "connect_timeout=3); cur = c.cursor(); cur.execute('select 1'); "
            "print(cur.fetchone()[0])" % (host, port)
        )
    return [sys.executable, "-c", code]


@pytest.mark.netns
@pytest.mark.parametrize("backend", BACKENDS)
def test_netns_server_reaches_database_until_cut(
    backend: str, netns_servers: Callable[[], Any]
) -> None:
    server = netns_servers()
    port = 5432 if backend == "postgresql" else 3306
    host, fwd = server.address(port)
    argv = _connect_argv(backend, host, fwd)

    def connect() -> subprocess.CompletedProcess[str]:
        return server.run(argv, capture_output=True, text=True, timeout=30)

    # 127.0.0.1 inside the namespace is the namespace's own loopback: no database there.
    local = server.run(_connect_argv(backend, "127.0.0.1", port), capture_output=True, timeout=30)
    assert local.returncode != 0

    first = connect()
    assert (first.returncode, first.stdout.strip()) == (0, "1"), first.stderr
    server.cut()
    cut = connect()
    assert cut.returncode != 0, cut.stdout
    server.restore()
    again = connect()
    assert (again.returncode, again.stdout.strip()) == (0, "1"), again.stderr


_HOLD = """
import sys, time
{connect}
cur = c.cursor(); cur.execute("select 1"); cur.fetchall()
print("ready", flush=True)
sys.stdin.readline()
start = time.monotonic()
try:
    cur.execute("select 2"); cur.fetchall()
    print("answered", flush=True)
except Exception as err:
    print("failed", type(err).__name__, round(time.monotonic() - start, 1), flush=True)
"""
_CONNECT = {
    "postgresql": "import psycopg2; c = psycopg2.connect(host=%r, port=%d, user='postgres', "
    "dbname='postgres')",
    "mysql": "import pymysql; c = pymysql.connect(host=%r, port=%d, user='root')",
}


@pytest.mark.netns
@pytest.mark.parametrize("backend", BACKENDS)
def test_netns_cut_hangs_an_open_connection_until_it_fails(
    backend: str, netns_servers: Callable[[], Any]
) -> None:
    server = netns_servers()
    host, fwd = server.address(5432 if backend == "postgresql" else 3306)
    code = _HOLD.format(connect=_CONNECT[backend] % (host, fwd))
    proc = server.popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        server.cut()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        time.sleep(2)
        assert proc.poll() is None, "the query did not hang while the link was down"
        server.restore()
        # The database session was dropped at the cut: the next packet gets a reset.
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert out.split()[0] == "failed", out


@pytest.mark.netns
def test_netns_server_is_removed(netns_servers: Callable[[], Any]) -> None:
    import netns

    server = netns_servers()
    assert server.name in netns._namespaces()
    server.close()
    assert server.name not in netns._namespaces()
    link = subprocess.run(["ip", "link", "show", f"bo{server.n}h"], capture_output=True)
    assert link.returncode != 0


@pytest.mark.netns
def test_netns_removes_namespaces_of_dead_test_runs(netns_servers: Callable[[], Any]) -> None:
    import netns

    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = f"{netns.PREFIX}{gone.pid}-254"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        netns_servers()  # each new server clears the stale ones first
        assert stale not in netns._namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)


# --- the tests --------------------------------------------------------------------------


def test_three_workers_finish_the_budget_once(
    database: str, tmp_path: Path, procs: list[Any]
) -> None:
    url = _with_heartbeat(database)
    spec = _spec(tmp_path, seconds=0.2)
    logs = [tmp_path / f"{name}.log" for name in ("run", "worker-1", "worker-2")]
    procs.append(_start(_run_argv(spec, url), logs[0]))
    _wait_for("the run's tasks", lambda: _task_rows(database), 60, logs)
    storage = _storage(url)
    procs.extend(_start(_worker_argv(url), log) for log in logs[1:])

    assert _wait_all(procs, logs) == [0, 0, 0], _tails(logs)
    tasks = _check_complete_run(storage)
    workers = {t["worker"] for t in tasks if t["kind"] in ("inner", "baseline")}
    assert len(workers) >= 2, f"the work did not spread: {workers}"
    ran_by = {
        t.user_attrs[WORKER_ATTR]
        for s in _inner_studies(storage)
        for t in _trials(storage, s.study_name)
        if WORKER_ATTR in t.user_attrs  # baseline trials carry no worker (yet)
    }
    assert ran_by == workers, (ran_by, workers)
    assert "best proposer configuration" in logs[0].read_text()


def test_kill_9_mid_repeat_keeps_finished_values(
    database: str, tmp_path: Path, procs: list[Any]
) -> None:
    url = _with_heartbeat(database)
    spec = _spec(tmp_path, seconds=0.3)
    logs = [tmp_path / f"{name}.log" for name in ("run", "worker-1", "worker-2")]
    # Alone at first, so the running task found below is the run process's own.
    victim = _start(_run_argv(spec, url), logs[0])
    procs.append(victim)
    _wait_for("the run's tasks", lambda: _task_rows(database), 60, logs)
    storage = _storage(url)
    task = _wait_for("a repeat in progress", lambda: _running_inner_task(storage), 60, logs)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    before = _values(storage)
    assert before, "no finished inner trial before the kill"

    workers = [_start(_worker_argv(url), log) for log in logs[1:]]
    procs.extend(workers)
    assert _wait_all(workers, logs[1:]) == [0, 0], _tails(logs)

    _check_complete_run(storage)
    after = _values(storage)
    lost = {k: v for k, v in before.items() if after.get(k) != v}
    assert lost == {}, "finished values lost or changed by the kill"
    (again,) = [t for t in _tasks(storage) if t["key"] == task["key"]]
    assert again["attempts"] >= 2, again
    assert again["worker"] != task["worker"], (task, again)


@pytest.mark.netns
def test_cut_off_worker_is_replaced_and_writes_nothing_after(
    database: str, tmp_path: Path, procs: list[Any], netns_servers: Callable[[], Any]
) -> None:
    url = _with_heartbeat(database)
    spec = _spec(tmp_path, seconds=0.3)
    logs = [tmp_path / f"{name}.log" for name in ("cut-off", "worker-1", "worker-2")]
    server = netns_servers()
    # New connections wait out the cut (as on a network that comes back) instead of failing.
    remote_url = f"{server.url(url)}&connect_timeout=90"
    remote = _start(_run_argv(spec, remote_url), logs[0], wrap=server.command)
    procs.append(remote)
    _wait_for("the run's tasks", lambda: _task_rows(database), 60, logs)
    storage = _storage(url)
    task = _wait_for("a repeat in progress", lambda: _running_inner_task(storage), 60, logs)
    server.cut()
    cut_at = time.time()
    before = _values(storage)
    assert before, "no finished inner trial before the cut"

    workers = [_start(_worker_argv(url), log) for log in logs[1:]]
    procs.extend(workers)
    assert _wait_all(workers, logs[1:]) == [0, 0], _tails(logs)
    _check_complete_run(storage)
    (again,) = [t for t in _tasks(storage) if t["key"] == task["key"]]
    assert again["attempts"] >= 2, again
    assert again["worker"] != task["worker"], (task, again)
    late = [
        (name, t.number)
        for name in _run_study_names(storage)
        for t in _trials(storage, name)
        if t.user_attrs.get(WORKER_ATTR) == task["worker"]
        and t.state in FINISHED  # its trial running at the cut is failed by the others
        and t.datetime_complete is not None
        and t.datetime_complete.timestamp() > cut_at
    ]
    assert late == [], "the cut-off worker finished trials after the cut"
    finished = _snapshot(storage)

    server.restore()
    try:
        remote.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the cut-off worker did not exit after the link came back:\n{_tails(logs)}")
    # Back on the network, the cut-off worker wrote nothing: no trial, no value, no task.
    assert _snapshot(storage) == finished, _tails(logs[:1])
    after = _values(storage)
    assert {k: v for k, v in before.items() if after.get(k) != v} == {}


def _snapshot(storage: optuna.storages.BaseStorage) -> dict[str, Any]:
    """Every trial of the run (outer and inner) and every task row, as comparable values."""
    trials = {
        name: [
            (t.number, t.state.name, t.values, t.params, t.user_attrs)
            for t in _trials(storage, name)
        ]
        for name in _run_study_names(storage)
    }
    tasks = sorted((t["key"], t["state"], t["worker"], t["attempts"]) for t in _tasks(storage))
    return {"trials": trials, "tasks": tasks}


def test_unknown_run_is_one_clear_line(database: str) -> None:
    done = subprocess.run(
        _cli("worker", "--storage", database, "--run", "no-such-run", "--model", "uniform"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("bilevel-optuna worker: error:"), lines
    assert "no-such-run" in lines[0]


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql+psycopg2://postgres@127.0.0.1:1/test", id="pg-refused"),
        pytest.param("mysql+pymysql://root@127.0.0.1:1/test", id="mysql-refused"),
        pytest.param("mysql+pymysql://root@127.0.0.1:3306/bo_no_such_db", id="mysql-no-database"),
        pytest.param(
            "postgresql+psycopg2://postgres@127.0.0.1:5432/bo_no_such_db", id="pg-no-database"
        ),
        pytest.param("postgres://postgres@127.0.0.1:5432/test", id="bad-dialect"),
    ],
)
def test_wrong_url_is_one_clear_line(url: str) -> None:
    done = subprocess.run(
        _cli("worker", "--storage", url, "--run", RUN, "--model", "uniform"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert re.match(r"bilevel-optuna worker: error: .+", lines[0]), lines
    assert "Traceback" not in done.stderr
