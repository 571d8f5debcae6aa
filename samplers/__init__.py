"""LLMSampler and the mechanisms injected into its proposal path.

The proposal path's modules sit here (``_llm_sampler.py`` and the modules it reads top to bottom);
the mechanisms, their documented base and their registry sit in the ``mechanisms`` subpackage.
"""

from typing import Any

from bilevel_optuna._warnings import renamed
from bilevel_optuna.exceptions import MechanismInactiveWarning
from bilevel_optuna.samplers import _moved
from bilevel_optuna.samplers._answer import answer_schema
from bilevel_optuna.samplers._answer import repair_params
from bilevel_optuna.samplers._llm_sampler import LLMSampler
from bilevel_optuna.samplers._prompt import TEMPLATES
from bilevel_optuna.samplers._prompt import PromptTemplate
from bilevel_optuna.samplers._summary import MechanismSummary
from bilevel_optuna.samplers._summary import summarize_mechanisms
from bilevel_optuna.samplers.mechanisms import CandidateChoiceMechanism
from bilevel_optuna.samplers.mechanisms import ClassicalMechanism
from bilevel_optuna.samplers.mechanisms import HybridMechanism
from bilevel_optuna.samplers.mechanisms import Mechanism
from bilevel_optuna.samplers.mechanisms import OrthogonalMechanism
from bilevel_optuna.samplers.mechanisms import ProposalContext
from bilevel_optuna.samplers.mechanisms import RestartMechanism
from bilevel_optuna.samplers.mechanisms import Review
from bilevel_optuna.samplers.mechanisms import TabuMechanism
from bilevel_optuna.samplers.mechanisms import TrustRegionMechanism
from bilevel_optuna.samplers.mechanisms import distance
from bilevel_optuna.samplers.mechanisms import get_mechanism_class
from bilevel_optuna.samplers.mechanisms import load_mechanism
from bilevel_optuna.samplers.mechanisms import load_mechanism_by_name
from bilevel_optuna.samplers.mechanisms import load_mechanism_from_source
from bilevel_optuna.samplers.mechanisms import load_mechanism_source
from bilevel_optuna.samplers.mechanisms import mechanism_names
from bilevel_optuna.samplers.mechanisms import normalize
from bilevel_optuna.samplers.mechanisms import register_mechanism

_moved.install()

__all__ = [
    "CandidateChoiceMechanism",
    "ClassicalMechanism",
    "HybridMechanism",
    "LLMSampler",
    "Mechanism",
    "MechanismInactiveWarning",
    "MechanismSummary",
    "OrthogonalMechanism",
    "PromptTemplate",
    "ProposalContext",
    "Review",
    "RestartMechanism",
    "TEMPLATES",
    "TabuMechanism",
    "TrustRegionMechanism",
    "answer_schema",
    "distance",
    "get_mechanism_class",
    "load_mechanism",
    "load_mechanism_by_name",
    "load_mechanism_from_source",
    "load_mechanism_source",
    "mechanism_names",
    "normalize",
    "register_mechanism",
    "repair_params",
    "summarize_mechanisms",
]


def __getattr__(name: str) -> Any:
    # Each built-in mechanism's class is its registry name in CamelCase + "Mechanism".
    return renamed(
        __name__,
        name,
        {
            "StagnationRestartMechanism": ("RestartMechanism", RestartMechanism),
            "OrthogonalExplorationMechanism": ("OrthogonalMechanism", OrthogonalMechanism),
            "ClassicalControlMechanism": ("ClassicalMechanism", ClassicalMechanism),
        },
    )
