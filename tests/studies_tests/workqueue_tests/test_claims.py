"""The claim table (studies/_workqueue/_claims.py) on SQLite, PostgreSQL and MariaDB: one
claimant per task, fencing, takeover."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from databases import fresh_database

from bilevel_optuna._storage import open_storage
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.studies._workqueue import CANCELLED
from bilevel_optuna.studies._workqueue import DONE
from bilevel_optuna.studies._workqueue import RUNNING
from bilevel_optuna.studies._workqueue import WAITING
from bilevel_optuna.studies._workqueue import WorkQueue

@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    yield from fresh_database(request.param, "bo_work", tmp_path)


def _queue(url: str, stale_after: float = 30.0) -> WorkQueue:
    return WorkQueue(open_storage(url), "run", stale_after=stale_after)


def test_of_many_racing_claimants_exactly_one_gets_each_task(url: str) -> None:
    queue = _queue(url)
    for k in range(6):
        assert queue.add(f"task-{k}", kind="inner", priority=k, payload={"k": k})
    assert not queue.add("task-0", kind="inner", priority=0, payload={})  # already there
    claims: dict[str, list[str]] = {}
    lock = threading.Lock()

    def claimant(name: str) -> None:
        mine = _queue(url)  # its own engine, as another process would have
        while (claim := mine.claim_next(name)) is not None:
            with lock:
                claims.setdefault(claim.task.key, []).append(name)
            assert mine.finish(claim)

    threads = [threading.Thread(target=claimant, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(claims) == [f"task-{k}" for k in range(6)]
    assert all(len(who) == 1 for who in claims.values()), claims
    assert {t.state for t in queue.tasks()} == {DONE}
    assert all(t.attempts == 1 for t in queue.tasks())


def test_a_stale_claim_is_taken_over_and_the_old_claimant_is_fenced_out(url: str) -> None:
    queue = _queue(url, stale_after=0.5)
    queue.add("t", kind="baseline", priority=0, payload={})
    old = queue.claim_next("old")
    assert old is not None and old.attempts == 1
    assert queue.claim_next("new") is None  # fresh: not claimable
    time.sleep(1.0)  # no heartbeat: stale
    new = queue.claim_next("new")
    assert new is not None and new.attempts == 2
    # The old claimant's writes change nothing now.
    assert not queue.beat(old)
    assert not queue.holds(old)
    assert not queue.finish(old)
    assert not queue.release(old)
    assert queue.holds(new) and queue.beat(new)
    assert queue.finish(new)
    (task,) = queue.tasks()
    assert task.state == DONE and task.worker == "new"


def test_heartbeats_keep_a_claim_and_release_hands_it_back(url: str) -> None:
    # 3 s of beats every 0.5 s outlive a 2 s lease only if the beats renew it; 1.5 s of slack
    # per beat keeps a loaded machine (CI beside a benchmark) from letting the claim go stale.
    queue = _queue(url, stale_after=2.0)
    queue.add("t", kind="baseline", priority=0, payload={})
    claim = queue.claim_next("a")
    assert claim is not None
    for _ in range(6):
        time.sleep(0.5)
        assert queue.beat(claim)
        assert queue.claim_next("b") is None
    assert queue.release(claim)
    assert queue.tasks()[0].state == WAITING
    again = queue.claim_next("b")
    assert again is not None and again.worker == "b"


def test_cancelled_tasks_come_back_when_added_again_and_settling_is_exclusive(url: str) -> None:
    queue = _queue(url, stale_after=30)
    queue.add("t", kind="inner", priority=0, payload={})
    assert queue.cancel(["t"]) == 1
    assert queue.tasks()[0].state == CANCELLED
    assert queue.claim_next("a") is None
    queue.add("t", kind="inner", priority=0, payload={})  # a configuration drawn again
    assert queue.tasks()[0].state == WAITING
    queue.add("run#outer-0", kind="outer", priority=1, payload={"slot": 0})
    slot = queue.claim(queue.tasks(kind="outer")[0].id, "a")
    assert slot is not None and queue.finish(slot)
    assert queue.lock_settling("run#outer-0", "a")
    assert not queue.lock_settling("run#outer-0", "b")
    queue.unlock_settling("run#outer-0", "a")
    assert queue.lock_settling("run#outer-0", "b")


def test_times_are_the_databases_clock(url: str) -> None:
    queue = _queue(url)
    before = time.time()
    now = queue.now()
    # The database runs on this machine here, so its clock agrees with ours to the second;
    # a MySQL FLOAT column would have rounded it to 128 s.
    assert abs(now - before) < 5
    queue.add("t", kind="baseline", priority=0, payload={})
    claim = queue.claim_next("a")
    assert claim is not None and claim.task.state == RUNNING
    assert claim.task.heartbeat is not None and abs(claim.task.heartbeat - now) < 5


def test_a_journal_storage_has_no_claim_table(tmp_path) -> None:  # type: ignore[no-untyped-def]
    storage = open_storage(str(tmp_path / "run.log"))
    with pytest.raises(ConfigurationError, match="RDB storage"):
        WorkQueue(storage, "run")


def test_a_claim_of_a_dead_process_of_this_machine_is_taken_over_at_once(url: str) -> None:
    import socket
    import subprocess
    import sys

    queue = _queue(url, stale_after=3600)  # a heartbeat would not go stale in this test
    queue.add("t", kind="baseline", priority=0, payload={})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    gone = f"{socket.gethostname()[:80]}:{int(dead.stdout)}:0000"
    assert queue.claim_next(gone) is not None
    alive = queue.claim_next(f"{socket.gethostname()[:80]}:1:0000")  # pid 1 runs
    assert alive is not None and alive.attempts == 2  # took over from the dead one
    # ...but not from a live process, nor from another machine's worker.
    assert queue.claim_next("elsewhere:1:0000") is None
