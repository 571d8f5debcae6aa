"""Compare two samplers from their stored studies: tests, effect sizes, plots, a report."""

import optuna

from bilevel_optuna.stats import compare

optuna.logging.set_verbosity(optuna.logging.WARNING)
storage = "sqlite:///example.db"


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5, 5)
    y = trial.suggest_float("y", -5, 5)
    return (x - 1) ** 2 + (y + 2) ** 2


samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
for arm, sampler in samplers.items():
    for seed in range(10):
        study = optuna.create_study(
            storage=storage, study_name=f"{arm}-{seed}", sampler=sampler(seed=seed)
        )
        study.set_user_attr("bilevel:seed", seed)  # equal seeds pair the two arms
        study.optimize(objective, n_trials=30)

result = compare(storage, arms={"tpe": "tpe-*", "random": "random-*"})
print(result.to_text())
c = result.comparison("tpe", "random")
print(c.test, c.pvalue_holm, c.a12.statistic, c.verdict)
result.plot("plots")  # PNG + one interactive HTML (matplotlib, plotly)
with open("report.md", "w") as f:
    f.write(result.to_markdown(plots={"anytime": "plots/anytime.png"}))
