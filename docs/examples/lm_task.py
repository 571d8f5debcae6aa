"""The LM task: tune a tiny transformer's training, pruning weak trials early.

slow: about N minutes on a 2-core CPU (ten trainings of 300 steps).
"""

import optuna

from bilevel_optuna.objectives import LMObjective

objective = LMObjective(steps=300)  # the default: 300 optimizer steps, CPU, 1 thread
study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_warmup_steps=100))
study.enqueue_trial(objective.default_params)
study.optimize(objective, n_trials=10)
print(study.best_value, "floor", objective.optimum)
