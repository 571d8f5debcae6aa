"""Seconds per LM-task trial at the default budget on a GPU and on the CPU, as a markdown table.

Meant for a machine with a CUDA GPU (it also runs without one and says so):

    python benchmarks/gpu_lm_task.py                 # default: 300 steps, 3 seeds per device
    python benchmarks/gpu_lm_task.py --repeats 5 --cpu-threads 1 2 16

Needs torch, numpy, scipy and optuna. It works from a plain checkout too: when the package is
not installed, the repository's folders are mapped onto ``bilevel_optuna`` the way setup.cfg's
package_dir does, without running the top-level ``bilevel_optuna/__init__.py``.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import statistics
import sys
import time
import types
from pathlib import Path


def _import_objectives() -> types.ModuleType:
    try:
        return importlib.import_module("bilevel_optuna.objectives")
    except ImportError:
        pass
    for name in [
        m for m in sys.modules if m == "bilevel_optuna" or m.startswith("bilevel_optuna.")
    ]:
        del sys.modules[name]
    repo = Path(__file__).resolve().parents[1]
    # A bare parent package whose search path holds bilevel_optuna/ and the repository root,
    # so that bilevel_optuna.objectives resolves to objectives/ as setup.cfg maps it.
    package = types.ModuleType("bilevel_optuna")
    package.__path__ = [str(repo / "bilevel_optuna"), str(repo)]
    sys.modules["bilevel_optuna"] = package
    return importlib.import_module("bilevel_optuna.objectives")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed trials per device")
    parser.add_argument("--steps", type=int, default=None, help="default: the task's default")
    parser.add_argument("--cpu-threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)

    objectives = _import_objectives()
    import torch

    from bilevel_optuna.objectives._lm_task import DEFAULT_PARAMS
    from bilevel_optuna.objectives._lm_task import DEFAULT_STEPS

    steps = args.steps or DEFAULT_STEPS
    devices: list[tuple[str, int | None]] = []
    if torch.cuda.is_available():
        devices.append(("cuda", None))
        gpu = torch.cuda.get_device_name(0)
    else:
        gpu = "none (CUDA not available)"
    devices += [("cpu", n) for n in args.cpu_threads]

    print(f"torch {torch.__version__}, Python {platform.python_version()}, GPU: {gpu}")
    print(
        f"One LM trial: default configuration, {steps} steps, order-2 Markov source over 16 "
        "symbols, context 32.\n"
    )
    print(
        "| device | threads | seconds per trial (median [min, max]) | training s | "
        "val_bpb (median) | floor |"
    )
    print("|---|---|---|---|---|---|")
    for device, threads in devices:
        objective = objectives.LMObjective(steps=steps, device=device, threads=threads)
        objective.run(DEFAULT_PARAMS, seed=0)  # warm-up: CUDA context, kernels, lazy imports
        totals, training, values = [], [], []
        for seed in range(args.repeats):
            started = time.perf_counter()
            result = objective.run(DEFAULT_PARAMS, seed=seed)
            totals.append(time.perf_counter() - started)
            training.append(result.training_seconds)
            values.append(result.val_bpb)
        print(
            f"| {device} | {threads if threads is not None else '-'} | "
            f"{statistics.median(totals):.2f} [{min(totals):.2f}, {max(totals):.2f}] | "
            f"{statistics.median(training):.2f} | {statistics.median(values):.4f} | "
            f"{objective.optimum:.4f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
