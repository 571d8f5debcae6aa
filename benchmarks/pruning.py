"""Benchmark: what outer racing saves, and whether it picks what full repeats pick.

Two bilevel runs share one storage, the seeds and the outer space:

- ``<prefix>-full`` runs every repeat of every outer trial (``prune=False``), on the embedded
  model, with the outer TPE sampler choosing the configurations;
- ``<prefix>-racing`` runs *the same outer trials* (the full run's configurations, enqueued in the
  full run's order) with racing on (``prune=True``: the rule of
  ``bilevel_optuna.studies._racing``). Its model answers are served from the full run's
  recorded exchanges where the request is the same (a paired replay: a repeat the racing run
  does run sees exactly the values the full run saw) and asked of the live model where not;
  the report counts both.

The report then prints, from stored trials only:

1. the inner evaluations (inner trials behind the outer trials, baselines excluded) of each run,
   the saving, and on how many repeats each configuration was judged;
2. each run's chosen configuration and whether they are the same; for every configuration the
   racing run stopped, its full-run value beside the value of the configuration chosen;
3. the same outer trials under other stopping rules, replayed on the full run's stored values
   (Optuna's ``WilcoxonPruner`` on repeat means, the racing rule on (repeat, objective)
   instances, SMAC-style intensification without a test, successive halving over the inner
   budget): what each would have saved and chosen. This is a simulation on stored curves, so
   it is labelled as such.

Every step is resumable (run the same command again) and the report reads stored trials only:

    nohup nice -n 5 python benchmarks/pruning.py --storage sqlite:////tmp/racing.db \\
        --only full > /tmp/racing-full.log 2>&1 &
    python benchmarks/pruning.py --storage sqlite:////tmp/racing.db --only racing
    python benchmarks/pruning.py --storage sqlite:////tmp/racing.db --report

Two processes given ``--only full`` share the full run's outer trials (workers).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import statistics
import threading
import time
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.chat._base import ChatReply
from bilevel_optuna.chat._base import ChatRequest

_DONE = (TrialState.COMPLETE, TrialState.PRUNED)


class _ReplayOrLive(ChatModel):
    """Serve the answers a recorded run got for the same request; ask the live model otherwise."""

    def __init__(self, answers: dict[str, ChatReply], live: ChatModel) -> None:
        self._answers = answers
        self._live = live
        self._lock = threading.Lock()
        self.name = live.name
        self.hits = 0
        self.misses = 0

    def complete(self, request: ChatRequest) -> ChatReply:
        reply = self._answers.get(request.hash())
        with self._lock:
            if reply is None:
                self.misses += 1
            else:
                self.hits += 1
        return reply if reply is not None else self._live.complete(request)


def _recorded_answers(storage: Any, run: str) -> dict[str, ChatReply]:
    """Every model answer recorded on the inner and baseline studies of ``run``."""
    answers: dict[str, ChatReply] = {}
    for summary in optuna.get_all_study_summaries(storage=storage, include_best_trial=False):
        if summary.user_attrs.get(_attrs.RUN) != run or summary.study_name == run:
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        for trial in study.get_trials(deepcopy=False):
            for exchange in trial.system_attrs.get(_attrs.EXCHANGES, []):
                answers.setdefault(str(exchange["hash"]), ChatReply.from_dict(exchange["reply"]))
    return answers


def _run(args: argparse.Namespace, racing: bool) -> None:
    from bilevel_optuna.chat import LocalChatModel
    from bilevel_optuna.studies import BilevelSettings
    from bilevel_optuna.studies import InnerSettings
    from bilevel_optuna.studies import OuterSettings
    from bilevel_optuna.studies import run_bilevel_study
    from bilevel_optuna.studies._bilevel import make_storage

    storage, _ = make_storage(args.storage)
    full_name, racing_name = f"{args.prefix}-full", f"{args.prefix}-racing"
    model: ChatModel = LocalChatModel(n_threads=args.threads)
    if racing:
        full = optuna.load_study(study_name=full_name, storage=storage)
        planned = sorted(
            (t for t in full.get_trials(deepcopy=False, states=_DONE) if t.number < args.outer),
            key=lambda t: t.number,
        )
        if len(planned) < args.outer:
            raise SystemExit(
                f"The full run has finished {len(planned)} of its first {args.outer} outer "
                "trials; finish it first (--only full)."
            )
        outer = optuna.create_study(
            storage=storage, study_name=racing_name, load_if_exists=True, direction="minimize"
        )
        # The same outer trials, in the full run's order (a resumed run with a larger --outer
        # enqueues the rest).
        queued = {t.user_attrs.get("bilevel:full_run_trial") for t in outer.trials}
        for t in planned[: args.outer]:
            if t.number not in queued:
                attrs = {"bilevel:full_run_trial": t.number}
                if "bilevel:reference" in t.user_attrs:
                    attrs["bilevel:reference"] = t.user_attrs["bilevel:reference"]
                outer.enqueue_trial(t.params, user_attrs=attrs, skip_if_exists=False)
        model = _ReplayOrLive(_recorded_answers(storage, full_name), model)
    heldout_seeds = tuple(range(100, 100 + args.heldout_seeds)) if racing else None
    settings = BilevelSettings(
        inner=InnerSettings(heldout_seeds=heldout_seeds),
        outer=OuterSettings(
            prune=racing, sampler="tpe", baselines=("random", "tpe", "llm-level0")
        ),
    )
    run_bilevel_study(
        args.objectives,
        settings=settings,
        heldout_objectives=args.heldout if racing else (),
        storage=storage,
        run_name=racing_name if racing else full_name,
        n_outer_trials=args.outer,
        n_inner_trials=args.inner,
        n_repeats=args.repeats,
        seed=args.seed,
        model=model,
        progress=lambda line: print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True),
    )
    if isinstance(model, _ReplayOrLive):
        print(
            f"racing run: {model.hits} answers replayed from the full run, {model.misses} asked "
            "of the live model",
            flush=True,
        )


# ------------------------------------------------------------------------------------ report
def _inner_trials(storage: Any, name: str, cache: dict[str, int], cap: int) -> int:
    if name not in cache:
        inner = optuna.load_study(study_name=name, storage=storage)
        finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        # At most the budget: two workers racing on one study (a shared baseline) can run a
        # few more, which the score never reads.
        cache[name] = min(cap, len(inner.get_trials(deepcopy=False, states=finished)))
    return cache[name]


def _evaluations(storage: Any, outer: optuna.Study, n_outer: int, cap: int) -> dict[int, int]:
    """Inner trials behind each of the first ``n_outer`` finished outer trials."""
    cache: dict[str, int] = {}
    trials = sorted(outer.get_trials(deepcopy=False, states=_DONE), key=lambda t: t.number)
    return {
        t.number: sum(
            _inner_trials(storage, n, cache, cap) for n in t.user_attrs.get(_attrs.INNER_STUDIES, [])
        )
        for t in trials[:n_outer]
    }


def _judged(t: optuna.trial.FrozenTrial, n_repeats: int) -> int:
    judged = t.user_attrs.get(_attrs.JUDGED_ON)
    if isinstance(judged, dict):
        return int(judged["repeats"])
    return n_repeats if t.state == TrialState.COMPLETE else len(t.intermediate_values)


def report(args: argparse.Namespace) -> None:
    from bilevel_optuna.studies._bilevel import make_storage

    storage, _ = make_storage(args.storage)
    full = optuna.load_study(study_name=f"{args.prefix}-full", storage=storage)
    racing = optuna.load_study(study_name=f"{args.prefix}-racing", storage=storage)
    print(
        f"machine: {platform.processor() or platform.machine()}, python "
        f"{platform.python_version()}, optuna {optuna.__version__}; objectives "
        f"{', '.join(args.objectives)}; {args.outer} outer trials, {args.repeats} repeats, "
        f"{args.inner} inner trials"
    )
    full_trials = sorted(full.get_trials(deepcopy=False, states=_DONE), key=lambda t: t.number)
    full_trials = full_trials[: args.outer]
    race_trials = sorted(racing.get_trials(deepcopy=False, states=_DONE), key=lambda t: t.number)
    race_trials = race_trials[: args.outer]
    full_evals = _evaluations(storage, full, args.outer, args.inner)
    race_evals = _evaluations(storage, racing, args.outer, args.inner)
    full_value = {t.number: t.values[0] for t in full_trials if t.state == TrialState.COMPLETE}
    best_full = min(full_value, key=lambda n: full_value[n])
    arm_of = {t.number: t.user_attrs.get(_attrs.ARM, "") for t in full_trials}
    race_complete = [t for t in race_trials if t.state == TrialState.COMPLETE]
    best_race = min(race_complete, key=lambda t: t.values[0])

    print()
    print(
        "| outer trial | configuration | full run: value | racing: judged on (repeats) "
        "| racing: state, value | inner evaluations full / racing |"
    )
    print("|---|---|---|---|---|---|")
    for t in race_trials:
        source = int(t.user_attrs.get("bilevel:full_run_trial", t.number))
        judged = _judged(t, args.repeats)
        state = (
            f"complete, {t.values[0]:.4g}"
            if t.state == TrialState.COMPLETE
            else f"stopped ({(t.user_attrs.get(_attrs.JUDGED_ON) or {}).get('reason', 'pruned')})"
        )
        mark = " (chosen by full)" if source == best_full else ""
        mark += " (chosen by racing)" if t.number == best_race.number else ""
        print(
            f"| {t.number} | {t.user_attrs.get(_attrs.ARM, '')}{mark} "
            f"| {full_value.get(source, math.nan):.4g} | {judged} of {args.repeats} | {state} "
            f"| {full_evals.get(source, 0)} / {race_evals.get(t.number, 0)} |"
        )
    total_full, total_race = sum(full_evals.values()), sum(race_evals.values())
    saved = total_full - total_race
    print()
    print(
        f"Inner evaluations: full repeats {total_full}, racing {total_race}; saved {saved} "
        f"({saved / total_full:.0%})."
    )
    chosen_source = int(best_race.user_attrs.get("bilevel:full_run_trial", best_race.number))
    ranked = sorted(full_value, key=lambda n: full_value[n])
    print(
        f"Chosen: full run trial {best_full} ({arm_of[best_full]}, "
        f"{full_value[best_full]:.4g}); racing run trial {best_race.number} (= full run trial "
        f"{chosen_source}, {best_race.values[0]:.4g}): "
        + (
            "the same configuration."
            if chosen_source == best_full
            else f"different; its full-run rank is {ranked.index(chosen_source) + 1} of "
            f"{len(ranked)}."
        )
    )
    stopped = [t for t in race_trials if t.state == TrialState.PRUNED]
    if stopped:
        cells = []
        for t in stopped:
            source = int(t.user_attrs.get("bilevel:full_run_trial", t.number))
            cells.append(
                f"trial {t.number}: {full_value.get(source, math.nan):.4g} (full-run rank "
                f"{ranked.index(source) + 1 if source in ranked else '-'} of {len(ranked)})"
            )
        print(
            f"Stopped configurations, their full-run values: {'; '.join(cells)}. The chosen "
            f"configuration's: {full_value[best_full]:.4g} (rank 1)."
        )
    _report_rules(storage, full_trials, args)
    if args.heldout:
        _report_heldout(storage, args, best_race)


def _instances(storage: Any, trial: optuna.trial.FrozenTrial, args: argparse.Namespace) -> Any:
    """The (repeat, objective) scores of a full-run outer trial at every inner budget:
    ``curves[repeat][objective]`` is the normalized-regret curve by inner trial."""
    from bilevel_optuna.objectives import get_objective
    from bilevel_optuna.studies._inner import read_inner_result

    curves: dict[int, dict[str, list[float]]] = {}
    for name in trial.user_attrs.get(_attrs.INNER_STUDIES, []):
        study = optuna.load_study(study_name=name, storage=storage)
        objective = get_objective(study.user_attrs[_attrs.OBJECTIVE])
        result = read_inner_result(study, objective, n_trials=args.inner)
        repeat = int(study.user_attrs[_attrs.REPEAT])
        curves.setdefault(repeat, {})[objective.name] = result.curve
    return curves


def _report_rules(storage: Any, full_trials: list[Any], args: argparse.Namespace) -> None:
    """Stopping rules replayed on the full run's stored scores (a simulation)."""
    import numpy as np

    scales = _random_scales(storage, args)
    data = []
    for t in full_trials:
        curves = _instances(storage, t, args)
        data.append(
            (
                t.number,
                np.array(
                    [
                        [[c / scales[o] for c in curves[r][o]] for o in args.objectives]
                        for r in range(args.repeats)
                    ]
                ),
            )
        )
    rng = np.random.default_rng(0)
    orders = [np.arange(args.repeats)] + [
        rng.permutation(args.repeats) for _ in range(args.orders)
    ]
    total = len(data) * args.repeats * len(args.objectives) * args.inner
    reference = _simulate(data, _RULES[0][1], None, np.arange(args.repeats)).chosen
    print()
    print(
        "Stopping rules on the same outer trials, replayed on the full run's stored scores "
        f"(a simulation; evaluations are inner trials, of {total} with full repeats). First "
        f"columns: the repeats in the run's order; last two: over {args.orders} random orders "
        "of the repeats (the same order for every trial, so pairs stay paired)."
    )
    print()
    print(
        "| rule | evaluations | saved | chosen (full-run trial) | stopped after (repeats) "
        f"| saved over {args.orders} orders, median [min, max] | same choice as full repeats |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, rule, budget in _RULES:
        for b in [budget] if budget is None else [max(1, args.inner // 3), args.inner // 2]:
            if b is not None and not 0 < b < args.inner:
                continue
            name = label.format(b=b, n=args.inner)
            first = _simulate(data, rule, b, orders[0])
            runs = [_simulate(data, rule, b, order) for order in orders[1:]]
            shares = sorted(1 - r.evaluations / total for r in runs)
            same = sum(r.chosen == reference for r in runs)
            print(
                f"| {name} | {first.evaluations} | {1 - first.evaluations / total:.0%} "
                f"| {first.chosen} | {first.stopped_after or '-'} "
                f"| {statistics.median(shares):.0%} [{shares[0]:.0%}, {shares[-1]:.0%}] "
                f"| {same} of {len(runs)} |"
            )


@dataclasses.dataclass
class _RuleRun:
    evaluations: int
    chosen: int
    stopped_after: list[int]


def _never(challenger: Any, incumbent: Any, repeats: int) -> bool:
    return False


def _wilcoxon_repeat_means(challenger: Any, incumbent: Any, repeats: int) -> bool:
    """Optuna's WilcoxonPruner(p_threshold=0.1) on repeat means, as the outer loop used it:
    one-sided signed-rank with zsplit zeros, against the best complete trial."""
    import scipy.stats

    diff = challenger.mean(axis=1) - incumbent.mean(axis=1)
    if len(diff) < 2:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = scipy.stats.wilcoxon(diff, alternative="greater", zero_method="zsplit").pvalue
    return bool(p < 0.1 and challenger.mean() > incumbent.mean())


def _racing_rule(challenger: Any, incumbent: Any, repeats: int) -> bool:
    """The shipped rule (studies/_racing.decide) on (repeat, objective) instances."""
    from bilevel_optuna.studies._racing import decide

    return decide(list(challenger.ravel()), list(incumbent.ravel()), p_threshold=0.1).stop


def _t_repeat_means(challenger: Any, incumbent: Any, repeats: int) -> bool:
    """A one-sided paired t-test on repeat means, p < 0.1 (parametric: can act at 2 repeats)."""
    import scipy.stats

    diff = challenger.mean(axis=1) - incumbent.mean(axis=1)
    if len(diff) < 2 or not diff.std():
        return bool(len(diff) >= 2 and diff.mean() > 0)
    return bool(scipy.stats.ttest_1samp(diff, 0.0, alternative="greater").pvalue < 0.1)


def _intensify(challenger: Any, incumbent: Any, repeats: int) -> bool:
    """SMAC-style intensification without a test: after 1, 2, 4, ... repeats, stop when the
    mean on the common instances is worse than the incumbent's."""
    return repeats & (repeats - 1) == 0 and bool(challenger.mean() > incumbent.mean())


#: (label, rule, inner budget of the first stage: None = full budget only, 0 = try budgets)
_RULES: list[tuple[str, Any, int | None]] = [
    ("full repeats (reference)", _never, None),
    ("WilcoxonPruner(p=0.1) on repeat means (before)", _wilcoxon_repeat_means, None),
    ("racing (shipped): signed-rank on (repeat, objective) instances", _racing_rule, None),
    ("paired t-test on repeat means, p < 0.1", _t_repeat_means, None),
    ("intensification, no test (SMAC-style)", _intensify, None),
    ("racing on the first {b} of {n} inner trials, then the full budget", _racing_rule, 0),
]


def _simulate(data: list[Any], rule: Any, budget: int | None, order: Any) -> _RuleRun:
    """One rule over the outer trials in their order, repeats in ``order``.

    ``data`` holds ``(trial number, scores)`` with ``scores[r, j, k]`` the score of instance
    (repeat r, objective j) after ``k + 1`` inner trials. A challenger is judged after each
    repeat but the last against the best complete trial so far, on the scores after ``budget``
    inner trials (the full budget when ``None``); one that is never stopped runs every repeat
    at the full budget (with a first stage, that is its cost too: the stage's trials are the
    first trials of the same inner studies).
    """
    evaluations, stopped, values = 0, [], {}
    incumbent = None
    for number, scores in data:
        n_repeats, n_objectives, n_inner = scores.shape
        scores = scores[order]
        k = (budget or n_inner) - 1
        stop_at = None
        if incumbent is not None:
            for r in range(1, n_repeats):
                if rule(scores[:r, :, k], incumbent[:r, :, k], r):
                    stop_at = r
                    break
        if stop_at is not None:
            evaluations += stop_at * n_objectives * (k + 1)
            stopped.append(stop_at)
            continue
        evaluations += n_repeats * n_objectives * n_inner
        values[number] = float(scores[:, :, -1].mean())
        if incumbent is None or values[number] < float(incumbent[:, :, -1].mean()):
            incumbent = scores
    chosen = min(values, key=lambda n: values[n])
    return _RuleRun(evaluations, chosen, stopped)


def _random_scales(storage: Any, args: argparse.Namespace) -> dict[str, float]:
    from bilevel_optuna.objectives import get_objective
    from bilevel_optuna.studies._inner import read_inner_result

    scales = {}
    for name in args.objectives:
        objective = get_objective(name)
        regrets = []
        for r in range(args.repeats):
            name = f"{args.prefix}-full/random/{objective.name}/seed-{args.seed * 1000 + r}"
            study = optuna.load_study(study_name=name, storage=storage)
            regrets.append(read_inner_result(study, objective, n_trials=args.inner).regret)
        scale = statistics.median(regrets)
        scales[objective.name] = scale if scale > 0 else 1.0
    return scales


def _report_heldout(storage: Any, args: argparse.Namespace, best: Any) -> None:
    from bilevel_optuna.stats import StudySelection
    from bilevel_optuna.stats import compare

    arm = best.user_attrs[_attrs.ARM]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = compare(
            storage,
            run=f"{args.prefix}-racing",
            arms=[arm, "llm-level0", "tpe", "random"],
            n_trials=args.inner,
            selection=StudySelection(kind=("heldout", "baseline"), objective=list(args.heldout)),
            control=arm,
        )
    print()
    print(f"Held-out {' + '.join(args.heldout)}: the racing run's choice against the baselines")
    print(result.to_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite:///racing_bench.db")
    parser.add_argument("--prefix", default="racing-bench")
    parser.add_argument("--objectives", nargs="+", default=["branin", "hpobench/kc1"])
    parser.add_argument("--heldout", nargs="*", default=[])
    parser.add_argument("--outer", type=int, default=12, help="outer trials per run")
    parser.add_argument("--inner", type=int, default=6, help="trials per inner study")
    parser.add_argument("--repeats", type=int, default=8, help="paired seeds per outer trial")
    parser.add_argument("--heldout-seeds", type=int, default=10)
    parser.add_argument(
        "--orders", type=int, default=200, help="random repeat orders in the rule simulation"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    parser.add_argument("--report", action="store_true", help="only print the tables")
    parser.add_argument(
        "--only",
        choices=("full", "racing"),
        help="run one of the two runs (several processes can share the full run)",
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not args.report:
        start = time.perf_counter()
        for racing in (False, True):
            if args.only in (None, "racing" if racing else "full"):
                _run(args, racing)
        print(f"wall: {time.perf_counter() - start:.0f} s", flush=True)
        if args.only:
            return
    report(args)


if __name__ == "__main__":
    main()
