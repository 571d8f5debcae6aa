"""Mechanisms: strategies injected into LLMSampler's proposal path, one module each.

The documented base (:class:`~bilevel_optuna.samplers.Mechanism`, ``Review``,
``ProposalContext``) is in ``_base.py``, the geometry of the unit cube they share in
``_geometry.py``, the registry and loading by name, file or source in ``_loading.py``, and each
built-in mechanism in a module named after it (``_tabu.py`` holds ``TabuMechanism``, registered
as ``"tabu"``). Every public name here is re-exported from :mod:`bilevel_optuna.samplers`, which
is where users (and generated mechanisms) import them from.
"""

from bilevel_optuna.samplers.mechanisms._base import Mechanism
from bilevel_optuna.samplers.mechanisms._base import ProposalContext
from bilevel_optuna.samplers.mechanisms._base import Review
from bilevel_optuna.samplers.mechanisms._candidate_choice import CandidateChoiceMechanism
from bilevel_optuna.samplers.mechanisms._classical import ClassicalMechanism
from bilevel_optuna.samplers.mechanisms._geometry import distance
from bilevel_optuna.samplers.mechanisms._geometry import normalize
from bilevel_optuna.samplers.mechanisms._hybrid import HybridMechanism
from bilevel_optuna.samplers.mechanisms._loading import get_mechanism_class
from bilevel_optuna.samplers.mechanisms._loading import load_mechanism
from bilevel_optuna.samplers.mechanisms._loading import load_mechanism_by_name
from bilevel_optuna.samplers.mechanisms._loading import load_mechanism_from_source
from bilevel_optuna.samplers.mechanisms._loading import load_mechanism_source
from bilevel_optuna.samplers.mechanisms._loading import mechanism_names
from bilevel_optuna.samplers.mechanisms._loading import register_mechanism
from bilevel_optuna.samplers.mechanisms._orthogonal import OrthogonalMechanism
from bilevel_optuna.samplers.mechanisms._restart import RestartMechanism
from bilevel_optuna.samplers.mechanisms._tabu import TabuMechanism
from bilevel_optuna.samplers.mechanisms._trust_region import TrustRegionMechanism

__all__ = [
    "CandidateChoiceMechanism",
    "ClassicalMechanism",
    "HybridMechanism",
    "Mechanism",
    "OrthogonalMechanism",
    "ProposalContext",
    "RestartMechanism",
    "Review",
    "TabuMechanism",
    "TrustRegionMechanism",
    "distance",
    "get_mechanism_class",
    "load_mechanism",
    "load_mechanism_by_name",
    "load_mechanism_from_source",
    "load_mechanism_source",
    "mechanism_names",
    "normalize",
    "register_mechanism",
]
