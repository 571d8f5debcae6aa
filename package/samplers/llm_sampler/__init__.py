"""OptunaHub entry of bilevel-optuna's LLMSampler: a language model proposes each trial.

The sampler's code lives in the ``bilevel-optuna`` distribution (``requirements.txt``); this
package is what the OptunaHub registry loads, so ``optunahub.load_module("samplers/llm_sampler")``
and ``bilevel_optuna.samplers`` hand out the very same classes: the sampler and every built-in
mechanism (``tests/package_tests`` checks that none is missing).
"""

from __future__ import annotations

from typing import Any

from bilevel_optuna import samplers as _samplers
from bilevel_optuna.samplers import CandidateChoiceMechanism
from bilevel_optuna.samplers import ClassicalMechanism
from bilevel_optuna.samplers import HybridMechanism
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.samplers import Mechanism
from bilevel_optuna.samplers import OrthogonalMechanism
from bilevel_optuna.samplers import RestartMechanism
from bilevel_optuna.samplers import TabuMechanism
from bilevel_optuna.samplers import TrustRegionMechanism

__all__ = [
    "CandidateChoiceMechanism",
    "ClassicalMechanism",
    "HybridMechanism",
    "LLMSampler",
    "Mechanism",
    "OrthogonalMechanism",
    "RestartMechanism",
    "TabuMechanism",
    "TrustRegionMechanism",
]


_RENAMED = (
    "StagnationRestartMechanism",
    "OrthogonalExplorationMechanism",
    "ClassicalControlMechanism",
)


def __getattr__(name: str) -> Any:
    # The mechanisms' names before 0.2, deprecated with a warning as in bilevel_optuna.samplers.
    if name in _RENAMED:
        return getattr(_samplers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
