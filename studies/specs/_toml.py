"""Study specs: TOML files that describe a run, validated before it starts.

Two kinds of spec, told apart by their tables:

- a bilevel run: ``[run]`` (its name, storage and seed), ``[inner]``, ``[outer]`` with
  ``[outer.space]``, and ``[model]``; the tables are the fields of
  :class:`~bilevel_optuna.studies.BilevelSettings` (``[inner]`` and ``[outer]`` also name the
  objectives and held-out objectives; ``[run]`` still takes the ``[model]`` keys);
- a single study tuned by one sampler: ``[study]``, ``[objective]`` and optionally
  ``[study.proposer]`` (the LLMSampler's settings).

Objectives are registry names (``"branin"``), tables naming one with arguments
(``{name = "lm", steps = 200}``) or script objectives (``{kind = "script", command = ...}``).
Unknown keys, wrong types and unknown names are errors that list the valid ones. The shipped
specs live beside this module and load by name (``load_spec("demo")``).
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bilevel_optuna._storage import parse_storage_options
from bilevel_optuna._warnings import warn
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives import get_objective
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.objectives._script import ScriptObjective
from bilevel_optuna.objectives._space_config import distribution_from_config
from bilevel_optuna.studies._arms import SAMPLERS
from bilevel_optuna.studies._config import OuterSpace
from bilevel_optuna.studies.specs._settings import KEYWORDS
from bilevel_optuna.studies.specs._settings import BilevelSettings
from bilevel_optuna.studies.specs._settings import InnerSettings
from bilevel_optuna.studies.specs._settings import ModelSettings
from bilevel_optuna.studies.specs._settings import OuterSettings
from bilevel_optuna.studies.specs._settings import field_path
from bilevel_optuna.studies.specs._settings import keyword_value

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# key -> (allowed types, default); a default of ... means required.
_MODEL = {
    "model": (str, None),
    "on_model_error": (str, "raise"),
    "max_tokens_total": (int, None),
    "max_cost": ((int, float), None),
    "token_prices": (list, None),
}
# [run] keeps the [model] keys it had before [model] existed.
_RUN = {
    "name": (str, ...),
    "storage": (str, None),
    "storage_options": (dict, None),
    "seed": (int, 0),
    **_MODEL,
}
_INNER = {
    "objectives": (list, ...),
    "heldout": (list, []),
    "n_trials": (int, 20),
    "n_repeats": (int, 3),
    "seeds": (list, None),
    "heldout_seeds": (list, None),
}
_OUTER = {
    "n_trials": (int, 8),
    "sampler": (str, "tpe"),
    "aggregate": (str, "auto"),
    "prune": (bool, True),
    "cost_objective": ((bool, str), False),
    "baselines": (list, ["random", "tpe", "llm-level0"]),
    "start_from": (list, ["level0"]),
    "space": (dict, {}),
}
_SPACE = {
    "temperature": ((int, float, dict), None),
    "history_size": ((int, dict), None),
    "history_order": ((str, list, dict), None),
    "template": ((str, list, dict), None),
    "n_candidates": ((int, dict), None),
    "optimizer_state": ((str, list, dict), None),
    "state_mode": ((str, list, dict), None),
    "mechanisms": (list, None),
    "max_mechanisms": (int, None),
}
_STUDY = {
    "name": (str, ...),
    "n_trials": (int, 20),
    "n_jobs": (int, 1),
    "sampler": (str, "llm"),
    "storage": (str, None),
    "model": (str, None),
    "seed": (int, None),
    "proposer": (dict, {}),
}
_PROPOSER = {
    "temperature": ((int, float), None),
    "history_size": (int, None),
    "history_order": (str, None),
    "template": (str, None),
    "n_candidates": (int, None),
    "mechanisms": (list, None),
    "prior_knowledge": (str, None),
    "optimizer_state": (str, None),
    "state_mode": (str, None),
    "on_model_error": (str, None),
    "max_tokens_total": (int, None),
    "max_cost": ((int, float), None),
    "token_prices": (list, None),
}


def _table(data: Any, schema: dict[str, tuple[Any, Any]], where: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"[{where}] must be a table but got {type(data).__name__}.")
    unknown = sorted(set(data) - set(schema))
    if unknown:
        hints = [difflib.get_close_matches(k, list(schema), n=1) for k in unknown]
        hint = "".join(f" ('{k}': did you mean '{h[0]}'?)" for k, h in zip(unknown, hints) if h)
        raise ConfigurationError(
            f"Unknown key(s) {unknown} in [{where}]{hint}; valid keys are {sorted(schema)}."
        )
    out: dict[str, Any] = {}
    for key, (types, default) in schema.items():
        if key not in data:
            if default is ...:
                raise ConfigurationError(f"[{where}] needs `{key}`.")
            out[key] = default
            continue
        value = data[key]
        bad_bool = isinstance(value, bool) and bool not in (
            types if isinstance(types, tuple) else (types,)
        )
        if not isinstance(value, types) or bad_bool:
            names = (
                types.__name__
                if isinstance(types, type)
                else " or ".join(t.__name__ for t in types)
            )
            raise ConfigurationError(
                f"`{key}` in [{where}] must be {names} but got {type(value).__name__} {value!r}."
            )
        out[key] = value
    return out


def build_objective(entry: Any, *, base_dir: Path, where: str) -> Objective:
    """An objective from a spec entry: a registry name, ``{name=..., **kwargs}`` or a script."""
    if isinstance(entry, str):
        return get_objective(entry)
    if isinstance(entry, Mapping):
        if entry.get("kind") == "script":
            objective = ScriptObjective.from_config(entry, base_dir=base_dir)
            objective.spec_entry = dict(entry)
            return objective
        if "name" in entry and "kind" not in entry:
            kwargs = {k: v for k, v in entry.items() if k != "name"}
            return get_objective(entry["name"], **kwargs)
    raise ConfigurationError(
        f"Each objective in {where} must be a registry name, a table {{name = ..., ...}} or a "
        f'script table {{kind = "script", ...}}, but got {entry!r}.'
    )


def _space_value(name: str, value: Any) -> Any:
    """A plain value fixes a setting; a table or a list of choices makes it a distribution."""
    if isinstance(value, (dict, list)):
        return distribution_from_config(name, value)
    return value


@dataclasses.dataclass
class BilevelSpec:
    """A validated bilevel spec: the run's objectives, name, storage and settings.

    ``run_bilevel_study(**spec.kwargs)`` runs it.

    Attributes:
        path: The spec file.
        objectives: The training objectives (``[inner] objectives``).
        heldout: The held-out objectives (``[inner] heldout``).
        run_name: ``[run] name``.
        settings: The run's :class:`~bilevel_optuna.studies.BilevelSettings`.
        storage: ``[run] storage``, or None (the default storage).
        storage_options: ``[run] storage_options``, or None.
    """

    path: Path
    objectives: list[Objective]
    heldout: list[Objective]
    run_name: str
    settings: BilevelSettings
    storage: str | None = None
    storage_options: dict[str, Any] | None = None

    @property
    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`~bilevel_optuna.studies.run_bilevel_study`.

        The keywords of the previous release (``kwargs["n_inner_trials"]``) are still read,
        with a :class:`FutureWarning` naming the settings field.
        """
        kwargs = _Keywords(
            objective=self.objectives,
            heldout_objectives=self.heldout,
            storage=self.storage,
            run_name=self.run_name,
            settings=self.settings,
        )
        if self.storage_options is not None:  # only when given, as before
            kwargs["storage_options"] = dict(self.storage_options)
        return kwargs


class _Keywords(dict):  # type: ignore[type-arg]
    """``BilevelSpec.kwargs``: a settings field read under its old keyword warns and works."""

    def __missing__(self, key: str) -> Any:
        if key not in KEYWORDS:
            raise KeyError(key)
        warn(
            f"BilevelSpec.kwargs[{key!r}] is deprecated: read spec.{field_path(key)} "
            "(BilevelSpec.settings is a BilevelSettings).",
            FutureWarning,
        )
        value = keyword_value(self["settings"], key)
        return list(value) if isinstance(value, tuple) else value


@dataclasses.dataclass
class StudySpec:
    """A validated single-study spec."""

    path: Path
    name: str
    objective: Objective
    n_trials: int
    n_jobs: int
    sampler: str
    storage: str | None
    model: str | None
    seed: int | None
    proposer: dict[str, Any]


#: The folder of the shipped specs (this subpackage's own folder).
SHIPPED = Path(__file__).parent


def _shipped(path: Path) -> Path:
    """A shipped spec by name (``demo``, ``demo.toml``), so a wheel without the repository runs
    it too; ``studies/demo.toml``, where the shipped specs were before ``studies/specs/``,
    finds it as well."""
    shipped = SHIPPED / (path.name if path.suffix else f"{path.name}.toml")
    if shipped.is_file() and (len(path.parts) == 1 or path.parent.as_posix() == "studies"):
        return shipped
    names = sorted(p.stem for p in SHIPPED.glob("*.toml"))
    raise ConfigurationError(
        f"Spec file {str(path)!r} does not exist; give a path, or one of the shipped specs by "
        f"name: {names}."
    )


def load_spec(path: str | Path) -> BilevelSpec | StudySpec:
    """Read and validate a spec file; every error names the key and the fix."""
    path = Path(path)
    if not path.is_file():
        path = _shipped(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigurationError(f"{path} is not valid TOML: {err}") from err
    base_dir = path.resolve().parent
    if "run" in data or "outer" in data or "inner" in data:
        return _load_bilevel(data, path, base_dir)
    if "study" in data:
        return _load_study(data, path, base_dir)
    raise ConfigurationError(
        f"{path} must have [run], [inner] and [outer] tables (a bilevel run) or [study] and "
        f"[objective] tables (one study) but has {sorted(data)}."
    )


def _load_bilevel(data: dict[str, Any], path: Path, base_dir: Path) -> BilevelSpec:
    unknown = sorted(set(data) - {"run", "inner", "outer", "model"})
    if unknown:
        raise ConfigurationError(
            f"Unknown table(s) {unknown} in {path}; a bilevel spec has [run], [inner], [outer] "
            "and [model]."
        )
    run = _table(data.get("run", {}), _RUN, "run")
    inner = _table(data.get("inner", {}), _INNER, "inner")
    outer = _table(data.get("outer", {}), _OUTER, "outer")
    # Checked now, so that a misspelt key fails before the run starts; kept as written.
    parse_storage_options(run["storage_options"], where="[run] storage_options")
    objectives = [
        build_objective(e, base_dir=base_dir, where="[inner] objectives")
        for e in inner.pop("objectives")
    ]
    heldout = [
        build_objective(e, base_dir=base_dir, where="[inner] heldout")
        for e in inner.pop("heldout")
    ]
    outer["space"] = _outer_space(outer["space"])
    model, model_where = _model_table(data, run)
    settings = BilevelSettings(
        inner=_settings(InnerSettings, inner, "inner"),
        outer=_settings(OuterSettings, outer, "outer"),
        model=_settings(ModelSettings, model, model_where),
        seed=run["seed"],
    )
    return BilevelSpec(
        path=path,
        objectives=objectives,
        heldout=heldout,
        run_name=run["name"],
        settings=settings,
        storage=run["storage"],
        storage_options=run["storage_options"],
    )


def _outer_space(table: Any) -> OuterSpace:
    space_table = _table(table, _SPACE, "outer.space")
    space_kwargs = {
        key: (_space_value(key, value) if key not in ("mechanisms", "max_mechanisms") else value)
        for key, value in space_table.items()
        if value is not None
    }
    try:
        return OuterSpace(**space_kwargs)
    except ValueError as err:
        raise ConfigurationError(f"[outer.space]: {err}") from err


def _model_table(data: dict[str, Any], run: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """``[model]``, with the keys ``[run]`` took before there was a ``[model]`` table, and
    the table an error names (where the keys were written)."""
    model = _table(data.get("model", {}), _MODEL, "model")
    given = {k for k in _MODEL if k in data.get("model", {})}
    from_run = [key for key in _MODEL if key in data.get("run", {})]
    for key in from_run:
        if key in given:
            raise ConfigurationError(f"`{key}` is in both [run] and [model]; keep one.")
        model[key] = run[key]
    return model, "run" if from_run else "model"


def _settings(cls: type, values: dict[str, Any], table: str) -> Any:
    """A settings object from a table; its own check's message names the table."""
    try:
        return cls(**values)
    except ConfigurationError as err:
        raise ConfigurationError(f"[{table}]: {err}") from None


def _load_study(data: dict[str, Any], path: Path, base_dir: Path) -> StudySpec:
    unknown = sorted(set(data) - {"study", "objective"})
    if unknown:
        raise ConfigurationError(
            f"Unknown table(s) {unknown} in {path}; a single-study spec has [study], [objective]."
        )
    if "objective" not in data:
        raise ConfigurationError(f"{path} needs an [objective] table.")
    study = _table(data["study"], _STUDY, "study")
    proposer = {
        k: v
        for k, v in _table(study.pop("proposer"), _PROPOSER, "study.proposer").items()
        if v is not None
    }
    if study["sampler"] not in SAMPLERS:
        raise ConfigurationError(
            f"`sampler` in [study] must be one of {list(SAMPLERS)} but got {study['sampler']!r}."
        )
    objective = build_objective(data["objective"], base_dir=base_dir, where="[objective]")
    return StudySpec(path=path, objective=objective, proposer=proposer, **study)
