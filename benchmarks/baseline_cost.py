"""What each baseline sampler costs per trial, and how far it gets: random, TPE and GP.

Decides whether Optuna's GPSampler is a default baseline of the bilevel run or opt-in: a
baseline runs R seeds per objective on every run, so its sampler time adds to every run.

Usage (from the repository root):

    python benchmarks/baseline_cost.py                        # branin, hartmann6; 20 trials
    python benchmarks/baseline_cost.py --objectives branin --trials 30 --seeds 5

Prints one row per (objective, sampler): sampler seconds per trial (the objectives here cost
microseconds, so the wall time is the sampler's), and the median regret at the budget.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import optuna

from bilevel_optuna.objectives import get_objective
from bilevel_optuna.studies._arms import make_sampler

SAMPLERS = ("random", "tpe", "gp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", nargs="+", default=["branin", "hartmann6"])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(
        f"# {datetime.date.today()} {platform.node()} {os.cpu_count()} CPUs, optuna "
        f"{optuna.__version__}, {args.trials} trials, {args.seeds} seeds"
    )
    print(f"{'objective':<12}{'sampler':<8}{'s/trial':>10}{'s/study':>10}{'median regret':>16}")
    for name in args.objectives:
        objective = get_objective(name)
        for sampler_name in SAMPLERS:
            seconds, regrets = [], []
            for seed in range(args.seeds):
                study = optuna.create_study(
                    sampler=make_sampler(sampler_name, seed=seed), direction=objective.direction
                )
                start = time.perf_counter()
                study.optimize(objective, n_trials=args.trials)
                seconds.append(time.perf_counter() - start)
                regrets.append(objective.regret(study.best_value))
            per_study = statistics.fmean(seconds)
            print(
                f"{name:<12}{sampler_name:<8}{per_study / args.trials:>10.4f}{per_study:>10.2f}"
                f"{statistics.median(regrets):>16.4g}"
            )


if __name__ == "__main__":
    main()
