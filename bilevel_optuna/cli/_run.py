"""``bilevel-optuna run SPEC``: run or resume the study a TOML spec describes."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import optuna
from tqdm import tqdm

from bilevel_optuna.studies import BilevelSpec
from bilevel_optuna.studies import load_spec
from bilevel_optuna.studies import run_bilevel_study
from bilevel_optuna.studies import run_spec_study
from bilevel_optuna.studies._artifacts import storage_file


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run or resume a study described by a TOML spec",
        description=(
            "Run the study a spec describes. Running the same command again resumes it; "
            "running it on another server with the same --storage URL joins it as a worker."
        ),
    )
    parser.add_argument(
        "spec", help="path to a TOML spec, e.g. studies/specs/demo.toml, or a shipped spec's name"
    )
    parser.add_argument("--storage", help="database URL overriding the spec's")
    parser.add_argument(
        "--model", help="chat model spec overriding the spec's (local, openai:MODEL@URL)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar on stderr (the default where stderr is not a terminal)",
    )
    parser.add_argument(
        "--optuna-logs",
        action="store_true",
        help="show Optuna's INFO line per inner trial (off by default; -vv turns it on too)",
    )
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


def _comparison_table(comparison: Any, *, control: str | None) -> str:
    """The chosen configuration against each baseline, one line each: n, medians, p, A12."""
    rows = [("baseline", "n", "median chosen", "median baseline", "p (Holm)", "A12", "verdict")]
    for c in comparison.comparisons:
        if control is not None and c.arm_a != control:
            continue
        p = "no power" if c.no_power else f"{c.pvalue_holm:.3g}"
        rows.append(
            (
                c.arm_b,
                str(c.n_a),
                f"{c.median_a:.4g}",
                f"{c.median_b:.4g}",
                p,
                f"{c.a12.statistic:.2f}",
                c.verdict,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    metric = "regret" if comparison.metric == "regret" else comparison.metric
    lines.append(
        f"({metric}, lower is better; paired by seed: Wilcoxon signed-rank, p adjusted by Holm "
        "across the baselines; A12 above 0.5: the chosen configuration is better)"
    )
    return "\n".join(lines)


def _write_report(result: Any, run_name: str) -> Path | None:
    """The comparison report and plots as files beside a storage file (``<run>_report.md``,
    ``<run>_plots/``); the folder, or None for a database server."""
    path = storage_file(result.storage_url)
    if path is None or result.comparison is None:
        return None
    folder = path.parent
    sections = []
    for title, comparison in (
        ("Training objectives", result.comparison),
        ("Held-out objectives", result.heldout_comparison),
    ):
        if comparison is None:
            continue
        plots_dir = folder / f"{run_name}_plots" / title.split()[0].lower()
        plots: dict[str, Path] = {}
        try:
            plots = comparison.plot(plots_dir, formats=("png",))
        except ImportError:  # plots need matplotlib; the report does not
            pass
        links = {name: os.path.relpath(p, folder) for name, p in plots.items()}
        sections.append(f"# {title}\n\n" + comparison.to_markdown(plots=links))
    (folder / f"{run_name}_report.md").write_text("\n\n".join(sections), encoding="utf-8")
    return folder


def _run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    start = time.perf_counter()
    if not isinstance(spec, BilevelSpec):
        if args.model:
            spec.model = args.model
        study = run_spec_study(spec, storage=args.storage)
        params = ", ".join(f"{k}={_number(v)}" for k, v in study.best_params.items())
        print(f"study {study.study_name}: best value {study.best_value:.4g} with {params}")
        return 0

    def progress(line: str) -> None:
        if not args.quiet:
            # tqdm.write clears the progress bar on stderr first and redraws it after.
            tqdm.write(f"[{time.perf_counter() - start:7.1f}s] {line}", file=sys.stdout)
            sys.stdout.flush()

    settings = spec.settings
    if args.model:  # --model overrides the spec's model, keeping its policy
        settings = dataclasses.replace(
            settings, model=dataclasses.replace(settings.model, model=args.model)
        )
    verbose = args.optuna_logs or getattr(args, "verbose", 0) >= 2
    result = run_bilevel_study(
        spec.objectives,
        heldout_objectives=spec.heldout,
        storage=args.storage or spec.storage,
        storage_options=spec.storage_options,
        run_name=spec.run_name,
        settings=settings,
        progress=progress,
        show_progress_bar=not args.no_progress and not args.quiet and sys.stderr.isatty(),
        optuna_verbosity=optuna.logging.INFO if verbose else optuna.logging.WARNING,
    )
    print()
    print(
        f"run {spec.run_name} finished in {time.perf_counter() - start:.0f} s; "
        f"storage {result.storage_url}"
    )
    if result.spend is not None and (result.spend.tokens or result.spend.n_fallback):
        print(f"model spend: {result.spend.describe(settings.model.token_prices)}")
    if result.best_config is None:
        print("No outer trial completed.")
        return 1
    _print_found(result)
    _print_where(result, spec.run_name)
    return 0


def _print_found(result: Any) -> None:
    """The best configuration, the median score per arm, and the tests against the baselines."""
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
            print(_comparison_table(comparison, control=result.best_arm))


def _print_where(result: Any, run_name: str) -> None:
    """Where the run's report, plots and database are, and the commands that read them."""
    url = result.storage_url
    folder = _write_report(result, run_name)
    if result.report_artifacts:
        print()
        print(
            f"The report and its plots are artifacts of the outer study {run_name} "
            f"({', '.join(sorted(result.report_artifacts))}): the dashboard below shows them."
        )
    print()
    if folder is not None:
        print(
            f"Everything of this run is in {folder}{os.sep}: the database, the report and plots."
        )
    print(f"Inspect: bilevel-optuna dashboard {url}")
    print(f"Compare: bilevel-optuna compare --storage {url} --run {run_name}")
    sys.stdout.flush()
