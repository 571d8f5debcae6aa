"""Benchmark: what outer pruning saves, and how the chosen configuration does on held-out objectives.

Two bilevel runs share one storage, the seeds, the outer sampler's seed and the outer space:
``<prefix>-full`` runs every repeat of every outer trial (``prune=False``); ``<prefix>-pruned``
lets ``WilcoxonPruner`` (repeats as instances) stop a configuration early. The script prints

1. the inner evaluations (inner trials behind the outer trials, baselines excluded) each run
   needed, the saving, and after how many repeats each pruned trial stopped;
2. each run's best configuration, whether the two are the same, and where the pruned run's
   choice ranks among the full run's configurations (by the full run's mean);
3. the pruned run's chosen configuration against Level 0, TPE and random on held-out
   objectives over ``--heldout-seeds`` paired seeds: n, the two-sided Wilcoxon signed-rank
   test on normalized regret (Holm across the arms), and Vargha-Delaney A12.

Both runs are resumable (run the same command again) and the report reads stored trials only:

    nohup python benchmarks/pruning.py --storage sqlite:////tmp/pruning.db > /tmp/pruning.log 2>&1 &
    python benchmarks/pruning.py --storage sqlite:////tmp/pruning.db --report
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from bilevel_optuna import _attrs


def _inner_evaluations(storage: Any, outer: optuna.Study) -> tuple[int, list[int]]:
    """Inner trials behind the outer trials, and the repeats each pruned trial ran."""
    run = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)  # not queued ones
    counts: dict[str, int] = {}
    total, pruned_after = 0, []
    for t in outer.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        for name in t.user_attrs.get(_attrs.INNER_STUDIES, []):
            if name not in counts:
                inner = optuna.load_study(study_name=name, storage=storage)
                counts[name] = len(inner.get_trials(deepcopy=False, states=run))
            total += counts[name]
        if t.state == TrialState.PRUNED:
            pruned_after.append(len(t.intermediate_values))
    return total, pruned_after


def _best(outer: optuna.Study) -> tuple[str, float]:
    complete = outer.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = min(complete, key=lambda t: t.values[0])
    return str(best.user_attrs[_attrs.ARM]), float(best.values[0])


def _run(args: argparse.Namespace, prune: bool) -> Any:
    from bilevel_optuna.chat import LocalChatModel
    from bilevel_optuna.studies import run_bilevel_study

    return run_bilevel_study(
        args.objectives,
        heldout_objectives=args.heldout if prune else (),
        heldout_seeds=list(range(100, 100 + args.heldout_seeds)) if prune else None,
        storage=args.storage,
        run_name=f"{args.prefix}-{'pruned' if prune else 'full'}",
        n_outer_trials=args.outer,
        n_inner_trials=args.inner,
        n_repeats=args.repeats,
        prune=prune,
        baselines=("random", "tpe", "llm-level0"),
        seed=args.seed,
        model=LocalChatModel(n_threads=args.threads),
        progress=lambda line: print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True),
    )


def report(args: argparse.Namespace) -> None:
    from bilevel_optuna.studies._bilevel import make_storage

    storage, _ = make_storage(args.storage)
    full = optuna.load_study(study_name=f"{args.prefix}-full", storage=storage)
    pruned = optuna.load_study(study_name=f"{args.prefix}-pruned", storage=storage)
    print(
        f"machine: {platform.processor() or platform.machine()}, python "
        f"{platform.python_version()}, optuna {optuna.__version__}"
    )
    print()
    print("| run | outer trials | pruned | pruned after (repeats) | inner evaluations |")
    print("|---|---|---|---|---|")
    evals = {}
    for label, study in (("full repeats", full), ("WilcoxonPruner", pruned)):
        total, after = _inner_evaluations(storage, study)
        evals[label] = total
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        print(f"| {label} | {len(finished)} | {len(after)} | {after or '-'} | {total} |")
    saved = evals["full repeats"] - evals["WilcoxonPruner"]
    share = saved / evals["full repeats"] if evals["full repeats"] else math.nan
    print()
    print(f"Inner evaluations saved by pruning: {saved} of {evals['full repeats']} ({share:.0%}).")

    full_arm, full_value = _best(full)
    pruned_arm, pruned_value = _best(pruned)
    ranked = sorted(
        full.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.values[0]
    )
    arms = [t.user_attrs[_attrs.ARM] for t in ranked]
    rank = arms.index(pruned_arm) + 1 if pruned_arm in arms else None
    print(
        f"Best configuration: full run {full_arm} (mean normalized regret {full_value:.4g}); "
        f"pruned run {pruned_arm} ({pruned_value:.4g}); "
        + ("the same." if full_arm == pruned_arm else "different: ")
        + ("" if full_arm == pruned_arm else f"the pruned run's choice ranks {rank} of {len(arms)} in the full run.")
    )

    from bilevel_optuna.stats import compare

    # Per held-out objective, then pooled (regret, so objectives of both directions pool;
    # pairs are (objective, seed)).
    for objectives in [[name] for name in args.heldout] + [list(args.heldout)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = compare(
                storage,
                run=f"{args.prefix}-pruned",
                arms=[pruned_arm, "llm-level0", "tpe", "random"],
                kind=("heldout", "baseline"),
                objective=objectives,
                n_trials=args.inner,
                control=pruned_arm,
            )
        print()
        print(f"Held-out {' + '.join(objectives)}: the chosen configuration against each arm")
        print()
        print(
            "| arm | n | median regret [quartiles] | vs chosen: Wilcoxon p (Holm) "
            "| A12, chosen better [95% CI] |"
        )
        print("|---|---|---|---|---|")
        for arm, summary in result.arms.items():
            row = (
                f"| {arm} | {summary.n} | {summary.median:.4g} "
                f"[{summary.q25:.4g}, {summary.q75:.4g}] |"
            )
            if arm == pruned_arm:
                print(row + " (control) | |")
                continue
            c = result.comparison(pruned_arm, arm)
            a12 = c.a12.statistic if c.arm_a == pruned_arm else 1 - c.a12.statistic
            low, high = (
                (c.a12.ci_low, c.a12.ci_high)
                if c.arm_a == pruned_arm
                else (1 - c.a12.ci_high, 1 - c.a12.ci_low)
            )
            test = (
                f"{c.pvalue:.3g} ({c.pvalue_holm:.3g})"
                if c.pvalue == c.pvalue
                else "no test (ties, or too few pairs)"
            )
            print(row + f" {test} | {a12:.2f} [{low:.2f}, {high:.2f}] |")
        for claim in result.claims:
            print(f"- {claim}")
        for note in result.notes:
            print(f"- note: {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite:///pruning_bench.db")
    parser.add_argument("--prefix", default="prune-bench")
    parser.add_argument("--objectives", nargs="+", default=["branin"])
    parser.add_argument("--heldout", nargs="+", default=["hartmann6", "hpobench/kc1"])
    parser.add_argument("--outer", type=int, default=8, help="outer trials per run")
    parser.add_argument("--inner", type=int, default=8, help="trials per inner study")
    parser.add_argument("--repeats", type=int, default=6, help="paired seeds per outer trial")
    parser.add_argument("--heldout-seeds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads")
    parser.add_argument("--report", action="store_true", help="only print the tables")
    parser.add_argument(
        "--only",
        choices=("pruned", "full"),
        help="run one of the two runs (two processes can share the storage)",
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not args.report:
        start = time.perf_counter()
        for prune in (True, False):
            if args.only in (None, "pruned" if prune else "full"):
                _run(args, prune)
        if args.only:
            return
        print(f"wall: {time.perf_counter() - start:.0f} s", flush=True)
    report(args)


if __name__ == "__main__":
    main()
