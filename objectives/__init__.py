"""The objectives users optimize and benchmark: synthetic functions, tabular HPO, a torch LM task.

Every objective is a callable on an Optuna trial with the metadata the LLM prompt and the regret
reports need (see :class:`Objective`). Get one by name with :func:`get_objective`.
"""

from __future__ import annotations

from bilevel_optuna.objectives._base import FunctionObjective
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.objectives._base import as_objective
from bilevel_optuna.objectives._base import suggest_all
from bilevel_optuna.objectives._lm_task import LMObjective
from bilevel_optuna.objectives._lm_task import LMRunResult
from bilevel_optuna.objectives._lm_task import MarkovCorpus
from bilevel_optuna.objectives._lm_task import TextCorpus
from bilevel_optuna.objectives._lm_task import train_lm
from bilevel_optuna.objectives._markov import MarkovSource
from bilevel_optuna.objectives._registry import get_objective
from bilevel_optuna.objectives._registry import list_objectives
from bilevel_optuna.objectives._registry import objective_family
from bilevel_optuna.objectives._registry import register_objective
from bilevel_optuna.objectives._script import ScriptFailedError
from bilevel_optuna.objectives._script import ScriptMetric
from bilevel_optuna.objectives._script import ScriptObjective
from bilevel_optuna.objectives._script import ScriptParams
from bilevel_optuna.objectives._script import ScriptRun
from bilevel_optuna.objectives._script import rewrite_constants
from bilevel_optuna.objectives._space_config import distributions_from_config
from bilevel_optuna.objectives._synthetic import Ackley
from bilevel_optuna.objectives._synthetic import Branin
from bilevel_optuna.objectives._synthetic import Hartmann6
from bilevel_optuna.objectives._synthetic import Levy
from bilevel_optuna.objectives._synthetic import MixedSpace
from bilevel_optuna.objectives._synthetic import Rosenbrock
from bilevel_optuna.objectives._synthetic import SyntheticObjective
from bilevel_optuna.objectives._tabular import TabularObjective

__all__ = [
    "Ackley",
    "Branin",
    "FunctionObjective",
    "Hartmann6",
    "LMObjective",
    "LMRunResult",
    "Levy",
    "MarkovCorpus",
    "MarkovSource",
    "MixedSpace",
    "Objective",
    "Rosenbrock",
    "ScriptFailedError",
    "ScriptMetric",
    "ScriptObjective",
    "ScriptParams",
    "ScriptRun",
    "SyntheticObjective",
    "TabularObjective",
    "TextCorpus",
    "as_objective",
    "distributions_from_config",
    "get_objective",
    "list_objectives",
    "objective_family",
    "register_objective",
    "rewrite_constants",
    "suggest_all",
    "train_lm",
]
