"""How far a bilevel run is, read from its work queue: one bar in the run, one line in ``status``.

The unit is the inner study (one arm's repeat on one objective): outer trials times repeats
times objectives, the baselines' studies, and the held-out evaluation at the end. Outer trials
not yet started count the studies they will queue; a configuration stopped by racing drops its
cancelled studies from the total. The ETA is read from the finish times of the last tasks done
(the database's clock, so it agrees whichever worker or ``status`` reads it).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

import optuna

from bilevel_optuna.studies._settings import RunSettings
from bilevel_optuna.studies._workqueue import CANCELLED
from bilevel_optuna.studies._workqueue import DONE
from bilevel_optuna.studies._workqueue import RUNNING
from bilevel_optuna.studies._workqueue import WAITING
from bilevel_optuna.studies._workqueue import Task

#: Finish times the ETA is read from: the recent pace, not the whole run's.
_ETA_WINDOW = 10


@dataclasses.dataclass(frozen=True)
class RunProgress:
    """A run's progress in inner studies (and outer trials), from its task table."""

    done: int
    running: int
    total: int
    outer_done: int
    n_outer: int
    eta_s: float | None  # None until two tasks have finished, or when nothing runs

    def line(self) -> str:
        """``12 of 40 inner studies done, 2 running; outer trials 3 of 8; about 4 min left``."""
        text = (
            f"{self.done} of {self.total} inner studies done, {self.running} running; "
            f"outer trials {self.outer_done} of {self.n_outer} done"
        )
        if self.eta_s is not None and self.done < self.total:
            text += f"; about {format_seconds(self.eta_s)} left"
        return text


def format_seconds(seconds: float) -> str:
    """``45 s``, ``12 min``, ``2.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def run_progress(
    tasks: Sequence[Task], settings: RunSettings, *, outer_done: int, now: float | None = None
) -> RunProgress:
    """The progress of the run whose tasks (``WorkQueue.tasks()``) and settings are given;
    ``outer_done`` is its outer trials complete or pruned.

    ``now`` is the database's clock (``WorkQueue.now()``): with it, the ETA counts the time
    since the last finish too, so a stalled run's estimate grows instead of standing still.
    """
    inner = [t for t in tasks if t.kind != "outer" and t.state != CANCELLED]
    slots = [t for t in tasks if t.kind == "outer" and t.state != CANCELLED]
    per_trial = len(settings.seeds) * len(settings.objective_names)
    # Slots not yet claimed (or claimed and being set up) will queue one trial's studies.
    pending_slots = sum(t.state in (WAITING, RUNNING) for t in slots)
    n_heldout = len(settings.heldout_names) * len(settings.heldout_seeds)
    heldout_names = set(settings.heldout_names)
    queued_heldout_baselines = sum(
        t.kind == "baseline" and t.payload.get("objective") in heldout_names for t in inner
    )
    queued_heldout = sum(t.kind == "heldout" for t in inner)
    future = (
        pending_slots * per_trial
        + max(len(settings.baselines) * n_heldout - queued_heldout_baselines, 0)
        + max(n_heldout - queued_heldout, 0)
    )
    done = [t for t in inner if t.state == DONE]
    running = sum(t.state == RUNNING for t in inner)
    total = len(inner) + future
    return RunProgress(
        done=len(done),
        running=running,
        total=total,
        outer_done=outer_done,
        n_outer=settings.n_outer_trials,
        eta_s=_eta(done, total - len(done), running, now),
    )


def _eta(done: list[Task], remaining: int, running: int, now: float | None) -> float | None:
    if not running or remaining <= 0:
        return None
    finished = sorted(t.heartbeat for t in done if t.heartbeat is not None)[-_ETA_WINDOW:]
    if len(finished) < 2:
        return None
    seconds_per_task = (finished[-1] - finished[0]) / (len(finished) - 1)
    if now is not None:
        seconds_per_task = max(seconds_per_task, (now - finished[0]) / len(finished))
    return remaining * seconds_per_task


class ProgressBar:
    """One tqdm bar on stderr over a whole run, redrawn from the task table.

    The bar counts inner studies (its total follows :func:`run_progress`); between two of them
    it names the running study and its trial, so a long LLM study is seen to move.
    """

    def __init__(self, settings: RunSettings, *, desc: str) -> None:
        from tqdm.auto import tqdm

        self.settings = settings
        self.bar = tqdm(desc=desc, total=0, unit="study", file=sys.stderr, dynamic_ncols=True)
        self._outer = ""

    def update(self, tasks: Sequence[Task], *, outer_done: int) -> None:
        progress = run_progress(tasks, self.settings, outer_done=outer_done)
        self.bar.total = progress.total
        self._outer = (
            f"outer {progress.outer_done}/{progress.n_outer}, {progress.running} running"
        )
        self.bar.n = progress.done
        self.bar.set_postfix_str(self._outer, refresh=False)
        self.bar.refresh()

    def trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """An inner trial finished: say where the running study is."""
        n_trials = self.settings.n_inner_trials
        self.bar.set_postfix_str(
            f"{self._outer}; {study.study_name} trial {trial.number + 1}/{n_trials}"
        )

    def close(self) -> None:
        self.bar.close()


def progress_bar_default(show: Any) -> bool:
    """``show_progress_bar=None``: a bar where stderr is a terminal, none where it is not."""
    if show is None:
        isatty = getattr(sys.stderr, "isatty", None)
        return bool(isatty and isatty())
    return bool(show)
