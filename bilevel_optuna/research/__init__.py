"""Level 2, mechanism research: a language model writes new mechanisms, the gate checks them,
the storage keeps them, and they only ever run behind a process boundary.

- :func:`check_source`: the gate (parse, policy, class contract, smoke run behind the boundary).
- :class:`GuardedMechanism`: the proxy that runs a generated mechanism's hooks in its own process.
- :class:`MechanismStore` and :func:`register_stored_mechanisms`: generated code in the storage.
- :func:`run_research`: research rounds on a bilevel run.
"""

from bilevel_optuna.research._check import CheckResult
from bilevel_optuna.research._check import check_source
from bilevel_optuna.research._compose import RULES
from bilevel_optuna.research._diagnose import Diagnosis
from bilevel_optuna.research._diagnose import diagnose
from bilevel_optuna.research._proxy import GuardedHookError
from bilevel_optuna.research._proxy import GuardedMechanism
from bilevel_optuna.research._report import ResearchReport
from bilevel_optuna.research._recorded import ReplayResearchModel
from bilevel_optuna.research._spec import ResearchSpec
from bilevel_optuna.research._round import run_research
from bilevel_optuna.research._sandbox import Layers
from bilevel_optuna.research._sandbox import Limits
from bilevel_optuna.research._sandbox import boundary_problems
from bilevel_optuna.research._store import GeneratedMechanism
from bilevel_optuna.research._store import MechanismStore
from bilevel_optuna.research._store import register_stored_mechanisms
from bilevel_optuna.studies._join import GENERATED_MECHANISM_LOADERS

# A worker joining a run registers its generated mechanisms through this (studies is the layer
# below research and does not import it).
if register_stored_mechanisms not in GENERATED_MECHANISM_LOADERS:
    GENERATED_MECHANISM_LOADERS.append(register_stored_mechanisms)

__all__ = [
    "CheckResult",
    "Diagnosis",
    "RULES",
    "ReplayResearchModel",
    "ResearchReport",
    "ResearchSpec",
    "GeneratedMechanism",
    "GuardedHookError",
    "GuardedMechanism",
    "Layers",
    "Limits",
    "MechanismStore",
    "boundary_problems",
    "check_source",
    "diagnose",
    "register_stored_mechanisms",
    "run_research",
]
