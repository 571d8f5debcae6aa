"""Benchmark: seconds per 30-trial study on the embedded model, and where the time goes.

    python benchmarks/speed.py --storage sqlite:////tmp/speed.db --seeds 3
    python benchmarks/speed.py --storage sqlite:////tmp/speed.db --report

One llama.cpp thread (so two studies share two cores), an instant objective (Branin), 30
trials, ``--seeds`` studies per arm. Arms: the default configuration (``LLMSampler()``), Level 0
(``preset="level0"``), and each built-in mechanism with its defaults on the default proposer.
Every study is stored, so a stopped run resumes and the table comes from the storage.

Per arm: the median wall time of a study and per proposal, model calls per trial, prompt tokens
read fresh per call (not reused from the KV cache of the previous request), answer tokens per
call, and the split of a study's wall time into model time (prompt reading and writing, by the
per-token costs measured here in the same run) and the rest (the sampler's own work, the
mechanisms, the storage).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.samplers.mechanisms._loading import builtin_mechanism_names
from bilevel_optuna.chat._base import ChatReply
from bilevel_optuna.chat._base import ChatRequest

PREFIX = "speed-bench"
ARMS = ["default", "level0", *builtin_mechanism_names()]
STATS_ATTR = "speed:calls"


class CountingModel(ChatModel):
    """The embedded model, counting per call the prompt tokens read fresh and reused."""

    def __init__(self, threads: int) -> None:
        from bilevel_optuna.chat._local import LocalChatModel

        self.inner = LocalChatModel(n_threads=threads)
        self.calls: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return self.inner.name

    def complete(self, request: ChatRequest) -> ChatReply:
        reply = self.inner.complete(request)
        reused = getattr(self.inner._loaded(), "reused_tokens", 0)
        self.calls.append(
            {
                "prompt": reply.prompt_tokens,
                "fresh": max(reply.prompt_tokens - reused, 0),
                "answer": reply.completion_tokens,
                "n": request.n,
                "s": reply.latency_s,
            }
        )
        return reply


def make_sampler(arm: str, seed: int, objective: Any, model: ChatModel) -> Any:
    from bilevel_optuna.samplers import LLMSampler

    kwargs: dict[str, Any] = {}
    if arm == "level0":
        kwargs["preset"] = "level0"
    elif arm != "default":
        kwargs["mechanisms"] = [arm]
        if arm == "candidate_choice":
            kwargs["n_candidates"] = 3
    return LLMSampler(
        model=model,
        description=objective.description,
        search_space=objective.search_space,
        seed=seed,
        **kwargs,
    )


def run_one(url: str, arm: str, seed: int, n_trials: int, threads: int) -> None:
    from bilevel_optuna.objectives import get_objective

    name = f"{PREFIX}/{arm}/seed{seed:03d}"
    storage = optuna.storages.get_storage(url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        if study.user_attrs.get("speed:wall_s") is not None:
            return
        optuna.delete_study(study_name=name, storage=storage)  # unfinished: run it again
    except KeyError:
        pass
    objective = get_objective("branin", seed=seed)
    model = CountingModel(threads)
    model.inner.load()
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction=objective.direction,
        sampler=make_sampler(arm, seed, objective, model),
    )
    start = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    wall = time.perf_counter() - start
    study.set_user_attr(STATS_ATTR, model.calls)
    study.set_user_attr("speed:wall_s", wall)
    print(f"{name}: {wall:.1f} s, {len(model.calls)} model calls", flush=True)


def _per_token_costs(threads: int) -> tuple[float, float]:
    """Seconds per fresh prompt token and per answer token of one sequence, measured now."""
    from bilevel_optuna.chat._local import LocalChatModel

    model = LocalChatModel(n_threads=threads)
    model.load()
    text = " ".join(f"item {i} has value {i * 7 % 13}" for i in range(60))
    long = ChatRequest(messages=({"role": "user", "content": text},), max_tokens=1, seed=0)
    short = ChatRequest(messages=({"role": "user", "content": "Count: 1 2 3"},), max_tokens=1)
    write = ChatRequest(
        messages=({"role": "user", "content": "Write a long story about a cat."},),
        max_tokens=64,
        temperature=0.0,
        seed=0,
    )
    model.complete(short)
    r_long = model.complete(long)
    r_short = model.complete(short)
    prefill = (r_long.latency_s - r_short.latency_s) / max(
        r_long.prompt_tokens - r_short.prompt_tokens, 1
    )
    model.complete(short)
    r_write = model.complete(write)
    decode = r_write.latency_s / max(r_write.completion_tokens, 1)
    return prefill, decode


def report(url: str, threads: int) -> None:
    storage = optuna.storages.get_storage(url)
    summaries = optuna.get_all_study_summaries(storage=storage, include_best_trial=False)
    by_arm: dict[str, list[Any]] = {}
    for s in summaries:
        if not s.study_name.startswith(PREFIX + "/"):
            continue
        arm = s.study_name.split("/")[1]
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        if study.user_attrs.get("speed:wall_s") is None:
            continue
        by_arm.setdefault(arm, []).append(study)
    prefill, decode = _per_token_costs(threads)
    print(
        f"Machine: {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}, optuna {optuna.__version__}; llama.cpp threads: "
        f"{threads}. Measured now: {prefill * 1000:.1f} ms per fresh prompt token, "
        f"{decode * 1000:.1f} ms per answer token (one sequence).\n"
    )
    print(
        "| arm | studies | s / study, median [min, max] | s / proposal | model calls / trial "
        "| fresh prompt tokens / call | answer tokens / call | model s / study | of it: reading "
        "(est.) | of it: writing (est.) | rest s / study |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for arm in [a for a in ARMS if a in by_arm] + sorted(set(by_arm) - set(ARMS)):
        studies = by_arm[arm]
        walls = [float(s.user_attrs["speed:wall_s"]) for s in studies]
        calls = [c for s in studies for c in s.user_attrs.get(STATS_ATTR, [])]
        n_trials = sum(
            len(s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) for s in studies
        )
        model_s = sum(c["s"] for c in calls) / len(studies)
        fresh = statistics.fmean(c["fresh"] for c in calls) if calls else 0.0
        answer = statistics.fmean(c["answer"] for c in calls) if calls else 0.0
        wall = statistics.median(walls)
        per_trial = n_trials / len(studies)
        print(
            f"| {arm} | {len(studies)} | {wall:.1f} [{min(walls):.1f}, {max(walls):.1f}] "
            f"| {wall / per_trial:.2f} | {len(calls) / max(n_trials, 1):.2f} | {fresh:.0f} "
            f"| {answer:.1f} | {model_s:.1f} "
            f"| {prefill * fresh * len(calls) / len(studies):.1f} "
            f"| {decode * answer * len(calls) / len(studies):.1f} "
            f"| {statistics.fmean(walls) - model_s:.1f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite:///speed_bench.db")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    parser.add_argument("--report", action="store_true", help="print the table and stop")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not args.report:
        for seed in range(args.seeds):
            for arm in args.arms.split(","):
                run_one(args.storage, arm, seed, args.trials, args.threads)
    report(args.storage, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
