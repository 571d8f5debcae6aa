"""Autoresearch in small: train a tiny decoder-only transformer, score it by val_bpb.

The text comes from a seeded order-k Markov source whose entropy rate is known exactly (the floor
of val_bpb, in bits per symbol), or from a user's text file (bits per byte, byte-level vocabulary,
no known floor). The budget is a number of optimizer steps by default, which makes a trial
deterministic for a fixed seed, thread count and device; a wall-clock budget is the option
autoresearch uses. Intermediate val_bpb values are reported to the trial so that Optuna's pruners
work.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution

from bilevel_optuna import _attrs
from bilevel_optuna._logging import get_logger
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.objectives._lm_corpus import DEFAULT_CONTEXT
from bilevel_optuna.objectives._lm_corpus import DEFAULT_PARAMS
from bilevel_optuna.objectives._lm_corpus import DEFAULT_STEPS
from bilevel_optuna.objectives._lm_corpus import Corpus
from bilevel_optuna.objectives._lm_corpus import LMRunResult
from bilevel_optuna.objectives._lm_corpus import MarkovCorpus
from bilevel_optuna.objectives._lm_corpus import TextCorpus
from bilevel_optuna.objectives._lm_corpus import check_budget
from bilevel_optuna.objectives._lm_corpus import check_device
from bilevel_optuna.objectives._lm_corpus import check_run
from bilevel_optuna.objectives._lm_corpus import make_corpus

__all__ = [
    "LMObjective",
    "LMRunResult",
    "MarkovCorpus",
    "TextCorpus",
    "train_lm",
]

_logger = get_logger(__name__)

def lm_search_space() -> dict[str, Any]:
    """The hyperparameters of the task and their ranges."""
    return {
        "lr": FloatDistribution(1e-4, 3e-2, log=True),
        "weight_decay": FloatDistribution(1e-4, 0.3, log=True),
        "batch_size": IntDistribution(8, 64, log=True),
        "depth": IntDistribution(1, 4),
        "width": IntDistribution(32, 128, step=32),
        "heads": CategoricalDistribution((1, 2, 4)),
        "warmup_ratio": FloatDistribution(0.0, 0.3),
        "warmdown_ratio": FloatDistribution(0.0, 0.7),
    }


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def train_lm(
    params: Mapping[str, Any],
    *,
    corpus: Corpus,
    steps: int | None = DEFAULT_STEPS,
    seconds: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = 1,
    eval_every: int = 50,
    callback: Callable[[int, float], None] | None = None,
) -> LMRunResult:
    """Train one model and measure its val_bpb.

    Args:
        params: Hyperparameters (see ``LMObjective.default_params``); missing ones take their defaults.
        corpus: A :class:`MarkovCorpus` or a :class:`TextCorpus`.
        steps: Step budget; ``None`` when ``seconds`` is given.
        seconds: Wall-clock budget of the training steps (evaluation excluded).
        seed: Seed of the initialization and of the training batches.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        threads: CPU threads torch may use during the run (restored afterwards); ``None`` leaves
            torch's setting alone.
        eval_every: Steps between evaluations on the held-out windows.
        callback: Called as ``callback(step, val_bpb)`` after each evaluation but the last; it
            may raise (e.g. :class:`optuna.TrialPruned`) to stop the run.

    Returns:
        An :class:`LMRunResult`.
    """
    config = check_run(
        params, steps=steps, seconds=seconds, device=device, threads=threads, eval_every=eval_every
    )
    # Defers the optional dependency torch (the `lm` extra): the CLI and the samplers do not
    # need it.
    from bilevel_optuna.objectives import lm_train

    return lm_train.run_training(
        config,
        corpus=corpus,
        steps=steps,
        seconds=seconds,
        seed=seed,
        device=device,
        threads=threads,
        eval_every=eval_every,
        callback=callback,
    )


# --------------------------------------------------------------------------------------------
# The objective
# --------------------------------------------------------------------------------------------


class LMObjective(Objective):
    """Tune a tiny transformer's training: minimize val_bpb, whose floor is known.

    Args:
        corpus_path: A UTF-8 text file to train on (bits per byte) instead of the Markov source.
        vocab_size: Symbols of the Markov source.
        order: Order of the Markov source.
        concentration: Dirichlet concentration of the source's transitions (smaller is more
            predictable).
        source_seed: Seed of the Markov source: the task itself.
        context: Tokens the model sees.
        steps: Step budget per trial (the default, deterministic); ``None`` with ``seconds``.
        seconds: Wall-clock budget per trial, as autoresearch does; not reproducible.
        seed: Training seed; each trial trains with ``seed + trial.number``.
        device: ``"cpu"`` (default), ``"cuda"`` or ``"auto"``.
        threads: CPU threads per trial (default 1, so two trials share two cores).
        eval_every: Steps between intermediate values reported to the trial.

    Example:

        .. code-block:: python

            import optuna
            from bilevel_optuna.objectives import LMObjective

            objective = LMObjective(steps=100)
            study = optuna.create_study(pruner=optuna.pruners.MedianPruner())
            study.optimize(objective, n_trials=5)
            print(study.best_value, objective.optimum)
    """

    name = "lm"
    metric_name = "val_bpb"
    direction = "minimize"

    def __init__(
        self,
        *,
        corpus_path: str | os.PathLike[str] | None = None,
        vocab_size: int = 16,
        order: int = 2,
        concentration: float = 0.1,
        source_seed: int = 0,
        context: int = DEFAULT_CONTEXT,
        steps: int | None = DEFAULT_STEPS,
        seconds: float | None = None,
        seed: int = 0,
        device: str = "cpu",
        threads: int | None = 1,
        eval_every: int = 50,
    ) -> None:
        if seconds is not None and steps == DEFAULT_STEPS:
            steps = None  # a wall-clock budget replaces the default step budget
        check_budget(steps, seconds)
        check_device(device)
        self.corpus: Corpus = make_corpus(
            corpus_path,
            vocab_size=vocab_size,
            order=order,
            concentration=concentration,
            source_seed=source_seed,
            context=context,
        )
        self.steps = steps
        self.seconds = seconds
        self.seed = int(seed)
        self.device = device
        self.threads = threads
        self.eval_every = eval_every
        self.search_space = lm_search_space()
        self.default_params = dict(DEFAULT_PARAMS)
        self.optimum = self.corpus.floor
        budget = f"{steps} optimizer steps" if steps is not None else f"{seconds:g} s of training"
        unit = self.corpus.unit
        self.description = (
            f"Minimize val_bpb, the bits per {unit} of a small decoder-only transformer on "
            f"held-out text, after training it for {budget} on {self.corpus.describe()}. "
            f"The model sees {context} tokens. Hyperparameters: lr (AdamW peak learning rate, "
            "log scale), weight_decay (AdamW, log scale), batch_size (sequences per step), "
            "depth (transformer blocks), width (embedding size), heads (attention heads), "
            "warmup_ratio (fraction of training with a linear warmup) and warmdown_ratio "
            "(final fraction with a linear decay to zero). Larger models and batches cost more "
            "time per step."
        )
        self.noise = (
            "Each trial trains from its own seed (the objective's seed plus the trial number), "
            "so repeats of one configuration differ: by 0.03 to 0.07 bits (standard deviation) "
            "for the default configuration at 300 steps."
            if steps is not None
            else "Wall-clock budget: the number of steps depends on the machine's speed."
        )

    def run(
        self,
        params: Mapping[str, Any],
        *,
        seed: int | None = None,
        callback: Callable[[int, float], None] | None = None,
    ) -> LMRunResult:
        """Train once with ``params`` and return everything measured."""
        return train_lm(
            params,
            corpus=self.corpus,
            steps=self.steps,
            seconds=self.seconds,
            seed=self.seed if seed is None else seed,
            device=self.device,
            threads=self.threads,
            eval_every=self.eval_every,
            callback=callback,
        )

    def evaluate(
        self, params: dict[str, Any], trial: optuna.trial.BaseTrial | None = None
    ) -> float:
        number = getattr(trial, "number", None)
        seed = self.seed + (int(number) if number is not None else 0)

        def report(step: int, value: float) -> None:
            if trial is None:
                return
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"Pruned at step {step} with val_bpb {value:.4f}.")

        result = self.run(params, seed=seed, callback=report)
        if trial is not None:
            trial.set_user_attr("lm:steps", result.steps)
            trial.set_user_attr("lm:training_seconds", round(result.training_seconds, 3))
            trial.set_user_attr("lm:num_params", result.num_params)
            if result.diverged:
                trial.set_user_attr(
                    _attrs.FAILURE_REASON,
                    f"training diverged (loss not finite) at step {result.steps}; lower lr",
                )
        if result.diverged:
            _logger.warning("LM training diverged at step %d with %s.", result.steps, params)
        return result.val_bpb
