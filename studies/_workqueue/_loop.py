"""The worker loop: claim a task, run it while a thread beats its heartbeat, mark it done.

:class:`QueueWorker` is what every process that takes part in a run does with the queue, whatever
its tasks are: it registers its row, claims the next task it can run, keeps the claim alive from
a heartbeat thread, hands the claim back at once on Ctrl-C, notices when another worker took the
claim over (:class:`LostClaim`: it then writes nothing more for that task, and ``_fence`` stops
any statement of a task whose claim was not confirmed lately), and waits out an outage of the
database (resuming the claim in hand if it still holds it). What a task *is*, and
when the run is done, a subclass says (``bilevel_optuna.studies._worker.RunWorker`` for a bilevel
run), through the hooks below.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Sequence

from bilevel_optuna._logging import get_logger
from bilevel_optuna._transient import is_disconnect
from bilevel_optuna.exceptions import BilevelOptunaError
from bilevel_optuna.exceptions import RunFailedError
from bilevel_optuna.studies._workqueue._claims import WorkQueue
from bilevel_optuna.studies._workqueue._fence import Fence
from bilevel_optuna.studies._workqueue._tables import RUNNING
from bilevel_optuna.studies._workqueue._tables import WAITING
from bilevel_optuna.studies._workqueue._tables import Claim
from bilevel_optuna.studies._workqueue._tables import Task
from bilevel_optuna.studies._workqueue._workers import new_worker_id

_logger = get_logger(__name__)

_IDLE_POLL_S = 0.5
_OUTAGE_POLL_S = 2.0
#: Seconds a worker waits for an unreachable database before it stops.
MAX_OUTAGE_S = 900.0


class LostClaim(BilevelOptunaError):
    """The task was taken over by another worker: this one stops writing for it."""


class QueueWorker:
    """One process's turn-by-turn work on a run's queue.

    Subclasses say what a task is: :meth:`run_task` runs a claimed task (and calls
    :meth:`finish`), :meth:`can_run` says which tasks this process can run, :meth:`before_claim`
    does the run's bookkeeping at the start of each turn, :meth:`finished` says when the run is
    done and :meth:`check_blocked` raises when it cannot finish.

    Args:
        queue: The run's work queue.
        heartbeat_interval: Seconds between two heartbeats of the claim in hand.
        model_label: The model this worker runs, for ``status``.
    """

    def __init__(
        self, queue: WorkQueue, *, heartbeat_interval: float, model_label: str | None = None
    ) -> None:
        self.queue = queue
        self.heartbeat_interval = heartbeat_interval
        self.model_label = model_label
        self.worker_id = new_worker_id()
        self.n_done = 0
        self._claim: Claim | None = None
        self._interrupted: Claim | None = None  # the claim in hand when the database went away
        # The claim the heartbeat found taken over. A claim, not a flag: a beat of the claim
        # just finished can return after the next one is claimed, and must not mark that one.
        self._lost: Claim | None = None
        # When the claim in hand was last confirmed by the database (time.monotonic(), taken
        # before the statement that confirmed it), and how long that stays good for the fence.
        self._confirmed_at = -math.inf
        self._lease_s = queue.stale_after / 2.0
        self._stop = threading.Event()

    # --- The hooks -----------------------------------------------------------------------------

    def before_claim(self) -> None:
        """Each turn, before the next claim: the run's own bookkeeping."""

    def can_run(self, task: Task) -> bool:
        """Whether this process can run ``task`` (others are left to other workers)."""
        return True

    def run_task(self, claim: Claim) -> None:
        """Run a claimed task; raise :class:`LostClaim` if the claim went to another worker."""
        raise NotImplementedError

    def finished(self, tasks: Sequence[Task]) -> bool:
        """Whether the run is done, given all its tasks (nothing was left to claim)."""
        return all(t.state not in (WAITING, RUNNING) for t in tasks)

    def check_blocked(self, tasks: Sequence[Task]) -> None:
        """Raise :class:`RunFailedError` when the run cannot finish."""

    # --- Claims --------------------------------------------------------------------------------

    def lost(self, claim: Claim) -> bool:
        """Whether ``claim`` went to another worker (the heartbeat saw it, or the row says so)."""
        if self._lost is claim or not self.queue.holds(claim):
            self._lost = claim
            return True
        return False

    def check_lease(self) -> None:
        """Let a statement of the claimed task go, or raise :class:`LostClaim` (the fence).

        Free while a heartbeat the database accepted is less than half the stale window old;
        past that, the claim is renewed here first (a worker whose heartbeats failed, or whose
        process was stopped, must not write on the strength of an old claim).
        """
        claim = self._claim
        if claim is None:
            return
        if self._lost is claim:
            raise LostClaim(f"{claim.task.key} went to another worker; nothing more is written.")
        if time.monotonic() - self._confirmed_at <= self._lease_s:
            return
        started = time.monotonic()
        if self.queue.beat(claim):
            self._confirm(claim, started)
            return
        self._lost = claim
        raise LostClaim(f"{claim.task.key} went to another worker; nothing more is written.")

    def _confirm(self, claim: Claim, at: float) -> None:
        if self._claim is claim:
            self._confirmed_at = max(self._confirmed_at, at)

    def finish(self, claim: Claim) -> None:
        """Mark the claimed task done and count it; :class:`LostClaim` if it is not ours."""
        if self._lost is claim or not self.queue.finish(claim):
            raise LostClaim()
        self.n_done += 1

    # --- The loop ------------------------------------------------------------------------------

    def work(self) -> int:
        """Claim and run tasks until the run is done; returns the tasks this worker did.

        Raises:
            RunFailedError: A task failed here, or the run is blocked by a task that failed on
                another worker.
            KeyboardInterrupt: After handing the claim in hand back (:meth:`_run_claim`).
        """
        self.queue.reset_failed()
        self.queue.register_worker(self.worker_id, model=self.model_label)
        beater = threading.Thread(target=self._beat, name="bilevel-heartbeat", daemon=True)
        beater.start()
        engine = self.queue.storage_engine
        fence = Fence(engine, self.check_lease) if engine is not None else contextlib.nullcontext()
        try:
            with fence:
                return self._loop()
        finally:
            self._stop.set()
            beater.join(timeout=5)
            try:
                self.queue.stop_worker(self.worker_id)
            except Exception as err:  # noqa: BLE001 - the database may be what failed
                _logger.debug("Could not mark worker %s stopped: %s", self.worker_id, err)

    def _loop(self) -> int:
        interrupted: Claim | None = None  # a claim the database went away under
        outage: float | None = None
        while True:
            try:
                if interrupted is not None:
                    claim, interrupted = interrupted, None
                    if self.queue.holds(claim):
                        # Resumed: its lease is renewed before the task's first statement.
                        self._run_claim(claim, confirmed_at=-math.inf)
                    else:
                        _logger.warning("Lost %s while the database was away.", claim.task.key)
                    continue
                if self._step():
                    return self.n_done
                outage = None
            except Exception as err:
                if not is_disconnect(err):
                    raise
                interrupted, self._interrupted = self._interrupted, None
                outage = self._wait_out(err, outage)

    def _step(self) -> bool:
        """One turn of the loop; True when the run is done."""
        self.before_claim()
        asked_at = time.monotonic()
        claim = self.queue.claim_next(self.worker_id, accept=self.can_run)
        if claim is None:
            tasks = self.queue.tasks()
            if self.finished(tasks):
                return True
            self.check_blocked(tasks)
            time.sleep(_IDLE_POLL_S)
            return False
        self._run_claim(claim, confirmed_at=asked_at)
        return False

    def _wait_out(self, err: BaseException, since: float | None) -> float:
        """Sleep through an outage of the database; give up after :data:`MAX_OUTAGE_S`."""
        now = time.monotonic()
        if since is None:
            since = now
            _logger.warning(
                "The database is unreachable (%s); waiting for it (claims held meanwhile are "
                "taken over by other workers after %.0f s).",
                type(err).__name__,
                self.queue.stale_after,
            )
        if now - since > MAX_OUTAGE_S:
            raise RunFailedError(
                f"The database has been unreachable for {now - since:.0f} s ({err}); this worker "
                "stops. Start it again once the database is reachable."
            ) from err
        time.sleep(_OUTAGE_POLL_S)
        return since

    def _beat(self) -> None:
        """Heartbeat thread: the claim in hand and the worker's row, every interval."""
        while not self._stop.wait(self.heartbeat_interval):
            claim = self._claim
            try:
                started = time.monotonic()
                if claim is not None:
                    if self.queue.beat(claim):
                        self._confirm(claim, started)
                    elif self._claim is claim:
                        self._lost = claim
                self.queue.beat_worker(
                    self.worker_id,
                    task_key=claim.task.key if claim is not None else None,
                    n_done=self.n_done,
                )
            except Exception as err:  # noqa: BLE001 - cut off: try again next beat
                _logger.warning("Heartbeat failed (%s); retrying.", type(err).__name__)

    def _run_claim(self, claim: Claim, *, confirmed_at: float) -> None:
        self._confirmed_at = confirmed_at
        self._claim = claim
        try:
            self.run_task(claim)
        except KeyboardInterrupt:
            # Ctrl-C: the task is waiting again at once, for any worker, with no grace period.
            if self.queue.release(claim):
                _logger.warning("Handed %s back: another worker can take it now.", claim.task.key)
            raise
        except Exception as err:
            if is_disconnect(err):
                self._interrupted = claim
            if not isinstance(err, LostClaim):
                raise
            _logger.warning(
                "Lost %s to another worker (this one went silent for too long); its work there "
                "is kept, and this worker writes nothing more for it.",
                claim.task.key,
            )
        finally:
            self._claim = None
