"""OptunaHub entry of bilevel-optuna's LLMSampler: a language model proposes each trial.

The sampler's code lives in the ``bilevel-optuna`` distribution (``requirements.txt``); this
package is what the OptunaHub registry loads, so ``optunahub.load_module("samplers/llm_sampler")``
and ``bilevel_optuna.samplers`` hand out the very same classes.
"""

from __future__ import annotations

from bilevel_optuna.samplers import CandidateChoiceMechanism
from bilevel_optuna.samplers import HybridMechanism
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.samplers import Mechanism
from bilevel_optuna.samplers import OrthogonalExplorationMechanism
from bilevel_optuna.samplers import StagnationRestartMechanism
from bilevel_optuna.samplers import TabuMechanism
from bilevel_optuna.samplers import TrustRegionMechanism

__all__ = [
    "CandidateChoiceMechanism",
    "HybridMechanism",
    "LLMSampler",
    "Mechanism",
    "OrthogonalExplorationMechanism",
    "StagnationRestartMechanism",
    "TabuMechanism",
    "TrustRegionMechanism",
]
