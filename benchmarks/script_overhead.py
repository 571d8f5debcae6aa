"""Per-trial overhead of ScriptObjective against calling the same objective in-process.

Each path runs the same quadratic, (x - 1)^2 + (y - 2)^2, for --trials trials of a study with
a seeded random sampler on in-memory storage; a trial's time is its objective call alone.
Trials run round-robin across the paths, so that load from other processes falls on all alike.
Two reference rows: `python -c pass` (starting an interpreter, the floor of any script path)
and the glue a user would write by hand (subprocess.run, then a regular expression).

A second table does the same for the torch LM task (40 steps on 1 thread): in-process, and as
`python -m bilevel_optuna.objectives.lm_train` through ScriptObjective, where every trial pays
for starting Python and importing torch.

    python benchmarks/script_overhead.py --trials 40 --lm-trials 3
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from bilevel_optuna.objectives import ScriptMetric
from bilevel_optuna.objectives import ScriptObjective
from bilevel_optuna.objectives import ScriptParams

SCRIPT = """\
import json, os, sys
X = 0.0
Y = 0
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
x = float(os.environ.get("HP_X", args.get("--x", X)))
y = int(os.environ.get("HP_Y", args.get("--y", Y)))
path = os.environ.get("BILEVEL_OPTUNA_PARAMS_FILE")
if path:
    params = json.load(open(path))
    x, y = params["x"], params["y"]
for step in range(10):
    print(f"step {step} value: {(x - 1) ** 2 + (y - 2) ** 2 + 10 - step}")
print(f"objective: {(x - 1) ** 2 + (y - 2) ** 2}")
"""

SPACE = {
    "x": {"type": "float", "low": -3.0, "high": 3.0},
    "y": {"type": "int", "low": 0, "high": 4},
}
METRIC = r"^objective: (\S+)"


def in_process(trial: optuna.trial.BaseTrial) -> float:
    x = trial.suggest_float("x", -3.0, 3.0)
    y = trial.suggest_int("y", 0, 4)
    return (x - 1) ** 2 + (y - 2) ** 2


class _Timed:
    """One study per path, its objective calls timed; trials are run round-robin across paths
    so that load from other processes falls on every path alike."""

    def __init__(self, objective: Callable[[optuna.trial.Trial], float]) -> None:
        self.objective = objective
        self.times: list[float] = []
        self.study = optuna.create_study(
            sampler=optuna.samplers.RandomSampler(seed=0), pruner=optuna.pruners.NopPruner()
        )

    def _call(self, trial: optuna.trial.Trial) -> float:
        start = time.perf_counter()
        value = self.objective(trial)
        self.times.append(time.perf_counter() - start)
        return value

    def one_trial(self) -> None:
        self.study.optimize(self._call, n_trials=1)
        trial = self.study.trials[-1]
        assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs


def _bare_start(trial: optuna.trial.Trial) -> float:
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return 0.0


def _hand_written(script: Path) -> Callable[[optuna.trial.Trial], float]:
    """The glue a user would write without this package: run, wait, search the output."""
    pattern = re.compile(METRIC, re.MULTILINE)

    def objective(trial: optuna.trial.Trial) -> float:
        x = trial.suggest_float("x", -3.0, 3.0)
        y = trial.suggest_int("y", 0, 4)
        out = subprocess.run(
            [sys.executable, str(script), "--x", repr(x), "--y", str(y)],
            capture_output=True, text=True, check=True,
        ).stdout
        match = pattern.search(out)
        assert match is not None
        return float(match.group(1))

    return objective


def _lm_paths() -> list[tuple[str, Callable[[optuna.trial.Trial], float]]]:
    from bilevel_optuna.objectives._lm_task import LMObjective

    lm = LMObjective(steps=40, eval_every=20)
    flags = [
        "--lr", "{lr}", "--weight-decay", "{weight_decay}", "--batch-size", "{batch_size}",
        "--depth", "{depth}", "--width", "{width}", "--heads", "{heads}",
        "--warmup-ratio", "{warmup_ratio}", "--warmdown-ratio", "{warmdown_ratio}",
    ]
    script = ScriptObjective(
        command=[
            "{python}", "-m", "bilevel_optuna.objectives.lm_train",
            "--steps", "40", "--eval-every", "20", "--seed", "{trial_number}", *flags,
        ],
        search_space=lm.search_space,
        metric=ScriptMetric(
            pattern=r"^val_bpb:\s*(\S+)",
            intermediate=r"^step (?P<step>\d+) val_bpb: (?P<value>\S+)",
        ),
    )
    return [("LM task in-process", lm), ("LM task as a script (lm_train)", script)]


def _round_robin(
    paths: list[tuple[str, Callable[[optuna.trial.Trial], float]]], trials: int
) -> list[tuple[str, list[float]]]:
    timed = [(name, _Timed(objective)) for name, objective in paths]
    for _ in range(trials):
        for _, path in timed:
            path.one_trial()
    return [(name, path.times) for name, path in timed]


def _print_table(title: str, rows: list[tuple[str, list[float]]], ref: str | None) -> None:
    """Rows as a markdown table; differences against the in-process row and the ``ref`` row."""
    medians = {name: statistics.median(times) * 1e3 for name, times in rows}
    base = next(m for name, m in medians.items() if "in-process" in name)
    print(f"\n{title}\n")
    ref_head = f" vs {ref} (median ms) |" if ref else ""
    print(f"| path | median ms/trial | mean ms/trial | vs in-process (median ms) |{ref_head}")
    print("|---|---:|---:|---:|" + ("---:|" if ref else ""))
    for name, times in rows:
        median = medians[name]
        cells = [f"{median:.2f}", f"{statistics.fmean(times) * 1e3:.2f}", f"{median - base:+.1f}"]
        if ref:
            cells.append(f"{median - medians[ref]:+.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--lm-trials", type=int, default=3, help="0 to leave the LM task out")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores, "
        f"optuna {optuna.__version__}, load average {os.getloadavg()[0]:.1f} at the start"
    )

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "project"
        folder.mkdir()
        script = folder / "quad.py"
        script.write_text(SCRIPT)
        (folder / "data.bin").write_bytes(b"\0" * 1_000_000)  # something for template copies
        py = ["{python}", str(script)]
        common: dict[str, Any] = {"search_space": SPACE, "metric": METRIC}
        paths: list[tuple[str, Callable[[optuna.trial.Trial], float]]] = [
            ("python -c pass (interpreter start)", _bare_start),
            ("in-process function", in_process),
            ("hand-written subprocess.run + re", _hand_written(script)),
            ("script, args (--x v --y v)", ScriptObjective(command=py, **common)),
            (
                "script, env",
                ScriptObjective(
                    command=py, params=ScriptParams(via="env", env_prefix="HP_"), **common
                ),
            ),
            (
                "script, json file",
                ScriptObjective(command=py, params=ScriptParams(via="json"), **common),
            ),
            (
                "script, constants rewritten",
                ScriptObjective(
                    command=["{python}", "quad.py"],
                    params=ScriptParams(via="constants", constants_file=script),
                    search_space={"X": SPACE["x"], "Y": SPACE["y"]},
                    metric=METRIC,
                ),
            ),
            (
                "script, args + intermediate values",
                ScriptObjective(
                    command=py,
                    search_space=SPACE,
                    metric=ScriptMetric(pattern=METRIC, intermediate=r"^step (\d+) value: (\S+)"),
                ),
            ),
            (
                "script, template copy (1 MB)",
                ScriptObjective(command=["{python}", "quad.py"], template=folder, **common),
            ),
        ]
        rows = _round_robin(paths, args.trials)
    _print_table(
        f"Quadratic, {args.trials} trials per path", rows, ref="hand-written subprocess.run + re"
    )
    if args.lm_trials > 0:
        rows = _round_robin(_lm_paths(), args.lm_trials)
        _print_table(f"LM task, 40 steps, {args.lm_trials} trials per path", rows, ref=None)


if __name__ == "__main__":
    main()
