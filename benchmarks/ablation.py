"""Benchmark: the ablation. Does each level of the product give a better optimizer, held out?

Groups, each tuned on the training objectives and judged on held-out tables and seeds:

- ``A``: the default sampler alone (``LLMSampler()``); no tuning.
- ``B``: plus the outer loop (:func:`~bilevel_optuna.run_bilevel_study`) over the proposer's
  settings and the built-in mechanisms it may switch on.
- ``C``: plus Level 2: one research round (:func:`~bilevel_optuna.run_research`, ``mode =
  "compose"``) on B's run; the composed mechanisms the gate accepts are offered to a new outer
  study beside B's choice, and its best configuration is C's.
- ``D``: everything: a wider outer space (every built-in mechanism, up to 3 at once, 1 to 3
  candidates per call) and a research round writing both composed rules and full code.

B, C and D are tuned once per outer seed (``--outer-seeds``, 3 by default), so the outer loop's
own variance shows. Each held-out cell (table, seed) is judged with the choice of one outer seed,
taken in turn (:func:`outer_seed_for`): a group's 120 cells then estimate what a user gets who
runs the outer loop once and keeps its choice, outer-loop variance included, at a third of the
cost of judging every cell with every choice.

The held-out cells are the held-out benchmark's (benchmarks/heldout.py: 12 tables, seeds 0-9,
30 trials), and ``A``, ``tpe`` and ``random`` run on them again here, at this runner's commit,
in one environment with every group. (heldout.csv's ``default`` rows came from other machines
and llama.cpp builds, on which the embedded model's answers differ in the last bits: the same
seed gives the same first trials and then other proposals; docs/benchmarks.md.)

Each held-out study appends one row to benchmarks/results/ablation.csv: arm = the group, the outer
seed, ``tuning_evals`` = the inner trials the group's tuning spent (outer loop, the random
baseline that scales its regret, and the research round's evaluation), and in ``extra`` the
chosen configuration and, for every mechanism the tuning offered, whether its trial records
(``llm:mechanisms``) show it ran. Each finished tuning is kept as one line of
benchmarks/results/ablation_tuning.jsonl, committed with the rows, so a later run (on a fresh
machine, a new storage) judges the same choice without tuning again. Cells already in the file
are skipped; tuning runs are stored and resume. ``python benchmarks/tables.py`` writes the
tables.

    nohup nice -n 10 python benchmarks/ablation.py --storage sqlite:////tmp/ablation.db \
        --outer-seeds 0-0 > /tmp/ablation-o0.log 2>&1 &  # one process per outer seed
    python benchmarks/ablation.py --quick --storage sqlite:////tmp/ablation-quick.db  # minutes

``--model uniform`` swaps the embedded model for the null model (a smoke test of the plumbing).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _cells  # noqa: E402
import _results  # noqa: E402
from heldout import HELDOUT_TABLES  # noqa: E402

from bilevel_optuna import _attrs  # noqa: E402

GROUPS = ["A", "B", "C", "D"]
REFERENCES = ["tpe", "random"]
TUNED = ["B", "C", "D"]
TRAIN = ["branin", "hpobench/kc1"]
B_MECHANISMS = ["classical", "tabu", "orthogonal", "trust_region", "restart"]


@dataclasses.dataclass(frozen=True)
class Size:
    """How much of everything: the tuning runs and the held-out judgement."""

    train: tuple[str, ...]
    n_outer: int
    n_inner: int
    n_repeats: int
    research_outer: int
    tables: tuple[str, ...]
    heldout_seeds: tuple[int, ...]
    heldout_trials: int
    outer_seeds: tuple[int, ...]


SIZES = {
    "full": Size(
        train=tuple(TRAIN), n_outer=8, n_inner=20, n_repeats=2, research_outer=3,
        tables=tuple(HELDOUT_TABLES), heldout_seeds=tuple(range(10)), heldout_trials=30,
        outer_seeds=(0, 1, 2),
    ),
    "quick": Size(
        train=("branin",), n_outer=2, n_inner=4, n_repeats=1, research_outer=1,
        tables=("hpobench/vehicle",), heldout_seeds=(100, 101), heldout_trials=5,
        outer_seeds=(0,),
    ),
}  # fmt: skip


def run_name(group: str, outer_seed: int) -> str:
    return f"ablation/{group}/o{outer_seed}"


def outer_seed_for(table: str, seed: int, outer_seeds: tuple[int, ...]) -> int:
    """The outer seed whose choice judges the held-out cell (table, seed): taken in turn along
    tables and seeds, so each outer seed judges a third of every table's seeds (with 3)."""
    index = HELDOUT_TABLES.index(table) if table in HELDOUT_TABLES else zlib.crc32(table.encode())
    return outer_seeds[(index + seed) % len(outer_seeds)]


def tuning_path(results: str | os.PathLike[str]) -> Path:
    """Where finished tunings are kept: beside the results file (``ablation_tuning.jsonl``)."""
    path = Path(results)
    return path.with_name(f"{path.stem}_tuning.jsonl")


def kept_choices(path: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    """(size, group, outer seed) -> the choice a finished tuning kept in ``path``."""
    kept: dict[tuple[str, str, int], dict[str, Any]] = {}
    for number, record in enumerate(_results.read_records(path), 1):
        try:
            kept[(record["size"], record["group"], int(record["outer_seed"]))] = record["choice"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"{path}, record {number}, is not a kept tuning ({err}); fix or delete that line "
                "(the tuning it held then runs again)."
            ) from None
    return kept


def keep_choice(
    path: Path,
    size: str,
    group: str,
    outer_seed: int,
    choice: dict[str, Any],
    record: dict[str, Any],
) -> None:
    """Append one finished tuning to ``path`` (one JSON line, under the results file's lock)."""
    _results.append_record(path, {
        "size": size, "group": group, "outer_seed": outer_seed, "choice": choice,
        "commit": record["commit"], "machine": record["machine"],
        "date": time.strftime("%Y-%m-%d"),
    })  # fmt: skip


def _space(group: str) -> Any:
    from optuna.distributions import CategoricalDistribution
    from optuna.distributions import FloatDistribution
    from optuna.distributions import IntDistribution

    from bilevel_optuna.samplers.mechanisms._loading import builtin_mechanism_names
    from bilevel_optuna.studies import OuterSpace

    if group == "D":
        return OuterSpace(
            temperature=FloatDistribution(0.3, 1.0),
            history_size=IntDistribution(8, 24),
            n_candidates=IntDistribution(1, 3),
            mechanisms=builtin_mechanism_names(),
            max_mechanisms=3,
        )
    return OuterSpace(
        temperature=FloatDistribution(0.3, 1.0),
        history_size=IntDistribution(8, 20),
        history_order=CategoricalDistribution(["stable", "best"]),
        template=CategoricalDistribution(["compact", "default"]),
        n_candidates=1,
        mechanisms=B_MECHANISMS,
        max_mechanisms=2,
    )


def _runs_of(storage: optuna.storages.BaseStorage, names: set[str]) -> list[optuna.Study]:
    studies = []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if s.user_attrs.get(_attrs.RUN) in names and s.user_attrs.get(_attrs.KIND) in (
            "inner",
            "baseline",
        ):
            studies.append(optuna.load_study(study_name=s.study_name, storage=storage))
    return studies


def _proof(studies: list[optuna.Study], offered: list[str]) -> dict[str, str]:
    """Offered mechanism -> ``ok``, ``never_changed`` or ``never_ran``, from the trial records."""
    from bilevel_optuna.samplers._summary import summarize_mechanisms

    inner = [s for s in studies if s.user_attrs.get(_attrs.KIND) == "inner"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = summarize_mechanisms(inner, mechanisms=offered, warn=False)
    return {name: summary[name].status for name in offered}


def _enqueue_each_mechanism(
    storage: optuna.storages.BaseStorage, name: str, space: Any, n_outer: int
) -> int:
    """On a new outer study: Level 0 first, then each offered mechanism alone, so the records
    prove every one ran; return the outer trials to run (at least one per enqueued trial)."""
    from bilevel_optuna.studies import LEVEL0

    outer = optuna.create_study(
        storage=storage, study_name=name, direction="minimize", load_if_exists=True
    )
    queue = [(space.params_of(LEVEL0), {_attrs.REFERENCE: "llm-level0"})]
    for mechanism in sorted(space.mechanisms):
        params = {**space.params_of(LEVEL0), f"mech.{mechanism}": True}
        if mechanism == "candidate_choice" and "n_candidates" in params:
            params["n_candidates"] = 3  # its choose hook needs two candidates or more
        queue.append((params, {"ablation:role": mechanism}))
    if not outer.trials:
        for params, attrs in queue:
            outer.enqueue_trial(params, user_attrs=attrs)
    return max(n_outer, len(queue))


def tune(
    url: str, group: str, outer_seed: int, size: Size, model: str, say: Any
) -> dict[str, Any]:
    """Tune group B, C or D on the training objectives (resumable); return its choice.

    C's research round runs on B's outer study (C is B plus Level 2, so B's tuning is shared and
    counted in both). The choice is kept in the outer study's user attribute
    ``ablation:choice:<group>``, so a later run judges the same configuration without tuning
    again.
    """
    from bilevel_optuna import BilevelSettings
    from bilevel_optuna import OuterSettings
    from bilevel_optuna import run_bilevel_study
    from bilevel_optuna import run_research

    storage = _cells.storage(url)
    name = run_name("B" if group == "C" else group, outer_seed)
    key = f"ablation:choice:{group}"
    try:
        outer = optuna.load_study(study_name=name, storage=storage)
        kept = outer.user_attrs.get(key)
    except KeyError:
        kept = None
    if kept:
        return dict(kept)
    space = _space("B" if group == "C" else group)
    started = time.perf_counter()
    n_outer = _enqueue_each_mechanism(storage, name, space, size.n_outer)
    settings = BilevelSettings(outer=OuterSettings(space=space, baselines=(), prune=False))
    result = run_bilevel_study(
        list(size.train), settings=settings, storage=url, run_name=name, n_outer_trials=n_outer,
        n_inner_trials=size.n_inner, n_repeats=size.n_repeats, model=model, seed=outer_seed,
        progress=say, artifacts=None,
    )  # fmt: skip
    config = result.best_config.to_dict() if result.best_config else {}
    offered = sorted(space.mechanisms)
    runs = {name}
    research: dict[str, Any] = {}
    if group in ("C", "D"):
        run_research(
            storage=url, run=name, rounds=1, mode="compose" if group == "C" else "both",
            model=model, seed=outer_seed, n_outer_trials=size.research_outer,
            objectives=list(size.train), n_inner_trials=size.n_inner,
            n_repeats=size.n_repeats, baselines=[], progress=say,
        )  # fmt: skip
        from bilevel_optuna.research import MechanismStore

        store = MechanismStore(storage, name, create=False)
        record = store.rounds().get(1) or {}
        accepted = [m["name"] for m in record.get("mechanisms", []) if m["status"] == "accepted"]
        research = {
            "written": len(record.get("mechanisms", [])),
            "accepted": accepted,
            # Kept with the choice, so a new storage (a later session, another server) can judge
            # it: register_kept_mechanisms gates each source again before it runs.
            "sources": {name: store.get(name).source for name in accepted},
        }
        evaluation = record.get("evaluation") or {}
        if evaluation.get("best_config"):
            config = evaluation["best_config"]
            runs.add(evaluation["study"])
        offered += accepted
        del report
    studies = _runs_of(storage, runs)
    evals = sum(
        1
        for s in studies
        for t in s.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    )
    choice = {
        "run": name,
        "config": config,
        "tuning_evals": evals,
        "mechanisms": _proof(studies, offered),
        "research": research,
        "tuning_s": round(time.perf_counter() - started, 1),
    }
    optuna.load_study(study_name=name, storage=storage).set_user_attr(key, choice)
    return choice


def register_kept_mechanisms(url: str, choice: dict[str, Any]) -> list[str]:
    """Register the generated mechanisms a kept choice uses, and return their names.

    They come from the tuning's research study where this storage holds it. In a new storage
    (the tuning ran in another session or on another server) each source kept with the choice
    is stored there after the gate checked it again, as any generated code is: a source that no
    longer passes, or passes under another name, is refused, never run.
    """
    from bilevel_optuna.research import MechanismStore
    from bilevel_optuna.research import check_source

    research = choice.get("research") or {}
    accepted = list(research.get("accepted") or [])
    if not accepted:
        return []
    sources = research.get("sources") or {}
    store = MechanismStore(_cells.storage(url), choice["run"])
    stored = {m.name for m in store.list() if m.accepted}
    for name in [n for n in accepted if n not in stored]:
        if name not in sources:
            raise SystemExit(
                f"The kept tuning of {choice['run']} uses the generated mechanism {name}, which "
                "neither this storage nor the kept record holds: judge it with the storage the "
                "tuning ran in, or delete its line from ablation_tuning.jsonl to tune again."
            )
        item = store.add(
            sources[name], check_source(sources[name]), round=0, idea="kept tuning", mode="kept"
        )
        if item.name != name:
            raise SystemExit(
                f"The kept source of {name} ({choice['run']}) does not pass the gate under that "
                f"name now ({item.check.summary()}); delete its tuning's line from "
                "ablation_tuning.jsonl to tune again."
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return store.register()


def make_sampler(
    arm: str,
    choice: dict[str, Any] | None,
    objective: Any,
    seed: int,
    model: str,
    url: str,
    outer_seed: int | None,
) -> optuna.samplers.BaseSampler:
    if arm == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if arm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    from bilevel_optuna.samplers import LLMSampler

    kwargs: dict[str, Any] = {}
    if arm != "A" and choice and choice["config"]:
        from bilevel_optuna.studies import ProposerConfig

        assert outer_seed is not None
        register_kept_mechanisms(url, choice)
        kwargs = ProposerConfig.from_dict(choice["config"]).sampler_kwargs()
    return LLMSampler(
        model=model, description=objective.description, search_space=objective.search_space,
        seed=seed, **kwargs,
    )  # fmt: skip


def judge(
    url: str,
    arm: str,
    outer_seed: int | None,
    table: str,
    seed: int,
    size: Size,
    model: str,
    choice: dict[str, Any] | None,
    record: dict[str, Any],
) -> str:
    """Run (or finish) one held-out study and append its row."""
    from bilevel_optuna.objectives import get_objective

    objective = get_objective(table, seed=seed)
    tag = "" if outer_seed is None else f"/o{outer_seed}"
    name = f"ablation/heldout/{arm}{tag}/{table}/seed{seed:03d}"
    study, done = _cells.open_cell(
        _cells.storage(url), name, direction=objective.direction,
        sampler=make_sampler(arm, choice, objective, seed, model, url, outer_seed),
    )  # fmt: skip
    if done < size.heldout_trials:
        study.optimize(_cells.recording_true_value(objective), n_trials=size.heldout_trials - done)
    extra: dict[str, Any] = {}
    if choice is not None:
        extra = {
            "run": choice["run"],
            "config": choice["config"],
            "mechanisms": choice["mechanisms"],
            "research": {k: v for k, v in choice["research"].items() if k != "sources"},
        }
    row = _results.study_row(
        study, objective, benchmark="ablation", arm=arm, objective_name=table, seed=seed,
        n_trials=size.heldout_trials, commit=record["commit"], machine_name=record["machine"],
        outer_seed=outer_seed, tuning_evals=choice["tuning_evals"] if choice else 0,
        extra=extra or None,
    )  # fmt: skip
    assert row is not None
    _results.append_rows(record["results"], [row])
    return f"{name}: regret {row['regret']:.4g}, {row['wall_s']:.0f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default="sqlite:////tmp/ablation.db")
    parser.add_argument("--quick", action="store_true", help="the smoke-test size (minutes)")
    parser.add_argument("--groups", default=",".join(GROUPS + REFERENCES))
    parser.add_argument("--outer-seeds", default=None, help="e.g. '0-2' (default: the size's)")
    parser.add_argument(
        "--judge-with", default=None,
        help="the outer seeds the held-out cells are shared among (default: the size's, 0-2, "
        "and any other --outer-seeds), so one process per outer seed (--outer-seeds 1-1) "
        "judges its own third",
    )  # fmt: skip
    parser.add_argument("--seeds", default=None, help="held-out seeds, e.g. '0-9'")
    parser.add_argument("--tables", default=None, help="held-out tables, comma-separated")
    parser.add_argument("--model", default="local", help="chat model spec (default: embedded)")
    _results.add_results_arguments(parser, "ablation")
    args = parser.parse_args(argv)
    size_name = "quick" if args.quick else "full"
    size = SIZES[size_name]
    shared = size.outer_seeds
    try:
        if args.outer_seeds:
            outer = tuple(_results.parse_seeds(args.outer_seeds))
            size = dataclasses.replace(size, outer_seeds=outer)
            shared = tuple(sorted(set(shared) | set(outer)))
        if args.seeds:
            held = tuple(_results.parse_seeds(args.seeds))
            size = dataclasses.replace(size, heldout_seeds=held)
        if args.judge_with:
            shared = tuple(_results.parse_seeds(args.judge_with))
    except ValueError as err:
        parser.error(str(err))
    if not set(size.outer_seeds) <= set(shared):
        parser.error(
            f"--judge-with {args.judge_with} must include every outer seed "
            f"{list(size.outer_seeds)}: add them, or leave --judge-with out"
        )
    if args.tables:
        size = dataclasses.replace(size, tables=tuple(_results.parse_list(args.tables)))
    groups = _results.parse_list(args.groups)
    unknown = sorted(set(groups) - set(GROUPS + REFERENCES))
    if unknown:
        parser.error(f"unknown groups {unknown}; choose from {GROUPS + REFERENCES}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    record = {
        "results": args.results,
        "commit": args.commit or _results.commit_id(),
        "machine": args.machine or _results.machine(),
    }
    done = _results.done_cells(args.results)
    kept_at = tuning_path(args.results)
    start = time.perf_counter()

    def say(line: str) -> None:
        print(f"[{time.perf_counter() - start:.0f} s] {line}", flush=True)

    def key(group: str, table: str, seed: int, outer_seed: int | None) -> tuple[str, ...]:
        return _results.cell_key({
            "benchmark": "ablation", "arm": group, "objective": table, "seed": seed,
            "n_trials": size.heldout_trials, "outer_seed": outer_seed,
        })  # fmt: skip

    def pending(group: str, outer_seed: int | None) -> list[tuple[str, int]]:
        return [
            (table, seed)
            for seed in size.heldout_seeds
            for table in size.tables
            if (outer_seed is None or outer_seed_for(table, seed, shared) == outer_seed)
            and key(group, table, seed, outer_seed) not in done
        ]

    _cells.storage(args.storage)  # the tables, once
    for group in [g for g in groups if g not in TUNED]:  # A and the references: no tuning
        for table, seed in pending(group, None):
            say(judge(args.storage, group, None, table, seed, size, args.model, None, record))
    for outer_seed in size.outer_seeds:
        # Tune every group of this outer seed first (kept for later runs), then judge its cells
        # group by group within each cell, so the rows so far always pair up.
        choices: dict[str, dict[str, Any]] = {}
        for group in [g for g in TUNED if g in groups and pending(g, outer_seed)]:
            choice = kept_choices(kept_at).get((size_name, group, outer_seed))
            if choice is None:
                say(f"tuning {run_name(group, outer_seed)}")
                choice = tune(args.storage, group, outer_seed, size, args.model, say)
                keep_choice(kept_at, size_name, group, outer_seed, choice, record)
            say(f"{group}, outer seed {outer_seed}: {json.dumps(choice, sort_keys=True)}")
            choices[group] = choice
        cells = sorted(
            {cell for group in choices for cell in pending(group, outer_seed)},
            key=lambda cell: (cell[1], size.tables.index(cell[0])),
        )
        for table, seed in cells:
            for group, choice in choices.items():
                if key(group, table, seed, outer_seed) in done:
                    continue
                say(judge(args.storage, group, outer_seed, table, seed, size, args.model,
                          choice, record))  # fmt: skip
                done.add(key(group, table, seed, outer_seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
