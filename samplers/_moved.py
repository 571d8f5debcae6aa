"""The private module paths the mechanisms had before the ``samplers/mechanisms/`` subpackage.

Mechanism files users wrote, and sources stored before the move, may import them (``from
bilevel_optuna.samplers._mechanism import Mechanism``, ``..._geometry import encode``); each old
path is the new module itself in :data:`sys.modules`, so classes stay identical and both
spellings load. New code imports from :mod:`bilevel_optuna.samplers`.
"""

from __future__ import annotations

import sys

from bilevel_optuna.samplers.mechanisms import _base
from bilevel_optuna.samplers.mechanisms import _candidate_choice
from bilevel_optuna.samplers.mechanisms import _classical
from bilevel_optuna.samplers.mechanisms import _geometry
from bilevel_optuna.samplers.mechanisms import _hybrid
from bilevel_optuna.samplers.mechanisms import _loading
from bilevel_optuna.samplers.mechanisms import _orthogonal
from bilevel_optuna.samplers.mechanisms import _restart
from bilevel_optuna.samplers.mechanisms import _tabu
from bilevel_optuna.samplers.mechanisms import _trust_region

#: Old module path -> the module that holds its code now.
OLD_PATHS = {
    "bilevel_optuna.samplers._mechanism": _base,
    "bilevel_optuna.samplers._geometry": _geometry,
    "bilevel_optuna.samplers._loading": _loading,
    "bilevel_optuna.samplers._tabu": _tabu,
    "bilevel_optuna.samplers._orthogonal": _orthogonal,
    "bilevel_optuna.samplers._restart": _restart,
    "bilevel_optuna.samplers._classical": _classical,
    "bilevel_optuna.samplers._trust_region": _trust_region,
    "bilevel_optuna.samplers._hybrid": _hybrid,
    "bilevel_optuna.samplers._candidate_choice": _candidate_choice,
}


def install() -> None:
    """Make each old path importable as the module that moved (called by the package)."""
    package = sys.modules[__name__.rpartition(".")[0]]
    for old, module in OLD_PATHS.items():
        sys.modules.setdefault(old, module)
        setattr(package, old.rpartition(".")[2], module)
