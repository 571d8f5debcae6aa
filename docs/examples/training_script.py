"""A training script that prints its metric, tuned as it stands."""

import pathlib
import sys

import optuna

from bilevel_optuna.objectives import ScriptObjective
from bilevel_optuna.objectives import ScriptParams

pathlib.Path("train.py").write_text(
    'LR = 0.1  # edit me\nprint(f"val_bpb: {(LR - 0.03) ** 2 + 1:.6f}")\n'
)
objective = ScriptObjective(
    command=[sys.executable, "train.py"],
    search_space={"LR": {"type": "float", "low": 1e-3, "high": 1.0, "log": True}},
    metric=r"^val_bpb:\s*(\S+)",
    timeout=60,
    # Rewrite `LR = ...` in a per-trial copy of train.py.
    params=ScriptParams(via="constants", constants_file="train.py"),
)
study = optuna.create_study(direction=objective.direction)
study.optimize(objective, n_trials=10)
print(study.best_params)  # train.py itself is unchanged
