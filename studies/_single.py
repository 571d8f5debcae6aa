"""Running a single-study spec: one objective, one sampler, resumable by name."""

from __future__ import annotations

import optuna

from bilevel_optuna import _attrs
from bilevel_optuna._experimental import set_metric_names
from bilevel_optuna._storage import STORAGE_ENV
from bilevel_optuna._storage import open_storage
from bilevel_optuna.studies._arms import make_sampler
from bilevel_optuna.studies._arms import sampler_pin
from bilevel_optuna.studies._inner import _finished
from bilevel_optuna.studies._inner import _objective_with_true_value
from bilevel_optuna.studies.specs._toml import StudySpec
from bilevel_optuna.studies._spend import ModelPolicy
from bilevel_optuna.studies._spend import check_model


def spec_storage_url(spec: StudySpec, storage: str | None = None) -> str:
    """``storage``, else the spec's, else ``$OPTUNA_STORAGE``, else ``sqlite:///<name>.db``."""
    import os

    return storage or spec.storage or os.environ.get(STORAGE_ENV) or f"sqlite:///{spec.name}.db"


def run_spec_study(spec: StudySpec, *, storage: str | None = None) -> optuna.Study:
    """Run (or resume) the study a single-study spec describes until ``n_trials`` finished."""
    if spec.sampler == "llm":  # the endpoint, checked before anything is stored
        policy = ModelPolicy(on_model_error=spec.proposer.get("on_model_error", "raise"))
        check_model(spec.model, policy)
    storage_obj = open_storage(spec_storage_url(spec, storage))
    extra = spec.proposer if spec.sampler == "llm" else {}
    sampler = make_sampler(
        spec.sampler,
        seed=spec.seed,
        model=spec.model,
        description=spec.objective.description,
        search_space=spec.objective.search_space,
        **extra,
    )
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
    pin = sampler_pin(spec.sampler, spec.seed)
    if pin is not None:
        study.set_user_attr(_attrs.SAMPLER, pin)
    set_metric_names(study, [spec.objective.metric_name])
    done = len(_finished(study))
    if done < spec.n_trials:
        study.optimize(
            _objective_with_true_value(spec.objective),
            n_trials=spec.n_trials - done,
            n_jobs=spec.n_jobs,
        )
    return study
