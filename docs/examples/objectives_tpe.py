"""A registered objective (a real HPOBench table) under Optuna's TPE."""

import optuna

from bilevel_optuna.objectives import get_objective
from bilevel_optuna.objectives import list_objectives

print(list_objectives())
# ['branin', 'hartmann6', 'rosenbrock', 'ackley', 'levy', 'mixed', 'lm',
#  'hpobench/australian', ..., 'hpolib/naval_propulsion', ..., 'nb201/imagenet']

objective = get_objective("hpobench/kc1", seed=0)
study = optuna.create_study(
    direction=objective.direction, sampler=optuna.samplers.TPESampler(seed=0)
)
study.optimize(objective, n_trials=30)
print(objective.regret(objective.true_value(study.best_params)))  # about 0.02
