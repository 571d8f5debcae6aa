"""``bilevel-optuna worker --storage URL --run NAME``: join a run from the storage alone."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bilevel_optuna._storage import storage_label
from bilevel_optuna.studies import run_worker


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="join a bilevel run in a shared database and work on it until it is done",
        description=(
            "Join the bilevel run NAME in the database at URL: its settings, objectives and "
            "generated mechanisms come from the storage. The worker claims one task at a time "
            "(an inner study of one repeat, or a new outer trial) until nothing is left; Ctrl-C "
            "hands its claim back at once. Start as many as you like, on any server that "
            "reaches the database."
        ),
    )
    parser.add_argument("--storage", required=True, help="the run's database URL")
    parser.add_argument("--run", required=True, help="the run's name ([run] name of its spec)")
    parser.add_argument(
        "--model",
        help="chat model for this worker (default: the run's; local, openai:MODEL@URL, uniform)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    parser.set_defaults(func=_worker)


def _worker(args: argparse.Namespace) -> int:
    start = time.perf_counter()

    def progress(line: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - start:7.1f}s] {line}", flush=True)

    n_done = run_worker(
        storage=args.storage, run_name=args.run, model=args.model, progress=progress
    )
    print(
        f"worker done: {n_done} task(s) of run {args.run} in {time.perf_counter() - start:.0f} s; "
        f"the run is complete in {storage_label(args.storage)}."
    )
    sys.stdout.flush()
    return 0
