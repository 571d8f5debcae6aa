"""Search spaces written as tables (TOML or plain dicts) instead of Optuna distributions.

One entry per parameter, the table form Optuna's ``suggest_*`` arguments take::

    [objective.search_space]
    lr = {type = "float", low = 1e-4, high = 1e-1, log = true}
    depth = {type = "int", low = 2, high = 12}
    batch = {type = "int", low = 16, high = 256, step = 16}
    act = {type = "categorical", choices = ["relu", "gelu"]}
    window = ["SSSL", "SSLL", "L"]       # a bare list is a categorical

A distribution object is accepted as is, so Python users may mix both forms.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution

from bilevel_optuna.exceptions import ConfigurationError

_KEYS = {
    "float": ("type", "low", "high", "log", "step"),
    "int": ("type", "low", "high", "log", "step"),
    "categorical": ("type", "choices"),
}


def distribution_from_config(name: str, spec: Any) -> BaseDistribution:
    """Return the Optuna distribution of one parameter written in the table form."""
    if isinstance(spec, BaseDistribution):
        return spec
    if isinstance(spec, (list, tuple)):
        spec = {"type": "categorical", "choices": list(spec)}
    if not isinstance(spec, Mapping):
        raise ConfigurationError(
            f"Parameter {name!r} must be a table such as "
            f'{{type = "float", low = 0.0, high = 1.0}} or a list of choices, but got {spec!r}.'
        )
    kind = spec.get("type")
    if kind not in _KEYS:
        raise ConfigurationError(
            f"Parameter {name!r}: `type` must be one of {sorted(_KEYS)} but got {kind!r}."
        )
    unknown = sorted(set(spec) - set(_KEYS[kind]))
    if unknown:
        raise ConfigurationError(
            f"Parameter {name!r}: unknown key(s) {unknown} for type {kind!r}; "
            f"valid keys are {list(_KEYS[kind])}."
        )
    try:
        if kind == "categorical":
            if "choices" not in spec:
                raise ConfigurationError(f"Parameter {name!r}: a categorical needs `choices`.")
            return CategoricalDistribution(list(spec["choices"]))
        missing = [key for key in ("low", "high") if key not in spec]
        if missing:
            raise ConfigurationError(f"Parameter {name!r}: type {kind!r} needs {missing}.")
        log = bool(spec.get("log", False))
        if kind == "float":
            step = spec.get("step")
            return FloatDistribution(
                float(spec["low"]),
                float(spec["high"]),
                log=log,
                step=None if step is None else float(step),
            )
        for key in ("low", "high", "step"):
            value = spec.get(key)
            if value is not None and (isinstance(value, bool) or value != int(value)):
                raise ConfigurationError(
                    f"Parameter {name!r}: `{key}` of an int parameter must be an integer "
                    f"but got {value!r}."
                )
        return IntDistribution(
            int(spec["low"]), int(spec["high"]), log=log, step=int(spec.get("step", 1))
        )
    except ConfigurationError:
        raise
    except (TypeError, ValueError) as err:
        # Optuna's own checks (low > high, log with step, ...) say what is wrong.
        raise ConfigurationError(f"Parameter {name!r}: {err}") from err


def distributions_from_config(table: Mapping[str, Any]) -> dict[str, BaseDistribution]:
    """Return ``{name: distribution}`` for a search space written in the table form.

    Args:
        table: Parameter name to a table (``{type = "float", low = ..., high = ...,
            log = true}``, ``{type = "int", ...}``, ``{type = "categorical", choices = [...]}``),
            a list of choices, or an Optuna distribution.

    Returns:
        The search space as Optuna distributions, in the order given.

    Raises:
        ConfigurationError: A parameter's table is malformed; the message names the parameter.

    Example:
        >>> distributions_from_config({"lr": {"type": "float", "low": 1e-4, "high": 1e-1,
        ...                                   "log": True}})["lr"].log
        True
    """
    if not isinstance(table, Mapping):
        raise ConfigurationError(
            f"search_space must be a table of parameters but got {type(table).__name__}."
        )
    if not table:
        raise ConfigurationError("search_space is empty; name at least one parameter.")
    return {str(name): distribution_from_config(str(name), spec) for name, spec in table.items()}
