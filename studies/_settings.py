"""A bilevel run's settings, stored in its outer study so that a worker needs only the URL.

``bilevel-optuna worker --storage URL --run NAME`` rebuilds the run from what
:func:`store_settings` wrote (the outer study's user attribute ``bilevel:settings``): the run's
resolved :class:`~bilevel_optuna.studies.BilevelSettings` as their ``to_dict()`` (the repeats'
seeds spelled out, the outer space as a plain table, the model spec without credentials), and
beside them the objectives as spec entries (registry names, ``{name = ..., **kwargs}`` tables,
script tables). A run started from Python with objects that have no such form (a plain
function, a custom sampler object) is still stored; a worker then takes only the work it can
rebuild and says what it cannot.

Layouts: version 2 (this one) nests the settings under ``inner``, ``outer`` and ``model``;
version 1 (before the settings objects) was flat. :meth:`RunSettings.from_dict` reads both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage

from bilevel_optuna import _attrs
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.studies._spend import ModelPolicy
from bilevel_optuna.studies.specs._settings import BilevelSettings
from bilevel_optuna.studies.specs._settings import cost_name
from bilevel_optuna.studies.specs._settings import safe_model_spec  # noqa: F401 - callers' path
from bilevel_optuna.studies.specs._toml import build_objective

#: Outer study user attribute holding the run's settings.
SETTINGS = _attrs.SETTINGS
_VERSION = 2
#: What a run's settings hold beside the settings objects' ``to_dict()``.
_RUN_KEYS = (
    "objectives", "objective_names", "heldout", "heldout_names", "base_dir", "stale_after"
)


def objective_entry(objective: Objective) -> Any:
    """The spec entry that rebuilds ``objective`` on another server, or None."""
    return getattr(objective, "spec_entry", None)


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What a worker needs to take part in a run (everything but the objects themselves).

    ``settings`` is the stored ``BilevelSettings.to_dict()`` of the run's resolved settings,
    read as stored: a None there (``outer.sampler``, ``outer.space``, ``model.model``) is an
    object only the process that started the run has. The properties give the worker its
    values by their flat names.
    """

    settings: Mapping[str, Any]
    objectives: list[Any]  # spec entries, None where an objective has none
    objective_names: list[str]
    heldout: list[Any]
    heldout_names: list[str]
    base_dir: str
    stale_after: float
    version: int = _VERSION

    @classmethod
    def for_run(
        cls,
        settings: BilevelSettings,
        *,
        objectives: list[Objective],
        heldout: list[Objective],
        base_dir: str,
        stale_after: float,
    ) -> RunSettings:
        """The stored form of a run with these (resolved) settings and objectives."""
        return cls(
            settings=settings.to_dict(),
            objectives=[objective_entry(o) for o in objectives],
            objective_names=[o.name for o in objectives],
            heldout=[objective_entry(o) for o in heldout],
            heldout_names=[o.name for o in heldout],
            base_dir=base_dir,
            stale_after=stale_after,
        )

    @property
    def n_inner_trials(self) -> int:
        return int(self.settings["inner"]["n_trials"])

    @property
    def seeds(self) -> list[int]:
        return list(self.settings["inner"]["seeds"])

    @property
    def heldout_seeds(self) -> list[int]:
        return list(self.settings["inner"]["heldout_seeds"])

    @property
    def n_outer_trials(self) -> int:
        return int(self.settings["outer"]["n_trials"])

    @property
    def outer_sampler(self) -> str | None:
        """The outer sampler's name; None: a sampler object only the starting process has."""
        return self.settings["outer"]["sampler"]

    @property
    def space(self) -> dict[str, Any] | None:
        """The outer space as a plain table; None: one only the starting process has."""
        return self.settings["outer"]["space"]

    @property
    def aggregate(self) -> str:
        return str(self.settings["outer"]["aggregate"])

    @property
    def prune(self) -> bool:
        return bool(self.settings["outer"]["prune"])

    @property
    def cost_objective(self) -> str | None:
        """The outer study's second objective (``"tokens"``, ``"seconds"``), or None."""
        return cost_name(self.settings["outer"]["cost_objective"]) or None

    @property
    def baselines(self) -> list[str]:
        return list(self.settings["outer"]["baselines"])

    @property
    def model(self) -> str | None:
        return self.settings["model"]["model"]

    @property
    def seed(self) -> int:
        return int(self.settings["seed"])

    def policy(self) -> ModelPolicy:
        """The run's :class:`~bilevel_optuna.studies._spend.ModelPolicy`."""
        model = self.settings["model"]
        return ModelPolicy(
            on_model_error=model.get("on_model_error", "raise"),
            max_tokens_total=model.get("max_tokens_total"),
            max_cost=model.get("max_cost"),
            token_prices=model.get("token_prices"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The stored layout: the settings' sections, the run's keys beside them."""
        out = {"version": self.version, **dict(self.settings)}
        out.update({key: getattr(self, key) for key in _RUN_KEYS})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSettings:
        """A run's stored settings, of this layout or of version 1."""
        version = data.get("version", 0)
        if version > _VERSION:
            raise ConfigurationError(
                f"This run was written by a newer bilevel-optuna (settings version "
                f"{version}); upgrade this worker's package."
            )
        if not isinstance(data.get("inner"), Mapping):
            data = from_version_1(data)
        sections = {k: data[k] for k in ("inner", "outer", "model", "seed")}
        return cls(settings=sections, **{k: data[k] for k in _RUN_KEYS})

    def build_objectives(self) -> tuple[list[Objective | None], list[Objective | None]]:
        """The objectives rebuilt from their entries (None where there is no entry)."""

        def build(entries: list[Any], where: str) -> list[Objective | None]:
            return [
                None
                if entry is None
                else build_objective(entry, base_dir=Path(self.base_dir), where=where)
                for entry in entries
            ]

        return build(self.objectives, "the run's objectives"), build(self.heldout, "held-out")


def from_version_1(data: Mapping[str, Any]) -> dict[str, Any]:
    """The version-2 layout of settings stored flat by version 1 (before the settings
    objects): the same values, nested as ``BilevelSettings.to_dict()`` nests them."""
    return {
        "version": 2,
        "inner": {
            "n_trials": data["n_inner_trials"],
            "n_repeats": len(data["seeds"]),
            "seeds": list(data["seeds"]),
            "heldout_seeds": list(data["heldout_seeds"]),
        },
        "outer": {
            "n_trials": data["n_outer_trials"],
            "space": data["space"],
            "sampler": data["outer_sampler"],
            "aggregate": data["aggregate"],
            "prune": data["prune"],
            "cost_objective": data["cost_objective"],
            "baselines": list(data["baselines"]),
            "start_from": ["level0"],  # not stored by version 1; only the starting run used it
        },
        "model": {
            "model": data["model"],
            "on_model_error": data.get("on_model_error", "raise"),
            "max_tokens_total": data.get("max_tokens_total"),
            "max_cost": data.get("max_cost"),
            "token_prices": data.get("token_prices"),
        },
        "seed": data["seed"],
        **{key: data[key] for key in _RUN_KEYS},
    }


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
