"""Three mechanisms on one LLMSampler, and the proof that each ran."""

import optuna

from bilevel_optuna.objectives import get_objective
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.samplers import summarize_mechanisms

objective = get_objective("branin")
sampler = LLMSampler(
    description=objective.description,
    search_space=objective.search_space,
    mechanisms=[
        ("hybrid", {"sampler": "tpe", "n_warmup": 3}),
        ("trust_region", {"initial_radius": 0.2}),
        ("tabu", {"radius": 0.02}),
    ],
    seed=0,
)
study = optuna.create_study(sampler=sampler, direction=objective.direction)
study.optimize(objective, n_trials=6)
for name, s in summarize_mechanisms(study).items():
    print(f"{name}: {s.status}, changed {s.n_changed} of {s.n_trials} trials, calls {s.calls}")
# hybrid: ok, changed 3 of 6 trials, calls {'prepare': 6}
# trust_region: ok, changed 3 of 6 trials, calls {'prepare': 3, 'review': 7}
# tabu: ok, changed 2 of 6 trials, calls {'review': 7}
