"""Train the tiny transformer of the LM task once and print its val_bpb: the training script.

Run it as a script (the other objectives' way of calling it is :func:`run_training`, through
:func:`bilevel_optuna.objectives.train_lm`)::

    python -m bilevel_optuna.objectives.lm_train --lr 0.003 --depth 2 --steps 300

It prints one grep-able line per evaluation, ``step 100 val_bpb: 2.310000``, and ends with a
summary whose first line is ``val_bpb: 2.020000``. Exit status 2 on a bad argument (the message
says which), 1 when training diverged.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives._lm_corpus import DEFAULT_CONTEXT
from bilevel_optuna.objectives._lm_corpus import DEFAULT_PARAMS
from bilevel_optuna.objectives._lm_corpus import DEFAULT_STEPS
from bilevel_optuna.objectives._lm_corpus import Corpus
from bilevel_optuna.objectives._lm_corpus import LMRunResult
from bilevel_optuna.objectives._lm_corpus import check_run
from bilevel_optuna.objectives._lm_corpus import make_corpus

__all__ = ["TinyGPT", "main", "run_training"]


# --------------------------------------------------------------------------------------------
# The model: a small GPT (pre-norm blocks, causal self-attention, tied embeddings).
# --------------------------------------------------------------------------------------------


class _Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.out = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    """A decoder-only transformer small enough to train in seconds on a CPU.

    Its weights are drawn from a generator seeded with ``seed``, not from torch's global random
    state, so two trials trained at once in threads of one process stay reproducible.
    """

    def __init__(
        self, *, vocab_size: int, context: int, depth: int, width: int, heads: int, seed: int
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab_size, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(_Block(width, heads) for _ in range(depth))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied
        generator = torch.Generator().manual_seed(seed)
        residual_std = 0.02 / math.sqrt(2 * depth)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = residual_std if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, mean=0.0, std=std, generator=generator)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
            else:
                nn.init.ones_(p)  # LayerNorm gains

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok(idx) + self.pos(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


# --------------------------------------------------------------------------------------------
# Evaluation (DO NOT CHANGE: this is the fixed metric, so results stay comparable)
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def _val_bpb(model: TinyGPT, val: torch.Tensor, eval_from: int) -> float:
    """Mean cross-entropy in bits per token on the held-out windows, targets from ``eval_from``."""
    model.eval()
    total, count = 0.0, 0
    for chunk in val.split(128):
        x, y = chunk[:, :-1], chunk[:, 1:]
        logits = model(x)[:, eval_from:]
        target = y[:, eval_from:]
        nll = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"
        )
        total += float(nll)
        count += target.numel()
    model.train()
    return total / count / math.log(2)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigurationError(
            f"device={device!r} but no CUDA device is available; use 'cpu' or 'auto'."
        )
    return torch.device(device)


class _AdamW:
    """AdamW (betas 0.9, 0.95) with global gradient-norm clipping at 1.0.

    Written out rather than taken from ``torch.optim``, whose first use imports torch's compiler
    stack: seconds per process, which every trial run as a subprocess would pay. Weight decay
    applies to matrices and embeddings only, not to biases and norm gains.
    """

    def __init__(self, model: nn.Module, *, weight_decay: float) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.decay = [weight_decay if p.dim() >= 2 else 0.0 for p in self.params]
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.beta1, self.beta2, self.eps, self.max_norm = 0.9, 0.95, 1e-8, 1.0
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: float) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        scale = torch.clamp(self.max_norm / (norm + 1e-6), max=1.0)
        self.t += 1
        correction1 = 1.0 - self.beta1**self.t
        root_correction2 = math.sqrt(1.0 - self.beta2**self.t)
        for p, g, m, v, wd in zip(self.params, grads, self.m, self.v, self.decay):
            g = g * scale
            m.lerp_(g, 1.0 - self.beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
            if wd:
                p.mul_(1.0 - lr * wd)
            p.addcdiv_(m, v.sqrt().div_(root_correction2).add_(self.eps), value=-lr / correction1)


def _lr_multiplier(progress: float, warmup: float, warmdown: float) -> float:
    """Linear warmup, constant, linear warmdown to zero; ``progress`` runs from 0 to 1."""
    if warmup > 0 and progress < warmup:
        return progress / warmup
    if warmdown > 0 and progress > 1.0 - warmdown:
        return max(0.0, (1.0 - progress) / warmdown)
    return 1.0


def run_training(
    config: dict[str, Any],
    *,
    corpus: Corpus,
    steps: int | None,
    seconds: float | None,
    seed: int,
    device: str,
    threads: int | None,
    eval_every: int,
    callback: Callable[[int, float], None] | None,
) -> LMRunResult:
    """Train once on checked arguments; see :func:`bilevel_optuna.objectives.train_lm`."""
    dev = _resolve_device(device)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _train(config, corpus, steps, seconds, seed, dev, eval_every, callback)
    finally:
        if threads is not None:
            torch.set_num_threads(previous_threads)


def _train(
    config: dict[str, Any],
    corpus: Corpus,
    steps: int | None,
    seconds: float | None,
    seed: int,
    dev: torch.device,
    eval_every: int,
    callback: Callable[[int, float], None] | None,
) -> LMRunResult:
    # One piece on purpose: a training loop read top to bottom (build, step, evaluate, stop), as
    # autoresearch's train.py keeps it; split, its budget and divergence checks would hide.
    start = time.perf_counter()
    # The layers' default initialization draws from torch's global random state before ours
    # overwrites it: build the model on a forked copy so the caller's state is left alone.
    with torch.random.fork_rng(devices=[]):
        model = TinyGPT(
            vocab_size=corpus.vocab_size,
            context=corpus.context,
            depth=int(config["depth"]),
            width=int(config["width"]),
            heads=int(config["heads"]),
            seed=seed,
        )
    model.to(dev)
    lr = float(config["lr"])
    optimizer = _AdamW(model, weight_decay=float(config["weight_decay"]))
    val = torch.from_numpy(corpus.val).to(dev)
    rng = np.random.default_rng([seed, 0xBA7C4])
    batch_size = int(config["batch_size"])
    warmup, warmdown = float(config["warmup_ratio"]), float(config["warmdown_ratio"])
    history: list[tuple[int, float]] = []
    trained = 0.0  # seconds spent in training steps, evaluation excluded
    step = 0
    diverged = False
    while True:
        if steps is not None:
            if step >= steps:
                break
            progress = (step + 0.5) / steps  # mid-step: neither the first nor last lr is zero
        else:
            assert seconds is not None
            if trained >= seconds:
                break
            progress = trained / seconds
        t0 = time.perf_counter()
        step_lr = lr * _lr_multiplier(progress, warmup, warmdown)
        batch = torch.from_numpy(corpus.batch(batch_size, rng)).to(dev)
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step(step_lr)
        loss_value = loss.item()  # also waits for the device, so the timing below is honest
        trained += time.perf_counter() - t0
        step += 1
        if not math.isfinite(loss_value):
            diverged = True
            break
        if seconds is not None and step == 1 and trained > seconds:
            raise ConfigurationError(
                f"The wall-clock budget seconds={seconds:g} is too small to train one step: the "
                f"first step took {trained:.3f} s. Give a larger budget or use a step budget."
            )
        if seconds is not None:
            finished = trained >= seconds
        else:
            assert steps is not None
            finished = step >= steps
        if step % eval_every == 0 and not finished:
            value = _val_bpb(model, val, corpus.eval_from)
            history.append((step, value))
            if callback is not None:
                callback(step, value)
    value = math.nan if diverged else _val_bpb(model, val, corpus.eval_from)
    if not diverged:
        history.append((step, value))
    return LMRunResult(
        val_bpb=value,
        floor=corpus.floor,
        steps=step,
        training_seconds=trained,
        total_seconds=time.perf_counter() - start,
        history=history,
        num_params=sum(p.numel() for p in model.parameters()),
        device=str(dev),
        diverged=diverged,
    )


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bilevel_optuna.objectives.lm_train",
        description=(
            "Train a tiny transformer on text from a seeded Markov source (or a text file) and "
            "print its val_bpb. Prints 'step N val_bpb: X' per evaluation and a final "
            "'val_bpb: X'."
        ),
    )
    hp = parser.add_argument_group("hyperparameters")
    hp.add_argument("--lr", type=float, default=DEFAULT_PARAMS["lr"])
    hp.add_argument("--weight-decay", type=float, default=DEFAULT_PARAMS["weight_decay"])
    hp.add_argument("--batch-size", type=int, default=DEFAULT_PARAMS["batch_size"])
    hp.add_argument("--depth", type=int, default=DEFAULT_PARAMS["depth"])
    hp.add_argument("--width", type=int, default=DEFAULT_PARAMS["width"])
    hp.add_argument("--heads", type=int, default=DEFAULT_PARAMS["heads"])
    hp.add_argument("--warmup-ratio", type=float, default=DEFAULT_PARAMS["warmup_ratio"])
    hp.add_argument("--warmdown-ratio", type=float, default=DEFAULT_PARAMS["warmdown_ratio"])
    run = parser.add_argument_group("budget and machine")
    budget = run.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=None, help=f"default {DEFAULT_STEPS}")
    budget.add_argument("--seconds", type=float, default=None, help="wall-clock budget")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--eval-every", type=int, default=50)
    task = parser.add_argument_group("task")
    task.add_argument(
        "--corpus", default=None, help="a UTF-8 text file instead of the Markov source"
    )
    task.add_argument("--vocab-size", type=int, default=16)
    task.add_argument("--order", type=int, default=2)
    task.add_argument("--concentration", type=float, default=0.1)
    task.add_argument("--source-seed", type=int, default=0)
    task.add_argument("--context", type=int, default=DEFAULT_CONTEXT)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bilevel_optuna.objectives.lm_train``; returns the exit status."""
    args = _parser().parse_args(argv)
    params = {
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "batch_size": args.batch_size,
        "depth": args.depth,
        "width": args.width,
        "heads": args.heads,
        "warmup_ratio": args.warmup_ratio,
        "warmdown_ratio": args.warmdown_ratio,
    }
    steps = args.steps if args.steps is not None or args.seconds is not None else DEFAULT_STEPS
    try:
        # What LMObjective.run does, without the objective (which imports this module).
        corpus = make_corpus(
            args.corpus,
            vocab_size=args.vocab_size,
            order=args.order,
            concentration=args.concentration,
            source_seed=args.source_seed,
            context=args.context,
        )
        config = check_run(
            params,
            steps=steps,
            seconds=args.seconds,
            device=args.device,
            threads=args.threads,
            eval_every=args.eval_every,
        )

        def show(step: int, value: float) -> None:
            print(f"step {step} val_bpb: {value:.6f}", flush=True)

        result = run_training(
            config,
            corpus=corpus,
            steps=steps,
            seconds=args.seconds,
            seed=args.seed,
            device=args.device,
            threads=args.threads,
            eval_every=args.eval_every,
            callback=show,
        )
    except ConfigurationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if result.diverged:
        print(f"error: training diverged at step {result.steps}; lower --lr", file=sys.stderr)
        return 1
    print(f"step {result.steps} val_bpb: {result.val_bpb:.6f}")
    print("---")
    print(f"val_bpb: {result.val_bpb:.6f}")
    if result.floor is not None:
        print(f"floor_bpb: {result.floor:.6f}")
    print(f"training_seconds: {result.training_seconds:.1f}")
    print(f"total_seconds: {result.total_seconds:.1f}")
    print(f"num_steps: {result.steps}")
    print(f"num_params: {result.num_params}")
    print(f"device: {result.device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
