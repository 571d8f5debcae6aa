"""Running a single-study spec: one objective, one sampler, resumable by name."""

from __future__ import annotations

import optuna
from optuna.samplers import BaseSampler
from optuna.samplers import RandomSampler
from optuna.samplers import TPESampler

from bilevel_optuna import _attrs
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.studies._bilevel import make_storage
from bilevel_optuna.studies._inner import _finished
from bilevel_optuna.studies._inner import _objective_with_true_value
from bilevel_optuna.studies._spec import StudySpec


def run_spec_study(spec: StudySpec, *, storage: str | None = None) -> optuna.Study:
    """Run (or resume) the study a single-study spec describes until ``n_trials`` finished."""
    storage_obj, _ = make_storage(storage or spec.storage or f"sqlite:///{spec.name}.db")
    sampler: BaseSampler
    if spec.sampler == "llm":
        sampler = LLMSampler(
            model=spec.model,
            description=spec.objective.description,
            search_space=spec.objective.search_space or None,
            seed=spec.seed,
            **spec.proposer,
        )
    elif spec.sampler == "tpe":
        sampler = TPESampler(seed=spec.seed)
    else:
        sampler = RandomSampler(seed=spec.seed)
    study = optuna.create_study(
        storage=storage_obj,
        study_name=spec.name,
        sampler=sampler,
        direction=spec.objective.direction,
        load_if_exists=True,
    )
    study.set_user_attr(_attrs.KIND, "single")
    study.set_user_attr(_attrs.OBJECTIVE, spec.objective.name)
    if spec.objective.optimum is not None:
        study.set_user_attr(_attrs.OPTIMUM, spec.objective.optimum)
    done = len(_finished(study))
    if done < spec.n_trials:
        study.optimize(
            _objective_with_true_value(spec.objective),
            n_trials=spec.n_trials - done,
            n_jobs=spec.n_jobs,
        )
    return study
