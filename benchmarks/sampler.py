"""LLMSampler's own cost: per-trial overhead beside TPE, prompt length, proposals per second.

    python benchmarks/sampler.py                 # all three tables
    python benchmarks/sampler.py --skip-model    # overhead only (no embedded model)

1. Overhead: a study with N finished trials (N = 100, 1000) on a 6-parameter mixed space; the
   time of one more ask-and-suggest, with LLMSampler answering from an instant chat model (the
   model call excluded) beside TPESampler (Optuna's defaults) on the same study.
2. Prompt tokens of the embedded model's request at trials 10, 100 and 1000 (history window 15).
3. Proposals per second from the embedded model with k = 1 and k = 8 candidates per call.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution

from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.chat._base import ChatReply
from bilevel_optuna.chat._base import ChatRequest
from bilevel_optuna.samplers import LLMSampler

SPACE = {
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "wd": FloatDistribution(1e-6, 1e-2, log=True),
    "dropout": FloatDistribution(0.0, 0.5),
    "layers": IntDistribution(1, 8),
    "width": IntDistribution(16, 512, step=16),
    "act": CategoricalDistribution(["relu", "gelu", "tanh"]),
}


class InstantModel(ChatModel):
    """Answers at once with a random valid configuration: the model call costs ~nothing."""

    name = "instant"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def complete(self, request: ChatRequest) -> ChatReply:
        k = request.n  # one configuration per answer, n answers
        candidates = []
        for _ in range(k):
            candidates.append(
                {
                    "lr": float(10 ** self.rng.uniform(-5, -1)),
                    "wd": float(10 ** self.rng.uniform(-6, -2)),
                    "dropout": float(self.rng.uniform(0, 0.5)),
                    "layers": int(self.rng.integers(1, 9)),
                    "width": int(16 * self.rng.integers(1, 33)),
                    "act": str(self.rng.choice(["relu", "gelu", "tanh"])),
                }
            )
        return ChatReply(json.dumps({"candidates": candidates}), 0, 0, 0.0, self.name)


def _value(params: dict) -> float:
    return (np.log10(params["lr"]) + 3) ** 2 + params["dropout"] + abs(params["layers"] - 4)


def _study_with(n: int, seed: int = 0) -> optuna.Study:
    study = optuna.create_study()
    rng = np.random.default_rng(seed)
    sampler = optuna.samplers.RandomSampler(seed=seed)
    trials = []
    for _ in range(n):
        params = {
            name: sampler.sample_independent(study, None, name, dist)  # type: ignore[arg-type]
            for name, dist in SPACE.items()
        }
        trials.append(
            optuna.trial.create_trial(
                params=params, distributions=SPACE, value=_value(params) + rng.normal(0, 0.01)
            )
        )
    study.add_trials(trials)
    return study


def _time_ask(
    study: optuna.Study, sampler: optuna.samplers.BaseSampler, repeats: int
) -> list[float]:
    study.sampler = sampler
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        trial = study.ask()
        for name, dist in SPACE.items():
            trial._suggest(name, dist)
        times.append(time.perf_counter() - start)
        study.tell(trial, _value(trial.params))
    return times


def overhead_table(repeats: int) -> None:
    print("| finished trials | LLMSampler own overhead, median ms | TPESampler, median ms |")
    print("|---|---|---|")
    for n in (100, 1000):
        llm = _time_ask(
            _study_with(n),
            LLMSampler(preset="level0", model=InstantModel(), search_space=SPACE, seed=0),
            repeats,
        )
        tpe = _time_ask(_study_with(n), optuna.samplers.TPESampler(seed=0), repeats)
        print(
            f"| {n} | {1000 * statistics.median(llm):.2f} | {1000 * statistics.median(tpe):.2f} |"
        )


def prompt_table() -> None:
    from bilevel_optuna.chat import get_chat_model
    from bilevel_optuna.samplers._answer import answer_schema
    from bilevel_optuna.samplers._proposal import Proposal
    from bilevel_optuna.samplers._prompt import PromptInputs
    from bilevel_optuna.samplers._prompt import build_messages

    local = get_chat_model("local")
    print("| finished trials | prompt characters | prompt tokens (SmolLM2) |")
    print("|---|---|---|")
    for n in (10, 100, 1000):
        study = _study_with(n)
        sampler = LLMSampler(preset="level0", model=InstantModel(), search_space=SPACE, seed=0)
        trial = study.ask()
        proposal = Proposal(sampler, study, study._storage.get_trial(trial._trial_id), SPACE)
        inputs = PromptInputs(
            description="Train a small network.",
            metric_name="validation loss",
            minimize=True,
            search_space=SPACE,
            history=proposal.context.history,
            n_complete=n,
            failed=[],
            pending=[],
            notes=[],
            prior_knowledge="",
            n_candidates=1,
            history_order="best",
        )
        messages = build_messages(sampler.template, inputs)
        request = ChatRequest(
            messages=tuple(messages), json_schema=answer_schema(SPACE, 1), max_tokens=16, seed=0
        )
        try:
            tokens = local.complete(request).prompt_tokens
        except Exception as err:  # a 16-token answer is cut off; its usage is still there
            tokens = err.reply.prompt_tokens if getattr(err, "reply", None) else -1  # type: ignore[attr-defined]
        chars = sum(len(m["content"]) for m in messages)
        print(f"| {n} | {chars} | {tokens} |")


def throughput_table(n_trials: int) -> None:
    print(
        "| candidates per call (k) | trials | model calls | wall s | proposals per second "
        "| distinct configurations | distinct per second |"
    )
    print("|---|---|---|---|---|---|---|")
    for k in (1, 8):
        sampler = LLMSampler(
            preset="level0",
            model="local",
            search_space=SPACE,
            n_candidates=k,
            seed=0,
            history_size=10,
        )
        study = optuna.create_study(sampler=sampler)
        study.optimize(
            lambda t: _value({n: t._suggest(n, d) for n, d in SPACE.items()}), n_trials=1
        )
        start = time.perf_counter()
        study.optimize(
            lambda t: _value({n: t._suggest(n, d) for n, d in SPACE.items()}), n_trials=n_trials
        )
        wall = time.perf_counter() - start
        calls = sum(1 for t in study.trials[1:] if t.user_attrs.get("llm:attempts"))
        # A configuration proposed again teaches a deterministic objective nothing new.
        distinct = len({tuple(sorted(t.params.items())) for t in study.trials[1:]})
        print(
            f"| {k} | {n_trials} | {calls} | {wall:.1f} | {n_trials / wall:.2f} "
            f"| {distinct} | {distinct / wall:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--skip-model", action="store_true")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(
        f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, optuna {optuna.__version__}"
    )
    print()
    overhead_table(args.repeats)
    if not args.skip_model:
        print()
        prompt_table()
        print()
        throughput_table(args.trials)


if __name__ == "__main__":
    main()
