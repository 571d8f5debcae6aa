"""Benchmark: each built-in mechanism against the bare LLMSampler, TPE and random search.

Every (objective, arm, seed) is one study in one storage, so an interrupted run resumes where it
stopped and the table is computed from the stored trials alone. Seeds pair the studies across
arms: the same seed gives the sampler, the model's sampling and the objective's noise.

Metrics per study: the rate of distinct configurations among the completed trials, and the final
regret: the gap between the known optimum and the noise-free value of the trial with the best
observed value. Per arm and objective: median and IQR; against the bare LLM arm: the two-sided
Wilcoxon signed-rank test on seed-paired regrets (Holm-corrected across the arms of an
objective) and Vargha-Delaney A12 (the probability that the arm's regret is lower).

Usage (the embedded model takes about 1 to 10 s per proposal on 2 shared cores):

    nohup nice -n 10 python benchmarks/mechanisms.py --storage sqlite:////tmp/mech_bench.db \
        --seeds 10 --trials 30 --jobs 2 --threads 1 > /tmp/mech_bench.log 2>&1 &
    python benchmarks/mechanisms.py --storage sqlite:////tmp/mech_bench.db --report

Each finished study also appends one row to benchmarks/results/mechanisms.csv (arm ``llm`` is
written as ``level0``), and cells already there are skipped, so a slice of the grid
(``--seeds 3-5 --objectives branin --arms tpe,tabu``) continues the file;
``python benchmarks/tables.py`` turns the rows into BENCHMARKS.md's tables.

Arms: ``llm`` (Level 0: ``LLMSampler(preset="level0")``, no mechanism); one per built-in
mechanism with its default hyperparameters on the Level-0 proposer (``candidate_choice`` with
``n_candidates=3``, which its ``choose`` hook needs); ``default`` (``LLMSampler()``, the
configuration the bilevel loop chose); ``tpe`` (``TPESampler(seed=seed)``, Optuna 5
defaults), ``random`` (``RandomSampler(seed=seed)``) and ``gp`` (``GPSampler(seed=seed)``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import os
import sys
import time
import warnings
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _arms import MECHANISM_ARMS  # noqa: E402
from _arms import make_sampler  # noqa: E402
import _cells  # noqa: E402
import _results  # noqa: E402
from _results import TRUE_VALUE  # noqa: E402

from bilevel_optuna import _attrs  # noqa: E402

DEFAULT_OBJECTIVES = ["branin", "hartmann6", "hpobench/kc1", "hpobench/phoneme"]
ALL_ARMS = ["llm", "default", *MECHANISM_ARMS, "tpe", "random", "gp"]
PREFIX = "mech-bench"


def study_name(objective: str, arm: str, seed: int) -> str:
    return f"{PREFIX}/{objective}/{arm}/seed{seed:03d}"


def run_one(
    url: str,
    objective_name: str,
    arm: str,
    seed: int,
    n_trials: int,
    threads: int = 1,
    record: dict[str, Any] | None = None,
) -> str:
    """Run (or finish) one study; return a one-line status.

    With ``record`` (``results``: the CSV path, ``benchmark``, ``commit``, ``machine``), the
    finished study's row is appended to the results file.
    """
    from bilevel_optuna.objectives import get_objective

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")
    objective = get_objective(objective_name, seed=seed)
    name = study_name(objective_name, arm, seed)
    study, done = _cells.open_cell(
        _cells.storage(url), name, direction=objective.direction,
        sampler=make_sampler(arm, seed, objective, threads),
    )  # fmt: skip
    if done >= n_trials:
        _record(study, objective, objective_name, arm, seed, n_trials, record)
        return f"{name}: done"
    study.set_user_attr(_attrs.ARM, arm)
    study.set_user_attr(_attrs.OBJECTIVE, objective_name)
    study.set_user_attr(_attrs.SEED, seed)
    if objective.optimum is not None:
        study.set_user_attr(_attrs.OPTIMUM, objective.optimum)
    wall = _cells.optimize_timed(study, _cells.recording_true_value(objective), n_trials - done)
    _record(study, objective, objective_name, arm, seed, n_trials, record)
    return f"{name}: {n_trials - done} trials in {wall:.0f} s"


def _record(
    study: optuna.Study,
    objective: Any,
    objective_name: str,
    arm: str,
    seed: int,
    n_trials: int,
    record: dict[str, Any] | None,
) -> None:
    if record is None:
        return
    row = _results.study_row(
        study, objective, benchmark=record["benchmark"], arm=arm, objective_name=objective_name,
        seed=seed, n_trials=n_trials, commit=record["commit"], machine_name=record["machine"],
    )  # fmt: skip
    if row is not None:
        _results.append_rows(record["results"], [row])


# ----------------------------------------------------------------------------- report


def study_metrics(study: optuna.Study, objective: Any) -> dict[str, float]:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return {
            "n": 0,
            "distinct": math.nan,
            "regret": math.nan,
            "wall": math.nan,
            "model": math.nan,
            "fallback": math.nan,
        }
    sign = 1.0 if objective.direction == "minimize" else -1.0
    best = min(complete, key=lambda t: (sign * float(t.value), t.number))  # type: ignore[arg-type]
    true = best.user_attrs.get(TRUE_VALUE)
    true = objective.true_value(best.params) if true is None else float(true)
    distinct = len({tuple(sorted(t.params.items())) for t in complete}) / len(complete)
    sources = [t.user_attrs.get(_attrs.SOURCE) for t in complete]
    return {
        "n": len(complete),
        "distinct": distinct,
        "model": sum(s in ("llm", "repaired") for s in sources) / len(complete),
        "fallback": sum(s == "fallback" for s in sources) / len(complete),
        "regret": objective.regret(true),
        "wall": float(study.user_attrs.get(_cells.WALL, math.nan)),
    }


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def report(
    url: str, objectives: list[str], arms: list[str], seeds: list[int], n_trials: int
) -> str:
    from bilevel_optuna.objectives import get_objective
    from bilevel_optuna.samplers._summary import summarize_mechanisms

    try:
        from bilevel_optuna.stats import holm
        from bilevel_optuna.stats import paired_test
        from bilevel_optuna.stats import vargha_delaney_a12
    except ImportError:  # pragma: no cover - statistics not installed
        paired_test = vargha_delaney_a12 = holm = None  # type: ignore[assignment]

    storage = _cells.storage(url)
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    lines = [
        "| objective | arm | n | distinct rate, median [IQR] | final regret, median [IQR] "
        "| vs llm: Wilcoxon p (Holm) | A12 (P arm better) | model / fallback share "
        "| mechanism changed trials | wall s/study |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for objective_name in objectives:
        objective = get_objective(objective_name)
        per_arm: dict[str, dict[int, dict[str, float]]] = {}
        studies_by_arm: dict[str, list[optuna.Study]] = {}
        for arm in arms:
            per_arm[arm] = {}
            studies_by_arm[arm] = []
            for seed in seeds:
                name = study_name(objective_name, arm, seed)
                if name not in existing:
                    continue
                study = optuna.load_study(study_name=name, storage=storage)
                m = study_metrics(study, objective)
                if m["n"] >= n_trials:
                    per_arm[arm][seed] = m
                    studies_by_arm[arm].append(study)
        base = per_arm.get("llm", {})
        tests: dict[str, Any] = {}
        for arm in arms:
            if arm == "llm" or paired_test is None:
                continue
            common = sorted(set(base) & set(per_arm[arm]))
            if len(common) < 2:
                continue
            a = [per_arm[arm][s]["regret"] for s in common]
            b = [base[s]["regret"] for s in common]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tests[arm] = (
                    paired_test(a, b).pvalue,
                    vargha_delaney_a12(a, b, direction="minimize", paired=True).statistic,
                )
        adjusted: dict[str, float] = {}
        if tests and holm is not None:
            names = sorted(tests)
            for n, p in zip(names, holm([tests[n][0] for n in names])):
                adjusted[n] = float(p)
        for arm in arms:
            rows = list(per_arm[arm].values())
            if not rows:
                continue
            d = np.array([r["distinct"] for r in rows])
            r = np.array([r["regret"] for r in rows])
            dq = np.percentile(d, [25, 50, 75])
            rq = np.percentile(r, [25, 50, 75])
            p, a12 = tests.get(arm, (math.nan, math.nan))
            share = "-"
            if arm not in ("tpe", "random", "gp"):
                model = np.mean([r["model"] for r in rows])
                share = f"{model:.2f} / {np.mean([r['fallback'] for r in rows]):.2f}"
            changed = "-"
            if arm in MECHANISM_ARMS:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    s = summarize_mechanisms(studies_by_arm[arm], warn=False).get(arm)
                if s is not None:
                    changed = f"{s.n_changed}/{s.n_trials} ({s.status})"
            lines.append(
                f"| {objective_name} | {arm} | {len(rows)} "
                f"| {dq[1]:.2f} [{dq[0]:.2f}, {dq[2]:.2f}] "
                f"| {_fmt(rq[1])} [{_fmt(rq[0])}, {_fmt(rq[2])}] "
                f"| {_fmt(adjusted.get(arm, p))} | {_fmt(a12)} "
                f"| {share} | {changed} | {np.median([r['wall'] for r in rows]):.0f} |"
            )
    return "\n".join(lines)


def run_tasks(
    url: str,
    tasks: list[tuple[str, str, int]],
    n_trials: int,
    threads: int,
    jobs: int,
    record: dict[str, Any] | None = None,
) -> None:
    """Run ``(objective, arm, seed)`` studies in ``jobs`` processes, printing each status.

    With ``record``, cells already in the results file are skipped and each finished study
    appends its row (see :func:`run_one`).
    """
    if record is not None:
        done = _results.done_cells(record["results"])
        tasks = [
            (o, a, s) for o, a, s in tasks
            if _results.cell_key({
                "benchmark": record["benchmark"], "arm": _results.ARM_NAMES.get(a, a),
                "objective": o, "seed": s, "n_trials": n_trials,
            }) not in done
        ]  # fmt: skip
        print(f"{len(tasks)} cells to run ({record['results']} holds {len(done)})", flush=True)
    _cells.storage(url)  # create the tables once, before the workers race to
    start = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [
            pool.submit(run_one, url, o, a, s, n_trials, threads, record) for o, a, s in tasks
        ]
        for i, future in enumerate(concurrent.futures.as_completed(futures), 1):
            try:
                status = future.result()
            except Exception as err:  # noqa: BLE001 - report and go on with the others
                status = f"ERROR {type(err).__name__}: {err}"
            print(f"[{i}/{len(tasks)} {time.perf_counter() - start:.0f} s] {status}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default="sqlite:////tmp/mech_bench.db")
    parser.add_argument(
        "--seeds",
        default="10",
        help="paired seeds: a count N (0..N-1), a range '3-5' or a list '0,4-6'",
    )
    parser.add_argument(
        "--run-seeds",
        default=None,
        help="run only these seeds, e.g. '5-9' (another process can take the others)",
    )
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--objectives", default=",".join(DEFAULT_OBJECTIVES))
    parser.add_argument(
        "--arms", default="all", help=f"comma list of {ALL_ARMS} ('level0' = 'llm') or 'all'"
    )
    _results.add_results_arguments(parser, "mechanisms")
    parser.add_argument("--jobs", type=int, default=1, help="studies run in parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads per job")
    parser.add_argument("--report", action="store_true", help="print the table only")
    args = parser.parse_args(argv)

    objectives = [o for o in args.objectives.split(",") if o]
    arms = ALL_ARMS if args.arms == "all" else _results.parse_list(args.arms)
    arms = ["llm" if a == "level0" else a for a in arms]  # "llm" names the stored studies
    unknown = sorted(set(arms) - set(ALL_ARMS))
    if unknown:
        parser.error(f"unknown arms {unknown}; choose from {ALL_ARMS}")
    try:
        seeds = _results.parse_seeds(args.seeds)
        run_seeds = _results.parse_seeds(args.run_seeds) if args.run_seeds else seeds
    except ValueError as err:
        parser.error(str(err))
    if not args.report:
        # Seed-major: a run stopped early still holds complete, paired blocks of seeds.
        tasks = [(o, a, s) for s in run_seeds for o in objectives for a in arms]
        # Cheap arms first within a seed, so the baselines are always there to compare with.
        tasks.sort(key=lambda t: (t[2], t[0], t[1] not in ("tpe", "random")))
        record = {
            "results": args.results,
            "benchmark": "mechanisms",
            "commit": args.commit or _results.commit_id(),
            "machine": args.machine or _results.machine(),
        }
        run_tasks(args.storage, tasks, args.trials, args.threads, args.jobs, record)
    print(
        f"\nMechanisms benchmark: {args.trials} trials, seeds {args.seeds}, "
        f"storage {args.storage}\n"
    )
    print(report(args.storage, objectives, arms, seeds, args.trials))
    return 0


if __name__ == "__main__":
    sys.exit(main())
