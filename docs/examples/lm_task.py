"""The LM task: tune a tiny transformer's training, pruning weak trials early.

slow: 13 minutes (805 s) measured on a 2-core CPU shared with other jobs (load average about
20), 2026-12-06: ten trainings of 300 steps, each about 12 s of training on a quiet core. It
printed a best val_bpb of 1.861 against the floor of 1.771.
"""

import optuna

from bilevel_optuna.objectives import LMObjective

objective = LMObjective(steps=300)  # the default: 300 optimizer steps, CPU, 1 thread
study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_warmup_steps=100))
study.enqueue_trial(objective.default_params)
study.optimize(objective, n_trials=10)
print(study.best_value, "floor", objective.optimum)
