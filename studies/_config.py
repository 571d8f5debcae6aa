"""The proposer configuration searched by the outer study, and its search space."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution

from bilevel_optuna._checks import check_int
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives._base import suggest_all
from bilevel_optuna.samplers import TEMPLATES
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.samplers import get_mechanism_class
from bilevel_optuna.samplers.mechanisms._loading import builtin_mechanism_names
from bilevel_optuna.samplers.mechanisms._loading import load_mechanism
from bilevel_optuna.samplers.mechanisms._loading import load_mechanism_by_name
from bilevel_optuna.samplers._prompt import HISTORY_ORDERS
from bilevel_optuna.samplers._state import OPTIMIZER_STATES
from bilevel_optuna.samplers._state import STATE_MODES

#: Prefix of the outer parameters that switch a mechanism on, and of their own parameters.
MECHANISM_PREFIX = "mech."

#: Mechanisms the outer study offers by default. Hybrid is left out: it hands trials to another
#: sampler, so a win would not be the proposer's; users add it with `mechanisms=[..., "hybrid"]`.
DEFAULT_MECHANISMS = ("tabu", "orthogonal", "trust_region", "restart", "candidate_choice")


# Short names of the built-in mechanisms in :meth:`ProposerConfig.describe`.
_SHORT = {"orthogonal": "orth", "trust_region": "trust", "candidate_choice": "choice"}


@dataclasses.dataclass(frozen=True)
class ProposerConfig:
    """One configuration of LLMSampler: what an outer trial evaluates.

    ``mechanisms`` is a tuple of ``(name, params)`` in hook order. ``optimizer_state`` and
    ``state_mode`` are LLMSampler's (``"none"`` for no state: specs are TOML, which has no null).
    """

    temperature: float = 0.7
    history_size: int = 15
    history_order: str = "best"
    template: str = "default"
    n_candidates: int = 1
    mechanisms: tuple[tuple[str, dict[str, Any]], ...] = ()
    optimizer_state: str = "none"
    state_mode: str = "beside"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["mechanisms"] = [[n, dict(p)] for n, p in self.mechanisms]
        # Settings added after the first release are written only when set, so the key (and
        # the arm and study names built from it) of every earlier configuration stays the same.
        for name, default in _LATER_DEFAULTS.items():
            if out[name] == default:
                del out[name]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ProposerConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ConfigurationError(
                f"Unknown proposer settings {unknown}; valid ones are {sorted(fields)}."
            )
        values = dict(data)
        values["mechanisms"] = tuple((str(n), dict(p)) for n, p in values.get("mechanisms", ()))
        return cls(**values)

    def key(self) -> str:
        """A short stable hash naming this configuration's inner studies (so reruns reuse them)."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def describe(self) -> str:
        """What this configuration is, in a few words: ``t=0.7 h=24 tabu+orth``.

        Temperature and history size always; the history order, template and candidates per
        call when they differ from the defaults; the mechanisms in hook order, shortened.
        """
        default = ProposerConfig()
        parts = [f"t={self.temperature:.2g}", f"h={self.history_size}"]
        if self.history_order != default.history_order:
            parts.append(self.history_order)
        if self.template != default.template:
            parts.append(self.template)
        if self.n_candidates != default.n_candidates:
            parts.append(f"k={self.n_candidates}")
        if self.optimizer_state != default.optimizer_state:
            mode = "" if self.state_mode == default.state_mode else f"({self.state_mode})"
            parts.append(f"state={self.optimizer_state}{mode}")
        if self.mechanisms:
            parts.append("+".join(_SHORT.get(name, name) for name, _ in self.mechanisms))
        return " ".join(parts)

    def sampler_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~bilevel_optuna.samplers.LLMSampler`."""
        return {
            "temperature": self.temperature,
            "history_size": self.history_size,
            "history_order": self.history_order,
            "template": self.template,
            "n_candidates": self.n_candidates,
            # Names come from the outer study's parameters (a storage): looked up, never run.
            "mechanisms": [load_mechanism_by_name(n, **p) for n, p in self.mechanisms],
            "optimizer_state": self.optimizer_state,
            "state_mode": self.state_mode,
        }


#: Settings added after the first release, and their defaults (see :meth:`ProposerConfig.to_dict`).
_LATER_DEFAULTS = {"optimizer_state": "none", "state_mode": "beside"}

#: The Level-0 proposer: the default configuration, no mechanism.
LEVEL0 = ProposerConfig()


class OuterSpace:
    """The outer study's search space over :class:`ProposerConfig`.

    Args:
        temperature, history_size, history_order, template, n_candidates: A distribution to
            search that setting over (narrowing or widening the default), or a plain value to fix
            it.
        optimizer_state, state_mode: The same for LLMSampler's optimizer state in the prompt;
            ``state_mode`` is drawn only where ``optimizer_state`` is not ``"none"``.
        mechanisms: Mechanisms the outer study may switch on, each with its own parameters as
            conditional parameters (``mech.tabu`` -> ``mech.tabu.radius``). Names, classes, paths
            or source text of generated mechanisms. ``[]`` searches the bare proposer only.
        max_mechanisms: At most this many switched on at once (more are dropped, last first).

    Example:

        .. code-block:: python

            OuterSpace(temperature=0.7, history_size=IntDistribution(5, 20), mechanisms=["tabu"])
    """

    def __init__(
        self,
        *,
        temperature: float | BaseDistribution = FloatDistribution(0.0, 1.2),
        history_size: int | BaseDistribution = IntDistribution(0, 30),
        history_order: str | BaseDistribution = CategoricalDistribution(list(HISTORY_ORDERS)),
        template: str | BaseDistribution = CategoricalDistribution(sorted(TEMPLATES)),
        n_candidates: int | BaseDistribution = IntDistribution(1, 4),
        optimizer_state: str | BaseDistribution = CategoricalDistribution(
            ["none", *OPTIMIZER_STATES]
        ),
        state_mode: str | BaseDistribution = CategoricalDistribution(list(STATE_MODES)),
        mechanisms: Sequence[str | type] = DEFAULT_MECHANISMS,
        max_mechanisms: int = 3,
    ) -> None:
        self.settings: dict[str, Any] = {
            "temperature": temperature,
            "history_size": history_size,
            "history_order": history_order,
            "template": template,
            "n_candidates": n_candidates,
            "optimizer_state": optimizer_state,
            "state_mode": state_mode,
        }
        self.max_mechanisms = check_int("max_mechanisms", max_mechanisms, minimum=0)
        self.mechanisms: dict[str, type] = {}
        for spec in mechanisms:
            cls = spec if isinstance(spec, type) else type(load_mechanism(spec))
            if isinstance(spec, str) and "\n" not in spec and not spec.endswith(".py"):
                cls = get_mechanism_class(spec)
            self.mechanisms[cls.name] = cls
        # Validate fixed values now rather than in the middle of a study (the model is lazy).
        fixed = {k: v for k, v in self.settings.items() if not isinstance(v, BaseDistribution)}
        try:
            LLMSampler(model="local", **ProposerConfig(**fixed).sampler_kwargs())
        except (TypeError, ValueError) as err:
            raise ConfigurationError(f"Invalid fixed proposer setting: {err}") from err

    def __eq__(self, other: object) -> bool:
        """The same settings, the same mechanism classes and the same cap: the same space
        (so that settings read back from storage equal the ones written)."""
        if not isinstance(other, OuterSpace):
            return NotImplemented
        return (
            self.settings == other.settings
            and self.mechanisms == other.mechanisms
            and self.max_mechanisms == other.max_mechanisms
        )

    def __hash__(self) -> int:
        return hash((tuple(self.mechanisms), self.max_mechanisms))

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
        return (
            f"OuterSpace({settings}, mechanisms={list(self.mechanisms)}, "
            f"max_mechanisms={self.max_mechanisms})"
        )

    def to_config(self) -> dict[str, Any] | None:
        """A JSON-able form that :meth:`from_config` rebuilds on another server, or None when a
        mechanism is a class no name resolves to there."""
        from optuna.distributions import distribution_to_json

        settings = {
            key: {"distribution": distribution_to_json(value)}
            if isinstance(value, BaseDistribution)
            else value
            for key, value in self.settings.items()
        }
        names = list(self.mechanisms)
        for name, cls in self.mechanisms.items():
            try:
                if get_mechanism_class(name) is not cls and name not in builtin_mechanism_names():
                    return None
            except (ConfigurationError, KeyError, ValueError):
                return None
        return {"settings": settings, "mechanisms": names, "max_mechanisms": self.max_mechanisms}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> OuterSpace:
        """The space :meth:`to_config` described (generated mechanisms must be registered)."""
        from optuna.distributions import json_to_distribution

        settings = {
            key: json_to_distribution(value["distribution"])
            if isinstance(value, Mapping) and "distribution" in value
            else value
            for key, value in config["settings"].items()
        }
        return cls(
            **settings,
            # Stored names are looked up, never read as paths or source text.
            mechanisms=[get_mechanism_class(str(n)) for n in config["mechanisms"]],
            max_mechanisms=int(config["max_mechanisms"]),
        )

    def distributions(self) -> dict[str, BaseDistribution]:
        """The unconditional distributions (for describing the space); ``state_mode`` is
        conditional on a state being shown, like a mechanism's parameters."""
        out = {
            k: v
            for k, v in self.settings.items()
            if isinstance(v, BaseDistribution) and k != "state_mode"
        }
        for name in self.mechanisms:
            out[MECHANISM_PREFIX + name] = CategoricalDistribution([False, True])
        return out

    def suggest(self, trial: optuna.trial.BaseTrial) -> ProposerConfig:
        """Suggest one configuration on an outer trial."""
        values: dict[str, Any] = {}
        for key, value in self.settings.items():
            if key == "state_mode" and values["optimizer_state"] == "none":
                continue  # conditional: no state, nothing to place
            values[key] = (
                _suggest(trial, key, value) if isinstance(value, BaseDistribution) else value
            )
        chosen: list[tuple[str, dict[str, Any]]] = []
        for name, cls in self.mechanisms.items():
            on = trial.suggest_categorical(MECHANISM_PREFIX + name, [False, True])
            if not on:
                continue
            params = {
                p: _suggest(trial, f"{MECHANISM_PREFIX}{name}.{p}", d)
                for p, d in cls.search_space().items()
            }
            chosen.append((name, params))
        values["mechanisms"] = tuple(chosen[: self.max_mechanisms])
        return ProposerConfig(**values)

    def params_of(self, config: ProposerConfig) -> dict[str, Any]:
        """Outer-trial parameters that reproduce ``config`` (to enqueue it)."""
        params = {
            k: getattr(config, k)
            for k, v in self.settings.items()
            if isinstance(v, BaseDistribution)
            and not (k == "state_mode" and config.optimizer_state == "none")
        }
        on = dict(config.mechanisms)
        for name in self.mechanisms:
            params[MECHANISM_PREFIX + name] = name in on
            if name in on:
                for p, value in on[name].items():
                    params[f"{MECHANISM_PREFIX}{name}.{p}"] = value
        return params


def _suggest(trial: optuna.trial.BaseTrial, name: str, dist: BaseDistribution) -> Any:
    return suggest_all(trial, {name: dist})[name]
