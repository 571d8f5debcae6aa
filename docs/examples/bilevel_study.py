"""The outer loop: tune the proposer on Branin, check the choice on Hartmann-6.

slow: 18 minutes (1,088 s) measured on a 2-core CPU shared with other jobs (load average
about 20), embedded model, 2026-12-06.
"""

from bilevel_optuna import run_bilevel_study

result = run_bilevel_study(
    "branin",  # or an Objective, or a plain Optuna objective function
    heldout_objectives=["hartmann6"],
    n_outer_trials=3,  # configurations of the proposer; the first is Level 0
    n_inner_trials=6,
    n_repeats=2,  # paired seeds; too few for a test, enough to see every part
    storage="sqlite:///bilevel.db",
)
print(result.best_config)
print(result.comparison.to_text())  # the chosen proposer against random, TPE and Level 0
