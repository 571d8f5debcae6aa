"""A bilevel run's settings and the TOML specs that build them.

The settings objects (``_settings``) are what :func:`~bilevel_optuna.studies.run_bilevel_study`
takes and what a run stores; the loader (``_toml``) reads a spec file into them; the shipped
specs (``demo.toml``, ``full.toml``, ...) live in this folder and load by name.
"""

from bilevel_optuna.studies.specs._settings import BilevelSettings
from bilevel_optuna.studies.specs._settings import InnerSettings
from bilevel_optuna.studies.specs._settings import ModelSettings
from bilevel_optuna.studies.specs._settings import OuterSettings
from bilevel_optuna.studies.specs._toml import BilevelSpec
from bilevel_optuna.studies.specs._toml import StudySpec
from bilevel_optuna.studies.specs._toml import load_spec

__all__ = [
    "BilevelSettings",
    "BilevelSpec",
    "InnerSettings",
    "ModelSettings",
    "OuterSettings",
    "StudySpec",
    "load_spec",
]
