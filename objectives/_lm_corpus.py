"""What the LM task trains on and what a run measures, without torch: the default
configuration, the corpora (a seeded Markov source or a text file), the checks of a run's
settings and its result.

Both the objective (``_lm_task``) and the torch trainer (``lm_train``) build on this module, so
that neither imports the other at load time: the objective calls the trainer only when a trial
runs (torch is the optional ``lm`` extra).
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives._markov import MarkovSource

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


def make_corpus(
    corpus_path: str | os.PathLike[str] | None = None,
    *,
    vocab_size: int = 16,
    order: int = 2,
    concentration: float = 0.1,
    source_seed: int = 0,
    context: int = DEFAULT_CONTEXT,
) -> Corpus:
    """The text file's corpus, or else the seeded Markov source's (see ``LMObjective``)."""
    if context < 2:
        raise ConfigurationError(f"context must be at least 2 but got {context}.")
    if corpus_path is not None:
        return TextCorpus(corpus_path, context=context)
    try:
        source = MarkovSource(
            vocab_size=vocab_size, order=order, concentration=concentration, seed=source_seed
        )
    except ValueError as err:
        raise ConfigurationError(str(err)) from err
    return MarkovCorpus(source, context=context)


# --------------------------------------------------------------------------------------------
# A run's settings and result
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


def check_device(device: str) -> None:
    if device not in ("cpu", "cuda", "auto") and not str(device).startswith("cuda:"):
        raise ConfigurationError(f"device must be 'cpu', 'cuda' or 'auto' but got {device!r}.")


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
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


def check_budget(steps: int | None, seconds: float | None) -> None:
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


def check_run(
    params: Mapping[str, Any],
    *,
    steps: int | None,
    seconds: float | None,
    device: str,
    threads: int | None,
    eval_every: int,
) -> dict[str, Any]:
    """Every setting of one training run checked; the hyperparameters with their defaults."""
    config = check_params(params)
    check_budget(steps, seconds)
    check_device(device)
    if eval_every < 1:
        raise ConfigurationError(f"eval_every must be at least 1 but got {eval_every}.")
    if threads is not None and threads < 1:
        raise ConfigurationError(f"threads must be at least 1 but got {threads}.")
    return config
