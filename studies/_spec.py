"""Study specs: TOML files under ``studies/`` that describe a run, validated before it starts.

Two kinds of spec, told apart by their tables:

- a bilevel run: ``[run]``, ``[inner]``, ``[outer]`` and optionally ``[outer.space]``;
- a single study tuned by one sampler: ``[study]``, ``[objective]`` and optionally
  ``[study.proposer]`` (the LLMSampler's settings).

Objectives are registry names (``"branin"``), tables naming one with arguments
(``{name = "lm", steps = 200}``) or script objectives (``{kind = "script", command = ...}``).
Unknown keys, wrong types and unknown names are errors that list the valid ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bilevel_optuna._storage import parse_storage_options
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives import get_objective
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.objectives._script import ScriptObjective
from bilevel_optuna.objectives._space_config import distribution_from_config
from bilevel_optuna.studies._arms import SAMPLERS
from bilevel_optuna.studies._config import OuterSpace
from bilevel_optuna.studies._spend import ModelPolicy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# key -> (allowed types, default); a default of ... means required.
_RUN = {
    "name": (str, ...),
    "storage": (str, None),
    "storage_options": (dict, None),
    "model": (str, None),
    "seed": (int, 0),
    # The model policy (studies/_spend.py): on endpoint errors, the spend cap, the prices.
    "on_model_error": (str, "raise"),
    "max_tokens_total": (int, None),
    "max_cost": ((int, float), None),
    "token_prices": (list, None),
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
    "cost_objective": (bool, False),
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
    """A validated bilevel spec: keyword arguments for :func:`run_bilevel_study`."""

    path: Path
    kwargs: dict[str, Any]


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


def load_spec(path: str | Path) -> BilevelSpec | StudySpec:
    """Read and validate a spec file; every error names the key and the fix."""
    path = Path(path)
    if not path.is_file():
        # A shipped spec by name ("demo", "demo.toml"), so a wheel without the repo runs it too.
        shipped = Path(__file__).parent / (path.name if path.suffix else f"{path.name}.toml")
        if len(path.parts) == 1 and shipped.is_file():
            path = shipped
        else:
            names = sorted(p.stem for p in Path(__file__).parent.glob("*.toml"))
            raise ConfigurationError(
                f"Spec file {str(path)!r} does not exist; give a path, or one of the shipped "
                f"specs by name: {names}."
            )
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
    unknown = sorted(set(data) - {"run", "inner", "outer"})
    if unknown:
        raise ConfigurationError(
            f"Unknown table(s) {unknown} in {path}; a bilevel spec has [run], [inner], [outer]."
        )
    run = _table(data.get("run", {}), _RUN, "run")
    inner = _table(data.get("inner", {}), _INNER, "inner")
    outer = _table(data.get("outer", {}), _OUTER, "outer")
    space_table = _table(outer.pop("space"), _SPACE, "outer.space")

    # Checked now, so that a misspelt key fails before the run starts; kept as written.
    parse_storage_options(run["storage_options"], where="[run] storage_options")
    objectives = [
        build_objective(e, base_dir=base_dir, where="[inner] objectives")
        for e in inner["objectives"]
    ]
    heldout = [
        build_objective(e, base_dir=base_dir, where="[inner] heldout") for e in inner["heldout"]
    ]

    space_kwargs = {
        key: (_space_value(key, value) if key not in ("mechanisms", "max_mechanisms") else value)
        for key, value in space_table.items()
        if value is not None
    }
    try:
        space = OuterSpace(**space_kwargs)
    except ValueError as err:
        raise ConfigurationError(f"[outer.space]: {err}") from err
    kwargs = {
        "objective": objectives,
        "heldout_objectives": heldout,
        "storage": run["storage"],
        "run_name": run["name"],
        "model": run["model"],
        "seed": run["seed"],
        "n_inner_trials": inner["n_trials"],
        "n_repeats": inner["n_repeats"],
        "seeds": inner["seeds"],
        "heldout_seeds": inner["heldout_seeds"],
        "n_outer_trials": outer["n_trials"],
        "outer_sampler": outer["sampler"],
        "aggregate": outer["aggregate"],
        "prune": outer["prune"],
        "cost_objective": outer["cost_objective"],
        "baselines": outer["baselines"],
        "start_from": outer["start_from"],
        "outer_space": space,
        "on_model_error": run["on_model_error"],
        "max_tokens_total": run["max_tokens_total"],
        "max_cost": run["max_cost"],
        "token_prices": run["token_prices"],
    }
    try:  # checked now, so that a wrong value fails before the run starts
        ModelPolicy(**{k: kwargs[k] for k in ModelPolicy.__dataclass_fields__})
    except ConfigurationError as err:
        raise ConfigurationError(f"[run]: {err}") from None
    if run["storage_options"] is not None:  # only when given: run_bilevel_study(storage_options=)
        kwargs["storage_options"] = dict(run["storage_options"])
    return BilevelSpec(path=path, kwargs=kwargs)


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
