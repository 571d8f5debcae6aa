"""A bilevel run's plan: its objectives and its settings, resolved and checked before any work.

:func:`settings_of` applies :func:`~bilevel_optuna.studies.run_bilevel_study`'s keywords to a
:class:`~bilevel_optuna.studies.BilevelSettings` (the shortcuts, and the previous release's
keywords with a warning); :func:`plan_run` resolves the objectives and the settings on them
(``BilevelSettings.resolved``) into the :class:`RunPlan` the run's phases read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.samplers import BaseSampler

from bilevel_optuna._warnings import warn
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives import get_objective
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.objectives._base import as_objective
from bilevel_optuna.studies.specs._settings import KEYWORDS
from bilevel_optuna.studies.specs._settings import BilevelSettings
from bilevel_optuna.studies.specs._settings import field_path
from bilevel_optuna.studies.specs._settings import with_keywords

ObjectiveLike = Objective | str | Callable[[optuna.Trial], float]

#: run_bilevel_study's keywords kept as shortcuts of a settings field (like ``create_study``'s
#: ``sampler=``); every other settings keyword of the previous release is deprecated.
SHORTCUTS = ("n_outer_trials", "n_inner_trials", "n_repeats", "model", "seed")


def resolve_objective(objective: ObjectiveLike) -> Objective:
    """An :class:`Objective` from an instance, a registry name or a plain function."""
    if isinstance(objective, str):
        return get_objective(objective)
    return as_objective(objective)


def settings_of(
    settings: BilevelSettings | None,
    shortcuts: Mapping[str, Any],
    deprecated: Mapping[str, Any],
) -> BilevelSettings:
    """The run's settings: ``settings`` with the shortcuts and deprecated keywords applied.

    A deprecated keyword warns (:class:`FutureWarning`) naming the settings field to set; one
    that is no keyword of the previous release either is a ``TypeError``, as Python's own.
    """
    for keyword in deprecated:
        if keyword not in KEYWORDS or keyword in SHORTCUTS:
            raise TypeError(f"run_bilevel_study() got an unexpected keyword argument {keyword!r}")
        warn(
            f"run_bilevel_study({keyword}=...) is deprecated: set {field_path(keyword)} "
            "(run_bilevel_study(..., settings=BilevelSettings(...))); the keyword will be removed "
            "in a later release.",
            FutureWarning,
        )
    return with_keywords(settings, {**shortcuts, **deprecated})


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """The run's objectives and its resolved settings, checked: nothing runs before every one
    of them is."""

    objectives: list[Objective]
    heldout: list[Objective]
    settings: BilevelSettings  # resolved: seeds, space, aggregate and baselines spelled out

    @property
    def seeds(self) -> list[int]:
        return list(self.settings.inner.seeds or ())

    @property
    def aggregate(self) -> str:
        return self.settings.outer.aggregate

    @property
    def base_arms(self) -> list[str]:
        return list(self.settings.outer.baselines)

    @property
    def outer_sampler(self) -> str | BaseSampler:
        return self.settings.outer.sampler

    @property
    def n_inner_trials(self) -> int:
        return self.settings.inner.n_trials

    def seeds_of(self, objective: Objective) -> list[int]:
        if objective in self.heldout:
            return list(self.settings.inner.heldout_seeds or ())
        return self.seeds


def plan_run(
    objective: ObjectiveLike | Sequence[ObjectiveLike],
    heldout_objectives: Sequence[ObjectiveLike],
    settings: BilevelSettings,
) -> RunPlan:
    """The objectives resolved, and the settings resolved on them."""
    single = isinstance(objective, (str, Objective)) or callable(objective)
    objectives = [resolve_objective(o) for o in ([objective] if single else list(objective))]
    heldout = [resolve_objective(o) for o in heldout_objectives]
    if not objectives:
        raise ConfigurationError("Give at least one objective to tune the proposer on.")
    return RunPlan(objectives=objectives, heldout=heldout, settings=settings.resolved(objectives))
