"""The fence (studies/_workqueue/_fence.py) on SQLite, PostgreSQL and MariaDB: a worker whose
claim went to another worker while it was silent sends no statement of Optuna's for it; one
whose heartbeats failed but who still holds its claim renews it and goes on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from collections.abc import Iterator

import optuna
import pytest
from databases import fresh_database
from optuna.trial import TrialState

from bilevel_optuna._storage import open_storage
from bilevel_optuna.studies._workqueue import DONE
from bilevel_optuna.studies._workqueue import Claim
from bilevel_optuna.studies._workqueue import LostClaim
from bilevel_optuna.studies._workqueue import QueueWorker
from bilevel_optuna.studies._workqueue import WorkQueue

STALE_AFTER = 1.0  # the lease is half of it


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    yield from fresh_database(request.param, "bo_fence", tmp_path)


class _Silent(QueueWorker):
    """A worker whose heartbeat thread never beats (as if its link were cut), running each task
    with ``action``, which records what it saw."""

    def __init__(self, queue: WorkQueue, action: Callable[[Claim], None]) -> None:
        super().__init__(queue, heartbeat_interval=3600.0, model_label="test")
        self.action = action
        self.raised: list[BaseException] = []

    def run_task(self, claim: Claim) -> None:
        try:
            self.action(claim)
        except LostClaim as err:
            self.raised.append(err)
            raise
        self.finish(claim)


def _setup(url: str) -> tuple[WorkQueue, optuna.Study, WorkQueue]:
    storage = open_storage(url)
    queue = WorkQueue(storage, "run", stale_after=STALE_AFTER)
    queue.add("inner", kind="inner", priority=0, payload={})
    study = optuna.create_study(storage=storage, study_name="inner")
    other = WorkQueue(open_storage(url), "run", stale_after=STALE_AFTER)  # another process
    return queue, study, other


def _stored(url: str) -> list[tuple[int, str]]:
    trials = optuna.load_study(storage=url, study_name="inner").get_trials(deepcopy=False)
    return [(t.number, t.state.name) for t in trials]


def test_a_claim_taken_over_while_silent_writes_nothing_more(url: str) -> None:
    queue, study, other = _setup(url)
    seen: dict[str, object] = {}

    def taken_over_while_silent(claim: Claim) -> None:
        trial = study.ask()  # the claim is fresh: this goes through
        time.sleep(STALE_AFTER + 0.3)  # silent past the stale window
        theirs = other.claim(claim.task.id, "other:1:0000")
        assert theirs is not None
        assert other.finish(theirs)
        # Another thread's statements are not this task's: they pass.
        reader = threading.Thread(target=lambda: seen.update(read=len(study.trials)))
        reader.start()
        reader.join()
        try:
            study.tell(trial, 1.0)
        finally:
            seen["after_tell"] = _stored(url)
        study.ask()  # not reached

    worker = _Silent(queue, taken_over_while_silent)
    assert worker.work() == 0
    assert len(worker.raised) == 1 and "went to another worker" in str(worker.raised[0])
    assert seen == {"read": 1, "after_tell": [(0, "RUNNING")]}
    assert _stored(url) == [(0, "RUNNING")]  # no value, no new trial
    (task,) = queue.tasks()
    assert task.state == DONE and task.worker == "other:1:0000"
    # The fence is gone with the worker: no listener is left, and this process writes again.
    engine = queue.storage_engine
    assert engine is not None
    assert len(engine.dispatch.before_cursor_execute) == len(engine.dispatch.commit) == 0
    study.tell(study.ask(), 2.0)
    assert _stored(url) == [(0, "RUNNING"), (1, "COMPLETE")]


def test_a_stale_lease_still_held_is_renewed_and_the_task_goes_on(url: str) -> None:
    queue, study, _ = _setup(url)
    heartbeats: list[float | None] = []

    def slow(claim: Claim) -> None:
        trial = study.ask()
        (task,) = queue.tasks()
        heartbeats.append(task.heartbeat)
        time.sleep(STALE_AFTER / 2 + 0.2)  # the lease is stale, the claim is not yet
        study.tell(trial, 1.0)  # the fence renews the claim first
        (task,) = queue.tasks()
        heartbeats.append(task.heartbeat)

    worker = _Silent(queue, slow)
    assert worker.work() == 1
    assert worker.raised == []
    assert _stored(url) == [(0, TrialState.COMPLETE.name)]
    before, after = heartbeats
    assert before is not None and after is not None and after > before
