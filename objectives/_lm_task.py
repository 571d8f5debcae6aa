"""Autoresearch in small: train a tiny decoder-only transformer, score it by val_bpb.

The text comes from a seeded order-k Markov source whose entropy rate is known exactly (the floor
of val_bpb, in bits per symbol), or from a user's text file (bits per byte, byte-level vocabulary,
no known floor). The budget is a number of optimizer steps by default, which makes a trial
deterministic for a fixed seed, thread count and device; a wall-clock budget is the option
autoresearch uses. Intermediate val_bpb values are reported to the trial so that Optuna's pruners
work.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution

from bilevel_optuna import _attrs
from bilevel_optuna._logging import get_logger
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.objectives._markov import MarkovSource

__all__ = [
    "LMObjective",
    "LMRunResult",
    "MarkovCorpus",
    "TextCorpus",
    "train_lm",
]

_logger = get_logger(__name__)

DEFAULT_PARAMS: dict[str, Any] = {
    "lr": 3e-3,
    "weight_decay": 0.01,
    "batch_size": 32,
    "depth": 2,
    "width": 64,
    "heads": 4,
    "warmup_ratio": 0.05,
    "warmdown_ratio": 0.3,
}
"""A reasonable starting configuration; what ``lm_train`` runs with no arguments."""

DEFAULT_STEPS = 300
DEFAULT_CONTEXT = 32
_VAL_SEQUENCES = 256  # held-out windows of the Markov source
_VAL_MAX_WINDOWS = 256  # held-out windows of a text corpus


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
# Corpora: where the training batches and the held-out windows come from.
# --------------------------------------------------------------------------------------------


class MarkovCorpus:
    """Batches drawn fresh from a :class:`MarkovSource`; a fixed held-out set for val_bpb.

    val_bpb is measured on the positions whose whole order-k context lies inside the window, so
    that the source's entropy rate is exactly the best achievable expected value.
    """

    unit = "symbol"

    def __init__(self, source: MarkovSource, *, context: int = DEFAULT_CONTEXT) -> None:
        if context <= source.order:
            raise ConfigurationError(
                f"context must exceed the source's order {source.order} but got {context}."
            )
        self.source = source
        self.context = context
        self.vocab_size = source.vocab_size
        self.floor: float | None = source.entropy_rate
        # Held out: its own random stream, apart from the training batches' streams.
        rng = np.random.default_rng([int(source.seed), 0x5EED])
        self.val = source.sample(_VAL_SEQUENCES, context + 1, rng)
        # First predicted target with a full context: target index t >= order -> input index t-1.
        self.eval_from = max(source.order - 1, 0)

    def batch(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        return self.source.sample(batch_size, self.context + 1, rng)

    def describe(self) -> str:
        s = self.source
        return (
            f"text from an order-{s.order} Markov source over {s.vocab_size} symbols "
            f"(entropy rate {s.entropy_rate:.4f} bits per symbol, the floor of val_bpb)"
        )


class TextCorpus:
    """A user's text file as bytes: the last 10% held out, random windows of the rest for training.

    Args:
        path: A UTF-8 (or ASCII) text file.
        context: Tokens (bytes) the model sees.
    """

    unit = "byte"

    def __init__(self, path: str | os.PathLike[str], *, context: int = DEFAULT_CONTEXT) -> None:
        try:
            data = pathlib.Path(path).read_bytes()
        except OSError as err:
            raise ConfigurationError(f"Cannot read the corpus file {str(path)!r}: {err}.") from err
        if not data.strip():
            raise ConfigurationError(
                f"The corpus file {str(path)!r} is empty; give a text file with some content."
            )
        if b"\x00" in data:
            raise ConfigurationError(
                f"The corpus file {str(path)!r} contains NUL bytes: it looks binary, not text. "
                "Give a UTF-8 text file."
            )
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigurationError(
                f"The corpus file {str(path)!r} is not UTF-8 text ({err.reason} at byte "
                f"{err.start}). Give a UTF-8 text file."
            ) from err
        tokens = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
        split = int(len(tokens) * 0.9)
        need = context + 1
        if split < need or len(tokens) - split < need:
            raise ConfigurationError(
                f"The corpus file {str(path)!r} has {len(tokens)} bytes; with context={context} "
                f"it needs at least {math.ceil(need / 0.1)} bytes (10% are held out for val_bpb)."
            )
        self.path = str(path)
        self.context = context
        self.vocab_size = 256
        self.floor = None
        self.eval_from = 0
        self._train = tokens[:split]
        held = tokens[split:]
        count = min(len(held) // need, _VAL_MAX_WINDOWS)
        self.val = held[: count * need].reshape(count, need)

    def batch(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        starts = rng.integers(0, len(self._train) - self.context, size=batch_size)
        return np.stack([self._train[s : s + self.context + 1] for s in starts])

    def describe(self) -> str:
        return f"the bytes of the text file {os.path.basename(self.path)!r}"


Corpus = MarkovCorpus | TextCorpus


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class LMRunResult:
    """What one training run measured.

    Attributes:
        val_bpb: Final bits per symbol (or byte) on the held-out windows; NaN if it diverged.
        floor: The source's entropy rate, or ``None`` for a text corpus.
        steps: Optimizer steps taken.
        training_seconds: Wall-clock time of the training steps (evaluation excluded).
        total_seconds: Wall-clock time of the whole run.
        history: ``(step, val_bpb)`` at every evaluation, the last one included.
        num_params: Trainable parameters of the model.
        device: Where it ran.
        diverged: Whether the training loss became NaN or infinite.
    """

    val_bpb: float
    floor: float | None
    steps: int
    training_seconds: float
    total_seconds: float
    history: list[tuple[int, float]]
    num_params: int
    device: str
    diverged: bool = False


def _check_device(device: str) -> None:
    if device not in ("cpu", "cuda", "auto") and not str(device).startswith("cuda:"):
        raise ConfigurationError(f"device must be 'cpu', 'cuda' or 'auto' but got {device!r}.")


def _check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    full = {**DEFAULT_PARAMS, **params}
    unknown = sorted(set(full) - set(DEFAULT_PARAMS))
    if unknown:
        raise ConfigurationError(
            f"Unknown hyperparameters {unknown}; the task takes {sorted(DEFAULT_PARAMS)}."
        )
    if int(full["width"]) % int(full["heads"]) != 0:
        raise ConfigurationError(
            f"width ({full['width']}) must be divisible by heads ({full['heads']})."
        )
    for name in ("batch_size", "depth", "width", "heads"):
        if int(full[name]) < 1:
            raise ConfigurationError(f"{name} must be at least 1 but got {full[name]}.")
    if not float(full["lr"]) > 0:
        raise ConfigurationError(f"lr must be positive but got {full['lr']}.")
    for name in ("warmup_ratio", "warmdown_ratio"):
        if not 0.0 <= float(full[name]) <= 1.0:
            raise ConfigurationError(f"{name} must be between 0 and 1 but got {full[name]}.")
    if float(full["warmup_ratio"]) + float(full["warmdown_ratio"]) > 1.0:
        raise ConfigurationError(
            "warmup_ratio + warmdown_ratio must be at most 1 but got "
            f"{full['warmup_ratio']} + {full['warmdown_ratio']}."
        )
    return full


def _check_budget(steps: int | None, seconds: float | None) -> None:
    if steps is not None and seconds is not None:
        raise ConfigurationError("Give a step budget or a wall-clock budget (seconds), not both.")
    if steps is None and seconds is None:
        raise ConfigurationError("Give a budget: steps (the default) or seconds.")
    if steps is not None and steps < 1:
        raise ConfigurationError(
            f"The step budget steps={steps} is too small to train one step; give at least 1."
        )
    if seconds is not None and not seconds > 0:
        raise ConfigurationError(
            f"The wall-clock budget seconds={seconds} is too small to train one step; "
            "give a positive number of seconds."
        )


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
    config = _check_params(params)
    _check_budget(steps, seconds)
    _check_device(device)
    if eval_every < 1:
        raise ConfigurationError(f"eval_every must be at least 1 but got {eval_every}.")
    if threads is not None and threads < 1:
        raise ConfigurationError(f"threads must be at least 1 but got {threads}.")
    # torch is imported here, not with the package: the CLI and the samplers do not need it.
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
        _check_budget(steps, seconds)
        if context < 2:
            raise ConfigurationError(f"context must be at least 2 but got {context}.")
        _check_device(device)
        if corpus_path is not None:
            self.corpus: Corpus = TextCorpus(corpus_path, context=context)
        else:
            try:
                source = MarkovSource(
                    vocab_size=vocab_size,
                    order=order,
                    concentration=concentration,
                    seed=source_seed,
                )
            except ValueError as err:
                raise ConfigurationError(str(err)) from err
            self.corpus = MarkovCorpus(source, context=context)
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
