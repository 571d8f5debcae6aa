"""LLMSampler and the mechanism samplers injected into it."""

from bilevel_optuna.samplers._answer import answer_schema
from bilevel_optuna.samplers._answer import repair_params
from bilevel_optuna.samplers._candidate_choice import CandidateChoiceMechanism
from bilevel_optuna.samplers._classical import ClassicalControlMechanism
from bilevel_optuna.samplers._geometry import distance
from bilevel_optuna.samplers._geometry import normalize
from bilevel_optuna.samplers._hybrid import HybridMechanism
from bilevel_optuna.samplers._llm_sampler import LLMSampler
from bilevel_optuna.samplers._loading import get_mechanism_class
from bilevel_optuna.samplers._loading import load_mechanism
from bilevel_optuna.samplers._loading import load_mechanism_by_name
from bilevel_optuna.samplers._loading import load_mechanism_from_source
from bilevel_optuna.samplers._loading import load_mechanism_source
from bilevel_optuna.samplers._loading import mechanism_names
from bilevel_optuna.samplers._loading import register_mechanism
from bilevel_optuna.samplers._mechanism import Mechanism
from bilevel_optuna.samplers._mechanism import ProposalContext
from bilevel_optuna.samplers._mechanism import Review
from bilevel_optuna.samplers._orthogonal import OrthogonalExplorationMechanism
from bilevel_optuna.samplers._prompt import TEMPLATES
from bilevel_optuna.samplers._prompt import PromptTemplate
from bilevel_optuna.samplers._restart import StagnationRestartMechanism
from bilevel_optuna.samplers._summary import MechanismInactiveWarning
from bilevel_optuna.samplers._summary import MechanismSummary
from bilevel_optuna.samplers._summary import summarize_mechanisms
from bilevel_optuna.samplers._tabu import TabuMechanism
from bilevel_optuna.samplers._trust_region import TrustRegionMechanism

__all__ = [
    "CandidateChoiceMechanism",
    "ClassicalControlMechanism",
    "HybridMechanism",
    "LLMSampler",
    "Mechanism",
    "MechanismInactiveWarning",
    "MechanismSummary",
    "OrthogonalExplorationMechanism",
    "PromptTemplate",
    "ProposalContext",
    "Review",
    "StagnationRestartMechanism",
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
