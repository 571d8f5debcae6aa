"""LLMSampler on a toy objective, with the embedded model (no network, no key)."""

import math

import optuna

from bilevel_optuna import LLMSampler


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5, 5)
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    return (x - 1) ** 2 + (math.log10(lr) + 3) ** 2


sampler = LLMSampler(
    description="A toy: find x near 1 and a learning rate near 1e-3.",
    mechanisms=["tabu"],  # reject proposals too close to evaluated ones
    seed=0,
)
study = optuna.create_study(sampler=sampler)
study.optimize(objective, n_trials=20)
print(study.best_params)
