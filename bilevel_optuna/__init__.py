"""bilevel-optuna: an LLM proposes Optuna trials; a second Optuna loop tunes the proposer."""

from bilevel_optuna import exceptions
from bilevel_optuna._version import __version__
from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.chat._spec import get_chat_model
from bilevel_optuna.objectives import Objective
from bilevel_optuna.objectives import ScriptObjective
from bilevel_optuna.objectives import as_objective
from bilevel_optuna.objectives import get_objective
from bilevel_optuna.research import run_research
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.samplers import Mechanism
from bilevel_optuna.samplers import Review
from bilevel_optuna.samplers import summarize_mechanisms
from bilevel_optuna.stats import compare
from bilevel_optuna.studies import BilevelResult
from bilevel_optuna.studies import BilevelSettings
from bilevel_optuna.studies import InnerSettings
from bilevel_optuna.studies import ModelSettings
from bilevel_optuna.studies import OuterSettings
from bilevel_optuna.studies import OuterSpace
from bilevel_optuna.studies import ProposerConfig
from bilevel_optuna.studies import run_bilevel_study
from bilevel_optuna.studies import run_worker

__all__ = [
    "BilevelResult",
    "BilevelSettings",
    "ChatModel",
    "InnerSettings",
    "LLMSampler",
    "Mechanism",
    "ModelSettings",
    "Objective",
    "OuterSettings",
    "OuterSpace",
    "ProposerConfig",
    "Review",
    "ScriptObjective",
    "__version__",
    "as_objective",
    "compare",
    "exceptions",
    "get_chat_model",
    "get_objective",
    "run_bilevel_study",
    "run_research",
    "run_worker",
    "summarize_mechanisms",
]
