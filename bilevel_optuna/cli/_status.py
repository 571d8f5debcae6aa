"""``bilevel-optuna status``: what runs, what is done, and the best so far."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

import optuna
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna._storage import open_storage
from bilevel_optuna._storage import storage_label
from bilevel_optuna.cli._common import storage_of
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.studies._progress import run_progress
from bilevel_optuna.studies._racing import status_lines
from bilevel_optuna.studies._settings import RunSettings
from bilevel_optuna.studies._spend import spend_lines
from bilevel_optuna.studies._workqueue import WorkQueue


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("status", help="show the bilevel runs in a storage")
    parser.add_argument("target", nargs="?", help="a spec file or a storage URL")
    parser.add_argument("--storage", help="database URL")
    parser.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    url = storage_of(args)
    storage = open_storage(url, read_only=True)
    summaries = optuna.get_all_study_summaries(storage=storage, include_best_trial=False)
    outer = [s for s in summaries if s.user_attrs.get(_attrs.KIND) in ("outer", "single")]
    inner = Counter(
        s.user_attrs.get(_attrs.RUN)
        for s in summaries
        if s.user_attrs.get(_attrs.KIND) in ("inner", "baseline", "heldout")
    )
    if not outer:
        print(f"No bilevel run in {storage_label(url)}.")
        return 0
    for summary in outer:
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        states = Counter(t.state.name.lower() for t in trials)
        print(
            f"{summary.study_name} ({summary.user_attrs.get(_attrs.KIND)}): "
            + ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
            + f"; {inner.get(summary.study_name, 0)} inner studies"
        )
        for line in _disabled_lines(summaries, summary.study_name):
            print(f"  {line}")
        running = [t for t in trials if t.state == TrialState.RUNNING]
        for t in running:
            print(
                f"  running: trial {t.number} {t.user_attrs.get(_attrs.ARM, '')} "
                f"({len(t.user_attrs.get(_attrs.INNER_STUDIES, []))} of "
                f"{len(t.user_attrs.get(_attrs.TASKS, [])) or '?'} inner studies in)"
            )
        if summary.user_attrs.get(_attrs.KIND) == "outer":
            for line in _worker_lines(storage, summary.study_name):
                print(f"  {line}")
            # Racing: its setting (or its lack of power) and on how many repeats each was judged.
            for line in status_lines(study, trials):
                print(f"  {line}")
        # The model's tokens (and money, at the run's prices), its cap, and the fallbacks.
        settings = summary.user_attrs.get(_attrs.SETTINGS) or {}
        for line in spend_lines(storage, summary.study_name, settings):
            print(f"  {line}")
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if complete:
            best = (
                min(complete, key=lambda t: t.values[0])
                if study.directions[0].name == "MINIMIZE"
                else max(complete, key=lambda t: t.values[0])
            )
            print(f"  best so far: trial {best.number}, value {best.values[0]:.4g}")
            config = best.user_attrs.get(_attrs.CONFIG)
            print(f"  {config if config else best.params}")
    return 0


def _progress_line(
    storage: Any, queue: Any, tasks: list[Any], run: str, settings: dict[str, Any]
) -> str:
    """The run's progress as its own bar shows it: inner studies done of all, running,
    outer trials, ETA (studies/_progress.py)."""
    outer = optuna.load_study(study_name=run, storage=storage)
    outer_done = len(
        outer.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    )
    progress = run_progress(
        tasks, RunSettings.from_dict(settings), outer_done=outer_done, now=queue.now()
    )
    return "progress: " + progress.line()


def _disabled_lines(summaries: list[Any], run: str) -> list[str]:
    """Generated mechanisms disabled in some of the run's studies (their guarded process kept
    dying), with the first reason."""
    prefix = _attrs.RESEARCH_DISABLED_PREFIX
    found: dict[str, list[str]] = {}
    for s in summaries:
        if s.user_attrs.get(_attrs.RUN) != run:
            continue
        for key, reason in s.user_attrs.items():
            if key.startswith(prefix):
                found.setdefault(key[len(prefix) :], []).append(str(reason))
    return [
        f"disabled: {name} in {len(reasons)} studies ({reasons[0][:200]})"
        for name, reasons in sorted(found.items())
    ]


def _worker_lines(storage: Any, run: str) -> list[str]:
    """The run's tasks by state and its workers: alive (what each runs) or silent."""
    try:
        queue = WorkQueue(storage, run)
        tasks = queue.tasks()
        workers = queue.workers()
    except ConfigurationError:  # not an RDB storage: no workers there
        return []
    if not tasks and not workers:
        return []
    settings = optuna.load_study(study_name=run, storage=storage).user_attrs.get(
        _attrs.SETTINGS, {}
    )
    stale_after = float(settings.get("stale_after", 60.0))
    lines = [_progress_line(storage, queue, tasks, run, settings)]
    # Inner studies and outer slots apart: a done slot is an outer trial set up, not a study.
    kinds_of = {"inner studies": ("baseline", "inner", "heldout"), "outer slots": ("outer",)}
    for label, kinds in kinds_of.items():
        states = Counter(t.state for t in tasks if t.kind in kinds)
        if states:
            lines.append(
                f"{label}: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
            )
    lines[-1] += f" (claims stale after {stale_after:.0f} s of silence)"
    for w in workers:
        silent = float(w["silent_s"] or 0.0)
        if w["state"] == "stopped":
            what = f"stopped after {w['n_done']} task(s) (inner studies and outer slots)"
        elif silent > stale_after:
            what = f"SILENT for {silent:.0f} s (its claim is taken over)"
        else:
            doing = w["task_key"] or "waiting for work"
            what = (
                f"alive ({silent:.0f} s ago), {w['n_done']} task(s) done (inner studies and "
                f"outer slots), running {doing}"
            )
        lines.append(f"worker {w['id']} [{w['model'] or 'local'}]: {what}")
    return lines
