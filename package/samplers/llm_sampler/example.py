"""Run LLMSampler from the OptunaHub package on a small quadratic (embedded model, no key)."""

from __future__ import annotations

import optuna
import optunahub


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5.0, 5.0)
    y = trial.suggest_int("y", 0, 10)
    return (x - 1.0) ** 2 + (y - 3) ** 2


if __name__ == "__main__":
    module = optunahub.load_module(package="samplers/llm_sampler")
    sampler = module.LLMSampler(
        description="A quadratic bowl in x and y; lower is better.",
        mechanisms=[module.TabuMechanism()],
        seed=0,
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=20)
    print(study.best_params)
