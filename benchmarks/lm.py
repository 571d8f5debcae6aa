"""Benchmark: the LM task. How close to the entropy floor does each optimizer get?

The task (objectives/_lm_task.py): tune a tiny decoder-only transformer's training on text from
an order-2 Markov source over 16 symbols whose entropy rate, the floor of val_bpb, is known
exactly. Regret is a study's best val_bpb minus the floor. Arms, on paired seeds (the seed sets
the sampler, the model's sampling and every trial's training seed):

- ``default``: ``LLMSampler()``, the shipped default;
- ``bilevel``: the configuration a bilevel run chose (``--config`` takes a ``bilevel:best_config``
  dict as JSON or a file, ``--from-run STORAGE_URL RUN`` reads it from the outer study, and
  ``--from-ablation B/o0`` takes the one the ablation's tuning of group B on outer seed 0 kept
  in benchmarks/results/ablation_tuning.jsonl, tuned on Branin and HPOBench kc1; a C or D
  choice brings its generated mechanisms' sources, which pass the gate again in each process);
- ``tpe`` and ``random``.

The size: the task's default 300 optimizer steps per trial (8.4 s on one core of the development
machine at a load average of 4 to 10, BENCHMARKS.md "Objectives"; fewer steps leave most
configurations on the unigram plateau, so the comparison would measure who starts learning
earliest), 20 trials per study: about 3 minutes a TPE or random study there, plus the model's
proposals for the LLM arms. Each finished study appends one row to benchmarks/results/lm.csv
(objective ``lm/300steps``); cells already there are skipped, and every study is stored, so a
stopped run resumes. ``--jobs 2`` runs two studies at a time in their own processes (each trial
trains on one thread), which is what two cores afford.

    nohup nice -n 10 python benchmarks/lm.py --storage sqlite:////tmp/lm.db --seeds 10 \
        --jobs 2 > /tmp/lm.log 2>&1 &
    python benchmarks/tables.py
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _cells  # noqa: E402
import _results  # noqa: E402

ARMS = ["tpe", "random", "default", "bilevel"]
STEPS = 300
TRIALS = 20


def load_config(
    text: str | None, from_run: list[str] | None, from_ablation: str | None = None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The bilevel-chosen configuration from ``--config``, ``--from-run`` or
    ``--from-ablation`` (or None), and the ablation's kept choice where its generated
    mechanisms must be registered in every process that runs a cell."""
    if from_ablation:
        choice = ablation_choice(from_ablation)
        generated = choice if (choice.get("research") or {}).get("accepted") else None
        return dict(choice["config"]), generated
    if text:
        path = Path(text)
        return dict(json.loads(path.read_text() if path.is_file() else text)), None
    if from_run:
        url, run = from_run
        outer = optuna.load_study(study_name=run, storage=_cells.storage(url))
        config = outer.user_attrs.get("bilevel:best_config")
        if not config:
            raise SystemExit(f"The outer study {run!r} has no best configuration yet.")
        return dict(config), None
    return None, None


def ablation_choice(spec: str, kept: Path | None = None) -> dict[str, Any]:
    """The choice the ablation kept for ``GROUP/oSEED`` (its full size), e.g. ``B/o0``: its
    configuration and, for C and D, the sources of the generated mechanisms it uses (registered
    behind the gate per cell)."""
    from ablation import kept_choices
    from ablation import tuning_path

    kept = kept or tuning_path(_results.results_path("ablation"))
    group, _, outer = spec.partition("/o")
    if not outer.isdigit():
        raise SystemExit(f"--from-ablation takes GROUP/oSEED, such as B/o0, not {spec!r}.")
    choices = kept_choices(kept)
    choice = choices.get(("full", group, int(outer)))
    if choice is None:
        have = ", ".join(f"{g}/o{o}" for size, g, o in sorted(choices) if size == "full")
        raise SystemExit(
            f"{kept} keeps no tuning of {spec} (it has: {have or 'none'}); run "
            f"benchmarks/ablation.py --groups {group} --outer-seeds {outer}-{outer} first."
        )
    research = choice.get("research") or {}
    missing = set(research.get("accepted") or []) - set(research.get("sources") or {})
    if missing:
        raise SystemExit(
            f"{spec}'s choice uses generated mechanisms {sorted(missing)} whose sources were not "
            "kept (a tuning kept before they were); pass --from-run STORAGE RUN with the "
            "storage it was tuned in instead."
        )
    return dict(choice)


def make_sampler(arm: str, seed: int, objective: Any, model: str,
                 config: dict[str, Any] | None) -> optuna.samplers.BaseSampler:
    if arm == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if arm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    from bilevel_optuna.samplers import LLMSampler

    kwargs: dict[str, Any] = {}
    if arm == "bilevel":
        from bilevel_optuna.studies import ProposerConfig

        assert config is not None
        kwargs = ProposerConfig.from_dict(config).sampler_kwargs()
    return LLMSampler(
        model=model, description=objective.description, search_space=objective.search_space,
        seed=seed, **kwargs,
    )  # fmt: skip


def run_cell(url: str, arm: str, seed: int, steps: int, n_trials: int, model: str,
             config: dict[str, Any] | None, record: dict[str, Any],
             generated: dict[str, Any] | None = None) -> str:
    """Run (or finish) one study and append its row."""
    from bilevel_optuna.objectives import LMObjective

    if arm == "bilevel" and generated:  # in this process, before the sampler names them
        from ablation import register_kept_mechanisms

        register_kept_mechanisms(url, generated)
    objective = LMObjective(steps=steps, seed=seed)
    name = f"lm-bench/{steps}steps/{arm}/seed{seed:03d}"
    # No pruner: every trial trains to the end, so the arms differ by their sampler alone.
    study, done = _cells.open_cell(
        _cells.storage(url), name, direction="minimize",
        sampler=make_sampler(arm, seed, objective, model, config),
        pruner=optuna.pruners.NopPruner(),
    )  # fmt: skip
    evaluate = _cells.recording_true_value(objective, observed=True)

    for _ in range(3):  # a diverged training (NaN) fails its trial: try again, a few times
        if done >= n_trials:
            break
        study.optimize(evaluate, n_trials=n_trials - done, catch=(ValueError,))
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    row = _results.study_row(
        study, objective, benchmark="lm", arm=arm, objective_name=f"lm/{steps}steps", seed=seed,
        n_trials=n_trials, commit=record["commit"], machine_name=record["machine"],
        extra={"config": config} if arm == "bilevel" else None,
    )  # fmt: skip
    if row is None:
        return f"{name}: {done} of {n_trials} trials complete after retries; no row"
    _results.append_rows(record["results"], [row])
    return (
        f"{name}: val_bpb {row['best_value']:.4f}, {row['regret']:.4f} above the floor, "
        f"{row['wall_s']:.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default="sqlite:////tmp/lm.db")
    parser.add_argument("--seeds", default="10", help="a count N (0..N-1), '3-5' or '0,4-6'")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--steps", type=int, default=STEPS, help="optimizer steps per trial")
    parser.add_argument("--trials", type=int, default=TRIALS, help="trials per study")
    parser.add_argument("--model", default="local", help="chat model spec (default: embedded)")
    parser.add_argument("--jobs", type=int, default=1, help="studies run in parallel processes")
    parser.add_argument("--config", default=None, help="the bilevel arm's configuration (JSON)")
    parser.add_argument("--from-run", nargs=2, metavar=("STORAGE", "RUN"), default=None)
    parser.add_argument(
        "--from-ablation", default=None, metavar="GROUP/oSEED",
        help="the configuration the ablation kept for a group and outer seed, e.g. B/o0",
    )  # fmt: skip
    _results.add_results_arguments(parser, "lm")
    args = parser.parse_args(argv)
    try:
        seeds = _results.parse_seeds(args.seeds)
    except ValueError as err:
        parser.error(str(err))
    arms = _results.parse_list(args.arms)
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        parser.error(f"unknown arms {unknown}; choose from {ARMS}")
    if args.jobs < 1:
        parser.error(f"--jobs must be 1 or more, got {args.jobs}")
    config, generated = load_config(args.config, args.from_run, args.from_ablation)
    if config is None and "bilevel" in arms:
        arms.remove("bilevel")
        print(
            "No --config, --from-run or --from-ablation: the bilevel arm is left out.", flush=True
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    record = {
        "results": args.results,
        "commit": args.commit or _results.commit_id(),
        "machine": args.machine or _results.machine(),
    }
    done = _results.done_cells(args.results)
    cells = [  # seed-major: a stopped run holds complete, paired blocks
        (seed, arm) for seed in seeds for arm in arms
        if _results.cell_key({
            "benchmark": "lm", "arm": arm, "objective": f"lm/{args.steps}steps",
            "seed": seed, "n_trials": args.trials,
        }) not in done
    ]  # fmt: skip
    print(f"{len(cells)} cells to run ({args.results} holds {len(done)})", flush=True)
    _cells.storage(args.storage)  # the tables, once, before any workers race to create them
    start = time.perf_counter()

    def cell_args(seed: int, arm: str) -> tuple[Any, ...]:
        return (args.storage, arm, seed, args.steps, args.trials, args.model, config, record,
                generated)  # fmt: skip

    if args.jobs == 1:
        for seed, arm in cells:
            line = run_cell(*cell_args(seed, arm))
            print(f"[{time.perf_counter() - start:.0f} s] {line}", flush=True)
        return 0
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_cell, *cell_args(seed, arm)) for seed, arm in cells]
        for i, future in enumerate(concurrent.futures.as_completed(futures), 1):
            try:
                line = future.result()
            except Exception as err:  # noqa: BLE001 - report it and go on with the other cells
                line = f"ERROR {type(err).__name__}: {err}"
            print(f"[{i}/{len(cells)} {time.perf_counter() - start:.0f} s] {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
