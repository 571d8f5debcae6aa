"""Inner and outer study orchestration, the run's settings, and the TOML study specs."""

from typing import Any

from bilevel_optuna._warnings import renamed
from bilevel_optuna.exceptions import RunFailedError
from bilevel_optuna.studies._bilevel import run_bilevel_study
from bilevel_optuna.studies._config import LEVEL0
from bilevel_optuna.studies._config import OuterSpace
from bilevel_optuna.studies._config import ProposerConfig
from bilevel_optuna.studies._inner import InnerResult
from bilevel_optuna.studies._join import run_worker
from bilevel_optuna.studies._results import BilevelResult
from bilevel_optuna.studies._single import run_spec_study
from bilevel_optuna.studies.specs import BilevelSettings
from bilevel_optuna.studies.specs import BilevelSpec
from bilevel_optuna.studies.specs import InnerSettings
from bilevel_optuna.studies.specs import ModelSettings
from bilevel_optuna.studies.specs import OuterSettings
from bilevel_optuna.studies.specs import StudySpec
from bilevel_optuna.studies.specs import load_spec

__all__ = [
    "BilevelResult",
    "BilevelSettings",
    "BilevelSpec",
    "InnerResult",
    "InnerSettings",
    "LEVEL0",
    "ModelSettings",
    "OuterSettings",
    "OuterSpace",
    "ProposerConfig",
    "RunFailedError",
    "StudySpec",
    "load_spec",
    "run_bilevel_study",
    "run_spec_study",
    "run_worker",
]


def __getattr__(name: str) -> Any:
    return renamed(__name__, name, {"RunFailed": ("RunFailedError", RunFailedError)})
