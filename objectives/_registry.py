"""Objectives by name, for the TOML study specs and the CLI.

Names: ``branin``, ``hartmann6``, ``rosenbrock``, ``ackley``, ``levy``, ``mixed``, ``lm``, one
per tabular dataset (``hpobench/kc1``, ``hpolib/naval_propulsion``, ``nb201/cifar10``, ...), and
``sleep``, which wraps another one (``get_objective("sleep", base="branin", seconds=0.5)``).
Keyword arguments go to the objective's constructor, e.g.
``get_objective("ackley", dim=10, shift_seed=1)`` or ``get_objective("lm", steps=100)``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.objectives._lm_task import LMObjective
from bilevel_optuna.objectives._sleep import SleepObjective
from bilevel_optuna.objectives._synthetic import Ackley
from bilevel_optuna.objectives._synthetic import Branin
from bilevel_optuna.objectives._synthetic import Hartmann6
from bilevel_optuna.objectives._synthetic import Levy
from bilevel_optuna.objectives._synthetic import MixedSpace
from bilevel_optuna.objectives._synthetic import Rosenbrock
from bilevel_optuna.objectives._tabular import TabularObjective
from bilevel_optuna.objectives._tabular import tabular_names

__all__ = ["get_objective", "list_objectives", "objective_family", "register_objective"]

_FACTORIES: dict[str, Callable[..., Objective]] = {
    "branin": Branin,
    "hartmann6": Hartmann6,
    "rosenbrock": Rosenbrock,
    "ackley": Ackley,
    "levy": Levy,
    "mixed": MixedSpace,
    "lm": LMObjective,
}
_FAMILIES: dict[str, str] = {name: "synthetic" for name in _FACTORIES}
_FAMILIES["lm"] = "lm"
_FAMILIES["sleep"] = "wrapper"


def _tabular_factory(name: str) -> Callable[..., Objective]:
    benchmark, dataset = name.split("/", 1)

    def make(**kwargs: Any) -> Objective:
        return TabularObjective(benchmark=benchmark, dataset=dataset, **kwargs)

    make.__name__ = make.__qualname__ = f"TabularObjective[{name}]"
    return make


for _name in tabular_names():
    _FACTORIES[_name] = _tabular_factory(_name)
    _FAMILIES[_name] = "tabular"


def _sleep(*, base: str = "branin", seconds: float = 0.5, **base_kwargs: Any) -> Objective:
    """``sleep``: the registered objective ``base`` (built with ``base_kwargs``), sleeping
    ``seconds`` per trial. Built here, so that ``_sleep`` needs no registry lookup of its own."""
    if not isinstance(base, str) or base == "sleep":
        raise ValueError(f"base must be the registry name of another objective but got {base!r}.")
    return SleepObjective(get_objective(base, **base_kwargs), seconds=seconds)


_FACTORIES["sleep"] = _sleep


def list_objectives() -> list[str]:
    """Every registered objective name, in registration order."""
    return list(_FACTORIES)


def objective_family(name: str) -> str:
    """``"synthetic"``, ``"tabular"``, ``"lm"``, ``"wrapper"`` (``sleep``), or ``"user"`` for
    registered ones."""
    _check_name(name)
    return _FAMILIES[name]


def register_objective(
    name: str, factory: Callable[..., Objective], *, overwrite: bool = False
) -> None:
    """Make ``get_objective(name, **kwargs)`` call ``factory(**kwargs)``.

    Args:
        name: The registry name; lower case, ``/`` allowed.
        factory: A callable with keyword arguments returning an :class:`Objective`.
        overwrite: Replace an existing name instead of raising.
    """
    if not name or name != name.strip():
        raise ValueError(
            f"name must be a non-empty string without surrounding spaces but got {name!r}."
        )
    if not callable(factory):
        raise ValueError(f"factory must be callable but got {factory!r}.")
    if name in _FACTORIES and not overwrite:
        raise ValueError(
            f"An objective named {name!r} is registered already; pass overwrite=True."
        )
    _FACTORIES[name] = factory
    _FAMILIES[name] = "user"


def _check_name(name: str) -> None:
    if name in _FACTORIES:
        return
    valid = list_objectives()
    close = difflib.get_close_matches(str(name), valid, n=3)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigurationError(f"Unknown objective {name!r}.{hint} Valid names: {', '.join(valid)}.")


def get_objective(name: str, **kwargs: Any) -> Objective:
    """The objective registered as ``name``, built with ``kwargs``.

    Raises:
        ConfigurationError: ``name`` is unknown (the message lists the valid names and the
            closest ones), or an argument is not accepted by that objective.
    """
    _check_name(name)
    factory = _FACTORIES[name]
    target = TabularObjective if _FAMILIES[name] == "tabular" else factory
    accepted: Mapping[str, inspect.Parameter]
    try:
        accepted = inspect.signature(target).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        accepted = {}
    if accepted and not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        fixed = {"benchmark", "dataset"} if target is TabularObjective else set()
        allowed = sorted(n for n in accepted if n not in fixed and n != "self")
        unknown = sorted(k for k in kwargs if k not in allowed)
        if unknown:
            raise ConfigurationError(
                f"Objective {name!r} does not take {unknown}; it takes {allowed}."
            )
    try:
        objective = factory(**kwargs)
    except ConfigurationError:
        raise
    except ValueError as err:
        raise ConfigurationError(f"Objective {name!r}: {err}") from err
    # How a worker on another server rebuilds it (studies/_settings.py).
    objective.spec_entry = name if not kwargs else {"name": name, **kwargs}
    return objective
