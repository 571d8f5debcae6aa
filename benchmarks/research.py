"""Level 2 figures: the per-trial cost of the boundary, and research rounds on the embedded model.

1. Hook cost: the same mechanism (tests' FarFromHistory: prepare, review, choose, after_trial)
   called in-process (imported with importlib, trusted) and through the guarded proxy (its own
   process behind bubblewrap, rlimits and seccomp, plain data over a pipe), on a study of
   --trials completed trials: wall time of one trial's hooks (1 prepare, 1 review, 1 choose of 3
   candidates, 1 after_trial), --calls repetitions, after one warm-up call (the child's start is
   timed apart).
2. Rounds: a small bilevel run on the embedded model (Branin, 4 inner trials, 1 repeat), then
   --rounds research rounds in both generation modes (compose and code), no evaluation; time per
   round and the share of generated sources the gate accepted per mode.

    python benchmarks/research.py --trials 30 --calls 50 --rounds 3
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "research_tests"))

import sources as S  # noqa: E402

from bilevel_optuna.research import check_source  # noqa: E402
from bilevel_optuna.research._proxy import guarded_class  # noqa: E402
from bilevel_optuna.samplers.mechanisms._loading import load_mechanism_source  # noqa: E402
from bilevel_optuna.samplers.mechanisms._base import ProposalContext  # noqa: E402


def _study(n: int) -> optuna.Study:
    space = {
        "x": optuna.distributions.FloatDistribution(-5, 5),
        "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
        "n": optuna.distributions.IntDistribution(1, 8),
        "c": optuna.distributions.CategoricalDistribution(["a", "b", "c"]),
    }
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(n):
        t = study.ask(space)
        study.tell(t, t.params["x"] ** 2 + t.params["n"])
    return study


def _one_trial(mechanism, study: optuna.Study) -> None:  # type: ignore[no-untyped-def]
    trials = study.get_trials(deepcopy=False)
    space = dict(trials[0].distributions)
    rng = np.random.default_rng(0)
    ctx = ProposalContext(
        study=study, trial=trials[-1], search_space=space, trials=trials, minimize=True,
        history=list(trials[-15:]), notes=[], rng=rng,
    )  # fmt: skip
    cands = [{"x": float(rng.uniform(-5, 5)), "lr": 0.01, "n": 3, "c": "a"} for _ in range(3)]
    mechanism.prepare(ctx)
    mechanism.review(dict(cands[0]), ctx)
    mechanism.choose([dict(c) for c in cands], ctx)
    mechanism.after_trial(study, trials[-1], trials[-1].state, trials[-1].values)


def hook_cost(n_trials: int, calls: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _study(n_trials)
    check = check_source(S.GOOD)
    assert check.accepted, check.reasons
    inproc = load_mechanism_source(S.GOOD)(radius=0.01)
    guarded = guarded_class(
        S.GOOD, name="far_bench", hooks=check.hooks, space=check.space, sha256=check.sha256
    )(radius=0.01)
    start = time.perf_counter()
    _one_trial(guarded, study)
    cold = time.perf_counter() - start
    rows = {}
    for label, mech in (("in-process", inproc), ("guarded", guarded)):
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            _one_trial(mech, study)
            times.append(time.perf_counter() - t0)
        rows[label] = times
    guarded.close()
    print(f"\nHook cost per trial ({n_trials} completed trials in the study, {calls} calls)")
    print("| path | median ms | p90 ms |")
    print("|---|---|---|")
    for label, times in rows.items():
        ms = sorted(1000 * t for t in times)
        print(f"| {label} | {statistics.median(ms):.2f} | {ms[int(0.9 * (len(ms) - 1))]:.2f} |")
    print(f"| guarded, first call (process start + load) | {1000 * cold:.0f} | |")


def rounds(n_rounds: int) -> None:
    from bilevel_optuna.research import run_research
    from bilevel_optuna.studies import BilevelSettings
    from bilevel_optuna.studies import OuterSettings
    from bilevel_optuna.studies import OuterSpace
    from bilevel_optuna.studies import run_bilevel_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = tempfile.mkdtemp(prefix="bench-research-")
    url = f"sqlite:///{folder}/r.db"
    t0 = time.perf_counter()
    outer = OuterSettings(space=OuterSpace(mechanisms=[]), baselines=("random",), prune=False)
    run_bilevel_study(
        "branin", settings=BilevelSettings(outer=outer), storage=url, run_name="bench",
        n_outer_trials=1, n_inner_trials=4, n_repeats=1, model="local",
    )  # fmt: skip
    print(f"\nBase run on the embedded model: {time.perf_counter() - t0:.0f} s")
    report = None
    for r in range(1, n_rounds + 1):
        report = run_research(
            storage=url, run="bench", rounds=r, mode="both", model="local", max_repairs=2,
            n_outer_trials=0, seed=0,
        )  # fmt: skip
    assert report is not None
    print(
        f"\nResearch rounds on the embedded model ({n_rounds} rounds, both modes, up to 2 repairs)"
    )
    print("| round | model calls | seconds | compose | code |")
    print("|---|---|---|---|---|")
    for number, rec in report.rounds.items():
        status = {m["mode"]: m["status"] for m in rec["mechanisms"]}
        print(
            f"| {number} | {rec['model_calls']} | {rec['seconds']:.0f} | {status.get('compose')} | {status.get('code')} |"
        )
    print("\n| mode | sources written | accepted | share |")
    print("|---|---|---|---|")
    for mode, a in sorted(report.acceptance.items()):
        print(f"| {mode} | {a['written']:.0f} | {a['accepted']:.0f} | {a['share']:.0%} |")
    stages: dict[str, int] = {}
    for m in report.mechanisms:
        if not m.accepted:
            stages[f"{m.mode}:{m.check.stage}"] = stages.get(f"{m.mode}:{m.check.stage}", 0) + 1
    print(f"\nRejections by mode and stage: {stages}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-rounds", action="store_true")
    args = parser.parse_args()
    print(
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.platform()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, optuna {optuna.__version__}"
    )
    hook_cost(args.trials, args.calls)
    if not args.skip_rounds:
        rounds(args.rounds)


if __name__ == "__main__":
    main()
