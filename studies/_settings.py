"""A bilevel run's settings, stored in its outer study so that a worker needs only the URL.

``bilevel-optuna worker --storage URL --run NAME`` rebuilds the run from what
:func:`store_settings` wrote (the outer study's user attribute ``bilevel:settings``): the
objectives as spec entries (registry names, ``{name = ..., **kwargs}`` tables, script tables),
the repeats, the outer space as a plain table, the baselines and the model spec. A run started
from Python with objects that have no such form (a plain function, a custom sampler object) is
still stored; a worker then takes only the work it can rebuild and says what it cannot.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.storages import BaseStorage

from bilevel_optuna import _attrs
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.studies._spec import build_objective
from bilevel_optuna.studies._spend import ModelPolicy

#: Outer study user attribute holding the run's settings.
SETTINGS = _attrs.SETTINGS
_VERSION = 1


def objective_entry(objective: Objective) -> Any:
    """The spec entry that rebuilds ``objective`` on another server, or None."""
    return getattr(objective, "spec_entry", None)


def safe_model_spec(model: Any) -> str | None:
    """The chat model spec to store: a string, with any credentials in a URL removed."""
    if not isinstance(model, str):
        return None
    return re.sub(r"(https?://)[^/@\s]+@", r"\1", model)


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What a worker needs to take part in a run (everything but the objects themselves)."""

    objectives: list[Any]  # spec entries, None where an objective has none
    objective_names: list[str]
    heldout: list[Any]
    heldout_names: list[str]
    base_dir: str
    n_outer_trials: int
    n_inner_trials: int
    seeds: list[int]
    heldout_seeds: list[int]
    aggregate: str
    baselines: list[str]
    outer_sampler: str | None  # None: a sampler object only the starting process has
    space: dict[str, Any] | None  # None: an outer space only the starting process has
    prune: bool
    cost_objective: bool
    seed: int
    model: str | None
    stale_after: float
    version: int = _VERSION
    # The model policy (studies/_spend.py): on endpoint errors, and the run's spend cap.
    on_model_error: str = "raise"
    max_tokens_total: int | None = None
    max_cost: float | None = None
    token_prices: list[float] | None = None

    def policy(self) -> ModelPolicy:
        """The run's :class:`~bilevel_optuna.studies._spend.ModelPolicy`."""
        return ModelPolicy(
            on_model_error=self.on_model_error,
            max_tokens_total=self.max_tokens_total,
            max_cost=self.max_cost,
            token_prices=self.token_prices,  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSettings:
        fields = {f.name for f in dataclasses.fields(cls)}
        if data.get("version", 0) > _VERSION:
            raise ConfigurationError(
                f"This run was written by a newer bilevel-optuna (settings version "
                f"{data.get('version')}); upgrade this worker's package."
            )
        return cls(**{k: v for k, v in data.items() if k in fields})

    def build_objectives(self) -> tuple[list[Objective | None], list[Objective | None]]:
        """The objectives rebuilt from their entries (None where there is no entry)."""
        from pathlib import Path

        def build(entries: list[Any], where: str) -> list[Objective | None]:
            return [
                None
                if entry is None
                else build_objective(entry, base_dir=Path(self.base_dir), where=where)
                for entry in entries
            ]

        return build(self.objectives, "the run's objectives"), build(self.heldout, "held-out")


def store_settings(outer: optuna.Study, settings: RunSettings) -> None:
    """Write the settings on the outer study; the process that runs ``run`` is their author, so
    a resumed run with a larger budget updates them for its workers."""
    if outer.user_attrs.get(SETTINGS) != settings.to_dict():
        outer.set_user_attr(SETTINGS, settings.to_dict())


def load_settings(storage: BaseStorage, run_name: str) -> tuple[optuna.Study, RunSettings]:
    """The run's outer study and settings, or an error naming the runs that exist."""
    try:
        outer = optuna.load_study(study_name=run_name, storage=storage)
    except KeyError:
        outer = None
    if outer is None or outer.user_attrs.get(_attrs.KIND) != "outer":
        runs = sorted(
            s.study_name
            for s in optuna.get_all_study_summaries(storage=storage, include_best_trial=False)
            if s.user_attrs.get(_attrs.KIND) == "outer"
        )
        raise ConfigurationError(
            f"No bilevel run named {run_name!r} in this storage; "
            + (f"its runs are {runs}." if runs else "it holds no bilevel run yet.")
            + " Start one with `bilevel-optuna run SPEC --storage URL`, then join it with "
            "`bilevel-optuna worker --storage URL --run NAME`."
        )
    data = outer.user_attrs.get(SETTINGS)
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            f"The run {run_name!r} was started by a bilevel-optuna without workers (no "
            f"{SETTINGS!r} on its outer study). Resume it once with `bilevel-optuna run SPEC` "
            "(that stores its settings), then start workers."
        )
    return outer, RunSettings.from_dict(data)
