"""The worker rows (studies/_workqueue/_workers.py): listed with their silence, stopped, and a
worker id of this machine told alive or gone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from databases import fresh_database

from bilevel_optuna._storage import open_storage
from bilevel_optuna.studies._workqueue import WorkQueue
from bilevel_optuna.studies._workqueue._workers import alive
from bilevel_optuna.studies._workqueue._workers import new_worker_id


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    yield from fresh_database(request.param, "bo_workers", tmp_path)


def test_workers_are_listed_with_their_silence(url: str) -> None:
    queue = WorkQueue(open_storage(url), "run", stale_after=30.0)
    queue.register_worker("host:1:abc", model="uniform")
    queue.beat_worker("host:1:abc", task_key="t", n_done=3)
    (row,) = queue.workers()
    assert row["model"] == "uniform" and row["n_done"] == 3 and row["task_key"] == "t"
    assert 0 <= row["silent_s"] < 5
    queue.stop_worker("host:1:abc")
    assert queue.workers()[0]["state"] == "stopped" and queue.workers()[0]["task_key"] is None
    assert WorkQueue(open_storage(url), "another run").workers() == []


def test_a_worker_id_names_this_host_and_process() -> None:
    host, pid, tag = new_worker_id().split(":")
    assert host == socket.gethostname()[:80] and int(pid) == os.getpid() and len(tag) == 8
    assert new_worker_id() != new_worker_id()


def test_a_worker_of_a_process_that_is_gone_is_not_alive() -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    assert not alive(f"here:{int(dead.stdout)}:0000")
    assert alive(f"here:{os.getpid()}:0000")  # this process: judged by its heartbeat
    assert alive("here:1:0000")  # pid 1 runs
    assert alive("not-an-id-of-ours")  # judged by its heartbeat
