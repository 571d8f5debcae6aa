"""``bilevel-optuna run SPEC``: run or resume the study a TOML spec describes."""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from typing import Any

from bilevel_optuna.studies import BilevelSpec
from bilevel_optuna.studies import load_spec
from bilevel_optuna.studies import run_bilevel_study
from bilevel_optuna.studies import run_spec_study


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run or resume a study described by a TOML spec",
        description=(
            "Run the study a spec describes. Running the same command again resumes it; "
            "running it on another server with the same --storage URL joins it as a worker."
        ),
    )
    parser.add_argument("spec", help="path to a TOML spec, e.g. studies/demo.toml")
    parser.add_argument("--storage", help="database URL overriding the spec's")
    parser.add_argument(
        "--model", help="chat model spec overriding the spec's (local, openai:MODEL@URL)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    parser.set_defaults(func=_run)


def _number(value: Any) -> Any:
    """Floats to four significant digits (``0.8349`` for 0.834953...); the rest as is."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, list):
        return [_number(v) for v in value]
    if isinstance(value, dict):
        return {k: _number(v) for k, v in value.items()}
    return value


def _run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    start = time.perf_counter()

    def progress(line: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - start:7.1f}s] {line}", flush=True)

    if not isinstance(spec, BilevelSpec):
        if args.model:
            spec.model = args.model
        study = run_spec_study(spec, storage=args.storage)
        params = ", ".join(f"{k}={_number(v)}" for k, v in study.best_params.items())
        print(f"study {study.study_name}: best value {study.best_value:.4g} with {params}")
        return 0
    kwargs = dict(spec.kwargs)
    if args.storage:
        kwargs["storage"] = args.storage
    if args.model:
        kwargs["model"] = args.model
    bars = not args.no_progress and not args.quiet and sys.stderr.isatty()
    result = run_bilevel_study(**kwargs, progress=progress, show_progress_bar=bars)
    print()
    print(
        f"run {kwargs['run_name']} finished in {time.perf_counter() - start:.0f} s; storage {result.storage_url}"
    )
    if result.spend is not None and (result.spend.tokens or result.spend.n_fallback):
        print(f"model spend: {result.spend.describe(kwargs.get('token_prices'))}")
    if result.best_config is None:
        print("No outer trial completed.")
        return 1
    print(
        f"best proposer configuration {result.best_label} "
        f"(outer value {result.best_value:.4g}):"
    )
    for key, value in result.best_config.to_dict().items():
        print(f"  {key}: {_number(value)}")
    print()
    objectives = sorted({o for arm in result.arm_scores.values() for o in arm})
    labels = {
        arm: result.best_label if arm == "best" else arm for arm in result.arm_scores
    }
    width = max(len(label) for label in labels.values()) + 2
    print("median score per arm (lower is better; regret scores: 1.0 = random search's median)")
    print(f"{'arm':<{width}}" + "".join(f"{o:>22}" for o in objectives))
    for arm, per_objective in result.arm_scores.items():
        cells = []
        for o in objectives:
            values = [v for v in per_objective.get(o, []) if not math.isnan(v)]
            cells.append(f"{statistics.median(values):>22.4g}" if values else f"{'-':>22}")
        print(f"{labels[arm]:<{width}}" + "".join(cells))
    for title, comparison in (
        ("on the training objectives", result.comparison),
        ("on the held-out objectives", result.heldout_comparison),
    ):
        if comparison is not None:
            print()
            print(f"The chosen configuration against the baselines {title}:")
            print(comparison.to_text())
    if result.report_artifacts:
        print()
        print(
            f"The report and its plots are artifacts of the outer study {kwargs['run_name']} "
            f"({', '.join(sorted(result.report_artifacts))}): see them in optuna-dashboard."
        )
    print()
    print(f"Inspect: optuna-dashboard {result.storage_url}")
    print(
        f"Compare: bilevel-optuna compare --storage {result.storage_url} --run {kwargs['run_name']}"
    )
    sys.stdout.flush()
    return 0
