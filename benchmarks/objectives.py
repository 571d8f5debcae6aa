"""Reference rows for the objectives: LM trial cost, default val_bpb beside the floor, and the
median regret of Optuna's TPE and random search at 30 trials over 10 seeds on each family.

Usage (from the repository root):

    python benchmarks/objectives.py                 # quick: a few minutes, no LM regret row
    python benchmarks/objectives.py --full          # every objective and the LM row (~1 h)
    python benchmarks/objectives.py --only lm       # just the LM timing
    python benchmarks/objectives.py --only lm --lm-seeds 10 --timing-threads   # LM row only

Regret is that of the incumbent (the trial with the best observed value): its noise-free value
for the synthetic and tabular objectives (the tabular ones' seed-averaged table value), its
observed val_bpb for the LM task, whose floor is the source's entropy rate. Seed s seeds both
the sampler and the objective's noise, so the two samplers meet the same noise.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna

from bilevel_optuna.objectives import LMObjective
from bilevel_optuna.objectives import Objective
from bilevel_optuna.objectives import get_objective
from bilevel_optuna.objectives import list_objectives
from bilevel_optuna.objectives import objective_family
from bilevel_optuna.objectives._lm_task import DEFAULT_PARAMS
from bilevel_optuna.objectives._lm_task import DEFAULT_STEPS

QUICK = {
    "synthetic": ["branin", "hartmann6", "rosenbrock", "ackley", "levy", "mixed"],
    "tabular": ["hpobench/kc1", "hpolib/naval_propulsion", "nb201/cifar10"],
}
TPE_NOTE = (
    "TPE is `optuna.samplers.TPESampler(seed=s)` with Optuna {version}'s defaults: "
    "multivariate=True (the 5.x default for one objective), n_startup_trials=10, "
    "n_ei_candidates=24, gamma(n)=min(ceil(0.1 n), 25), prior_weight=1.0, "
    "consider_endpoints=False, consider_magic_clip=True, constant_liar=True. "
    "Random is `optuna.samplers.RandomSampler(seed=s)`."
)

SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "TPE": lambda s: optuna.samplers.TPESampler(seed=s),
    "random": lambda s: optuna.samplers.RandomSampler(seed=s),
}


def _incumbent_regret(objective: Objective, study: optuna.Study, observed: bool) -> float:
    best = study.best_trial
    if observed:
        assert best.value is not None
        return objective.regret(best.value)
    return objective.regret(objective.true_value(best.params))


def regret_row(
    name: str, *, seeds: int, trials: int, make: Callable[[int], Objective]
) -> dict[str, Any]:
    """Median (and quartiles of) incumbent regret after ``trials`` trials, per sampler."""
    observed = objective_family(name) == "lm"
    row: dict[str, Any] = {"name": name, "family": objective_family(name)}
    started = time.perf_counter()
    for label, sampler_for in SAMPLERS.items():
        regrets = []
        for seed in range(seeds):
            objective = make(seed)
            study = optuna.create_study(direction=objective.direction, sampler=sampler_for(seed))
            study.optimize(objective, n_trials=trials)
            regrets.append(_incumbent_regret(objective, study, observed))
        row[label] = regrets
    row["seconds"] = time.perf_counter() - started
    return row


def _fmt(x: float) -> str:
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _summary(values: list[float]) -> str:
    q1, q3 = np.percentile(values, [25, 75])
    return f"{_fmt(statistics.median(values))} [{_fmt(q1)}, {_fmt(q3)}]"


def print_regret_table(rows: list[dict[str, Any]], *, seeds: int, trials: int) -> None:
    print(
        f"\n### TPE and random search: median incumbent regret after {trials} trials, "
        f"{seeds} seeds [quartiles]\n"
    )
    print("| objective | family | TPE | random | TPE better (of seeds) | wall s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        wins = sum(t < r for t, r in zip(row["TPE"], row["random"]))
        print(
            f"| {row['name']} | {row['family']} | {_summary(row['TPE'])} | "
            f"{_summary(row['random'])} | {wins}/{len(row['TPE'])} | {row['seconds']:.0f} |"
        )
    print("\n" + TPE_NOTE.format(version=optuna.__version__))


def lm_timing(*, repeats: int, threads: list[int], steps: int) -> None:
    """Seconds per LM trial at the default budget and configuration, per CPU thread count."""
    print(
        f"\n### LM task: one trial at the default budget ({steps} steps), default configuration\n"
    )
    print(
        "| device | threads | seconds per trial (median [min, max]) | training s | "
        "val_bpb (median over seeds) | floor (entropy rate) | gap |"
    )
    print("|---|---|---|---|---|---|---|")
    for n in threads:
        objective = LMObjective(steps=steps, threads=n, device="cpu")
        objective.run(DEFAULT_PARAMS, seed=0)  # warm-up: first-call costs of torch
        totals, training, values = [], [], []
        for seed in range(repeats):
            started = time.perf_counter()
            result = objective.run(DEFAULT_PARAMS, seed=seed)
            totals.append(time.perf_counter() - started)
            training.append(result.training_seconds)
            values.append(result.val_bpb)
        floor = objective.optimum
        assert floor is not None
        value = statistics.median(values)
        print(
            f"| cpu | {n} | {statistics.median(totals):.1f} [{min(totals):.1f}, "
            f"{max(totals):.1f}] | {statistics.median(training):.1f} | {value:.4f} "
            f"({', '.join(f'{v:.3f}' for v in values)}) | {floor:.4f} | {value - floor:.3f} |"
        )
    print(
        f"\nDefault configuration: {DEFAULT_PARAMS}; order-2 Markov source over 16 symbols, "
        f"context 32, seeds 0..{repeats - 1}, after one untimed warm-up trial."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="every objective and the LM row")
    parser.add_argument("--only", choices=["synthetic", "tabular", "lm"], action="append")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument(
        "--lm-steps",
        type=int,
        default=50,
        help="step budget of the LM trials in the regret row (default 50)",
    )
    parser.add_argument(
        "--lm-seeds",
        type=int,
        default=None,
        help="seeds of the LM regret row (default: --seeds with --full, else 0)",
    )
    parser.add_argument("--timing-repeats", type=int, default=3)
    parser.add_argument(
        "--timing-threads",
        type=int,
        nargs="*",
        default=[1, 2],
        help="CPU thread counts of the LM timing (none: skip the timing)",
    )
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    families = args.only or ["synthetic", "tabular", "lm"]
    print(
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Optuna {optuna.__version__}, {datetime.date.today()}"
    )
    print(f"Command: python benchmarks/objectives.py {' '.join(sys.argv[1:])}".rstrip())

    if "lm" in families and args.timing_threads:
        lm_timing(repeats=args.timing_repeats, threads=args.timing_threads, steps=DEFAULT_STEPS)

    rows: list[dict[str, Any]] = []
    for family in ("synthetic", "tabular"):
        if family not in families:
            continue
        names = (
            [n for n in list_objectives() if objective_family(n) == family]
            if args.full
            else QUICK[family]
        )
        for name in names:
            rows.append(
                regret_row(
                    name,
                    seeds=args.seeds,
                    trials=args.trials,
                    make=lambda s, n=name: get_objective(n, seed=s),
                )
            )
            print(f"  done {name} in {rows[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
    lm_seeds = args.lm_seeds if args.lm_seeds is not None else (args.seeds if args.full else 0)
    if "lm" in families and lm_seeds > 0:
        rows.append(
            regret_row(
                "lm",
                seeds=lm_seeds,
                trials=args.trials,
                make=lambda s: LMObjective(steps=args.lm_steps, seed=1000 * s),
            )
        )
        rows[-1]["name"] = f"lm (steps={args.lm_steps})"
    if rows:
        print_regret_table(rows, seeds=args.seeds, trials=args.trials)
        if lm_seeds and lm_seeds != args.seeds:
            print(f"The LM row has {lm_seeds} seeds.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
