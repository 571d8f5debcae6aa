"""The worker loop (studies/_workqueue/_loop.py) with tasks of its own, on a SQLite file: every
task run once, a claim lost to another worker left alone, Ctrl-C hands the claim back, a
failing task stops the worker, and the worker's row says it stopped."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bilevel_optuna._storage import open_storage
from bilevel_optuna.studies._workqueue import DONE
from bilevel_optuna.studies._workqueue import WAITING
from bilevel_optuna.studies._workqueue import Claim
from bilevel_optuna.studies._workqueue import QueueWorker
from bilevel_optuna.studies._workqueue import Task
from bilevel_optuna.studies._workqueue import WorkQueue


class _Worker(QueueWorker):
    """Runs each task with ``action`` (by default: nothing) and marks it done."""

    def __init__(self, queue: WorkQueue, action: Callable[[Claim], None] | None = None) -> None:
        super().__init__(queue, heartbeat_interval=0.2, model_label="test")
        self.action = action
        self.ran: list[str] = []

    def can_run(self, task: Task) -> bool:
        return task.kind != "heldout"  # left to other workers

    def run_task(self, claim: Claim) -> None:
        self.ran.append(claim.task.key)
        if self.action is not None:
            self.action(claim)
        self.finish(claim)


def _queue(tmp_path, keys=("a", "b", "c")) -> WorkQueue:  # type: ignore[no-untyped-def]
    queue = WorkQueue(open_storage(f"sqlite:///{tmp_path}/q.db"), "run", stale_after=30.0)
    for k, key in enumerate(keys):
        queue.add(key, kind="baseline", priority=k, payload={})
    return queue


def test_every_task_runs_once_in_priority_order_and_the_worker_stops(tmp_path) -> None:  # type: ignore[no-untyped-def]
    queue = _queue(tmp_path)
    worker = _Worker(queue)
    assert worker.work() == 3
    assert worker.ran == ["a", "b", "c"]
    assert {t.state for t in queue.tasks()} == {DONE}
    (row,) = queue.workers()
    assert row["id"] == worker.worker_id and row["state"] == "stopped"
    assert row["model"] == "test"


def test_a_task_this_worker_cannot_run_is_left_to_others(tmp_path) -> None:  # type: ignore[no-untyped-def]
    queue = _queue(tmp_path, keys=("a",))
    queue.add("h", kind="heldout", priority=9, payload={})

    class Once(_Worker):
        def finished(self, tasks):  # type: ignore[no-untyped-def]
            return all(t.state == DONE for t in tasks if t.kind != "heldout")

    worker = Once(queue)
    assert worker.work() == 1
    assert {t.key: t.state for t in queue.tasks()} == {"a": DONE, "h": WAITING}


def test_a_claim_taken_over_by_another_worker_is_left_to_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    queue = _queue(tmp_path, keys=("a",))

    def taken_over(claim: Claim) -> None:
        assert not worker.lost(claim)
        queue.release(claim)
        theirs = queue.claim(claim.task.id, "other:1:0000")
        assert theirs is not None and queue.finish(theirs)
        assert worker.lost(claim)

    worker = _Worker(queue, taken_over)
    assert worker.work() == 0  # its finish was refused: the other worker's row stands
    (task,) = queue.tasks()
    assert task.state == DONE and task.worker == "other:1:0000"


def test_ctrl_c_hands_the_claim_back_at_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    queue = _queue(tmp_path, keys=("a",))

    def interrupt(claim: Claim) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _Worker(queue, interrupt).work()
    (task,) = queue.tasks()
    assert task.state == WAITING and task.worker is None
    assert queue.workers()[0]["state"] == "stopped"


def test_a_failing_task_stops_the_worker_with_its_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    queue = _queue(tmp_path, keys=("a",))

    def fail(claim: Claim) -> None:
        raise ValueError("the objective raised")

    with pytest.raises(ValueError, match="the objective raised"):
        _Worker(queue, fail).work()
    assert queue.workers()[0]["state"] == "stopped"


def test_the_base_worker_says_a_subclass_must_run_tasks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    queue = _queue(tmp_path, keys=("a",))
    with pytest.raises(NotImplementedError):
        QueueWorker(queue, heartbeat_interval=1.0).work()
