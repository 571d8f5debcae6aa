"""A bilevel run's settings: frozen dataclasses, validated once where they are built.

:class:`BilevelSettings` holds the three parts of a run that a user tunes, each a table of a
spec file with the same keys: :class:`InnerSettings` (``[inner]``: the inner studies and their
seeds), :class:`OuterSettings` (``[outer]``: the outer study, its space, sampler, racing and
baselines) and :class:`ModelSettings` (``[model]``: the chat model and its spend policy), plus
the run's ``seed``. The same objects are what :func:`~bilevel_optuna.studies.run_bilevel_study`
takes, what the TOML loader builds (``specs/_toml.py``) and, through :meth:`to_dict`, what the
outer study stores as ``bilevel:settings`` (``studies/_settings.py``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from optuna.samplers import BaseSampler

from bilevel_optuna._checks import check_int
from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.studies._arms import BASELINES
from bilevel_optuna.studies._arms import check_baselines
from bilevel_optuna.studies._config import OuterSpace
from bilevel_optuna.studies._outer import check_presets
from bilevel_optuna.studies._scoring import AGGREGATES
from bilevel_optuna.studies._scoring import resolve_aggregate
from bilevel_optuna.studies._spend import ModelPolicy

#: The outer study's samplers by name (or give a sampler object).
OUTER_SAMPLERS = ("tpe", "random", "llm")
#: What ``OuterSettings.cost_objective`` may add as the outer study's second objective.
COSTS = ("tokens", "seconds")


def safe_model_spec(model: Any) -> str | None:
    """The chat model spec to store: a string, with any credentials in a URL removed."""
    if not isinstance(model, str):
        return None
    return re.sub(r"(https?://)[^/@\s]+@", r"\1", model)


def _int(where: str, value: Any, minimum: int) -> int:
    try:
        return int(check_int(where, value, minimum=minimum))  # type: ignore[arg-type]
    except ValueError as err:
        raise ConfigurationError(str(err)) from None


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{where} must be True or False but got {value!r}.")
    return value


def cost_name(value: Any) -> str | bool:
    """``cost_objective`` spelled as the stored runs spell it: False, or the cost's name (True
    is ``"tokens"``, the one cost of earlier releases)."""
    if value is True:
        return "tokens"
    if value is False or value in COSTS:
        return value  # type: ignore[no-any-return]
    raise ConfigurationError(
        f"OuterSettings.cost_objective must be False, True or one of {COSTS} but got {value!r}."
    )


def _seeds(where: str, value: Sequence[int] | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigurationError(f"{where} must be a list of integers or None but got {value!r}.")
    seeds = tuple(_int(where, s, 0) for s in value)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigurationError(f"{where} must be distinct and not empty but got {list(seeds)}.")
    return seeds


def _names(where: str, value: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"{where} must be a list of names but got {value!r}.")
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class InnerSettings:
    """The inner studies: each outer trial runs one per training objective and seed.

    Attributes:
        n_trials: Trials per inner study.
        n_repeats: Inner studies per objective per outer trial, one per seed.
        seeds: The repeats' seeds, the same for every arm (default ``seed * 1000 + r``); when
            given, their number is the number of repeats.
        heldout_seeds: Seeds of the held-out evaluation (default: ``seeds``). More seeds here
            than repeats buy the held-out test its power without slowing every outer trial.
    """

    n_trials: int = 20
    n_repeats: int = 3
    seeds: tuple[int, ...] | None = None
    heldout_seeds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_trials", _int("InnerSettings.n_trials", self.n_trials, 1))
        object.__setattr__(
            self, "n_repeats", _int("InnerSettings.n_repeats", self.n_repeats, 1)
        )
        object.__setattr__(self, "seeds", _seeds("InnerSettings.seeds", self.seeds))
        object.__setattr__(
            self, "heldout_seeds", _seeds("InnerSettings.heldout_seeds", self.heldout_seeds)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_trials": self.n_trials,
            "n_repeats": self.n_repeats,
            "seeds": list(self.seeds) if self.seeds is not None else None,
            "heldout_seeds": list(self.heldout_seeds) if self.heldout_seeds is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InnerSettings:
        return cls(**_known(cls, data, "inner"))


@dataclasses.dataclass(frozen=True)
class OuterSettings:
    """The outer study: its budget, its space, its sampler, racing and the baselines.

    Attributes:
        n_trials: Outer trials to finish (complete or pruned), over all workers.
        space: The search space of proposer configurations (None or left out: the default
            :class:`~bilevel_optuna.studies.OuterSpace`).
        sampler: ``"tpe"`` (default), ``"random"``, ``"llm"`` (LLMSampler tunes itself) or a
            sampler object.
        aggregate: The outer value: ``"regret"`` (mean normalized regret), ``"best"`` (mean best
            value), ``"auc"`` (area under the anytime regret curve) or ``"auto"`` (regret where
            every optimum is known, else best).
        prune: Race the configurations: one stops (PRUNED) once a one-sided signed-rank test
            on its (repeat, objective) scores finds it worse than the best complete one.
        cost_objective: A second outer objective, the cost per repeat (no racing then):
            ``"tokens"`` (or True) the LLM tokens spent, ``"seconds"`` the inner trials' wall
            time, proposals and objective together. The first value alone scores regret at
            equal trials, so a configuration whose model answers are slow, or refused and
            replaced by the base sampler, costs nothing there; the Pareto front of this pair
            shows it. False (default): the one objective.
        baselines: Arms run with the same seeds: ``"random"``, ``"tpe"``, ``"llm-level0"``,
            ``"cmaes"`` and ``"gp"`` (opt-in: seconds per trial on a CPU, needs torch).
        start_from: LLMSampler presets (``"level0"``, ``"default"``) that are the outer study's
            first trials, in order, where the space can express them.
    """

    n_trials: int = 8
    space: OuterSpace | None = None
    sampler: str | BaseSampler = "tpe"
    aggregate: str = "auto"
    prune: bool = True
    cost_objective: bool | str = False
    baselines: tuple[str, ...] = BASELINES
    start_from: tuple[str, ...] = ("level0",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_trials", _int("OuterSettings.n_trials", self.n_trials, 1))
        if self.space is None:
            object.__setattr__(self, "space", OuterSpace())
        if not isinstance(self.space, OuterSpace):
            raise ConfigurationError(
                f"OuterSettings.space must be an OuterSpace or None but got {self.space!r}."
            )
        if not isinstance(self.sampler, BaseSampler) and self.sampler not in OUTER_SAMPLERS:
            raise ConfigurationError(
                f"OuterSettings.sampler must be one of {OUTER_SAMPLERS} or a sampler but got "
                f"{self.sampler!r}."
            )
        if self.aggregate not in AGGREGATES:
            raise ConfigurationError(
                f"OuterSettings.aggregate must be one of {AGGREGATES} but got {self.aggregate!r}."
            )
        _bool("OuterSettings.prune", self.prune)
        object.__setattr__(self, "cost_objective", cost_name(self.cost_objective))
        baselines = _names("OuterSettings.baselines", self.baselines)
        object.__setattr__(self, "baselines", tuple(check_baselines(baselines)))
        start_from = _names("OuterSettings.start_from", self.start_from)
        check_presets(start_from)
        object.__setattr__(self, "start_from", start_from)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form. The space is stored as a plain table; a sampler object, or a space
        with mechanisms no name finds on another server, is stored as None: only the process
        that started the run has it."""
        return {
            "n_trials": self.n_trials,
            "space": self.space.to_config(),  # type: ignore[union-attr]
            "sampler": self.sampler if isinstance(self.sampler, str) else None,
            "aggregate": self.aggregate,
            "prune": self.prune,
            "cost_objective": self.cost_objective,
            "baselines": list(self.baselines),
            "start_from": list(self.start_from),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OuterSettings:
        """The settings :meth:`to_dict` wrote; None (an object only its process had) reads as
        the default."""
        values = {k: v for k, v in _known(cls, data, "outer").items() if v is not None}
        if "space" in values:
            values["space"] = OuterSpace.from_config(values["space"])
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The chat model of the run's LLM samplers, what they do when it fails, and the spend cap.

    Attributes:
        model: Chat model or spec (``"local"`` by default, see
            :func:`~bilevel_optuna.chat.get_chat_model`).
        on_model_error: ``"raise"`` (default): an endpoint that is down, refuses the key or does
            not serve the model ends the run, with one line naming the URL, the cause and the
            fix. ``"fallback"``: the LLM studies' trials come from their base sampler (TPE),
            said once and counted.
        max_tokens_total: Cap on the tokens the whole run spends on the model; once reached,
            the LLM studies' trials come from their base sampler (recorded and shown).
        max_cost: The same cap in money, counted with ``token_prices``.
        token_prices: ``(input, output)``: the price per 1M prompt and per 1M completion tokens.
    """

    model: ChatModel | str | None = None
    on_model_error: str = "raise"
    max_tokens_total: int | None = None
    max_cost: float | None = None
    token_prices: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.model is not None and not isinstance(self.model, (str, ChatModel)):
            raise ConfigurationError(
                f"ModelSettings.model must be a chat model spec (str), a ChatModel or None but "
                f"got {self.model!r}."
            )
        # Checked (and the prices made a tuple) by the policy the run's samplers get.
        object.__setattr__(self, "token_prices", self.policy().token_prices)

    def policy(self) -> ModelPolicy:
        """The policy the run's LLM samplers get (``studies/_spend.py``).

        :meta private:
        """
        return ModelPolicy(
            on_model_error=self.on_model_error,
            max_tokens_total=self.max_tokens_total,
            max_cost=self.max_cost,
            token_prices=self.token_prices,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form: the model as its spec without credentials (None for an object)."""
        return {"model": safe_model_spec(self.model), **self.policy().to_settings()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSettings:
        return cls(**_known(cls, data, "model"))


def _inner() -> InnerSettings:
    return InnerSettings()


def _outer() -> OuterSettings:
    return OuterSettings()


def _model() -> ModelSettings:
    return ModelSettings()


@dataclasses.dataclass(frozen=True)
class BilevelSettings:
    """Everything a bilevel run is set with, but its objectives and where it is stored.

    Example:

        .. code-block:: python

            from bilevel_optuna import BilevelSettings, InnerSettings, OuterSettings
            from bilevel_optuna import ModelSettings, OuterSpace, run_bilevel_study

            settings = BilevelSettings(
                inner=InnerSettings(n_trials=30, n_repeats=5),
                outer=OuterSettings(n_trials=20, space=OuterSpace(mechanisms=["tabu"])),
                model=ModelSettings("openai:gpt-4o-mini@http://127.0.0.1:8080/v1"),
            )
            run_bilevel_study("branin", settings=settings)

    Attributes:
        inner: The inner studies (:class:`InnerSettings`).
        outer: The outer study (:class:`OuterSettings`).
        model: The chat model and its policy (:class:`ModelSettings`).
        seed: Seed of the outer sampler and of the default repeat seeds.
    """

    inner: InnerSettings = dataclasses.field(default_factory=_inner)
    outer: OuterSettings = dataclasses.field(default_factory=_outer)
    model: ModelSettings = dataclasses.field(default_factory=_model)
    seed: int = 0

    def __post_init__(self) -> None:
        for name, cls in (("inner", InnerSettings), ("outer", OuterSettings)):
            if not isinstance(getattr(self, name), cls):
                raise ConfigurationError(
                    f"BilevelSettings.{name} must be {cls.__name__} but got "
                    f"{getattr(self, name)!r}."
                )
        if not isinstance(self.model, ModelSettings):
            raise ConfigurationError(
                f"BilevelSettings.model must be ModelSettings (a chat model spec goes in "
                f"ModelSettings(model=...)) but got {self.model!r}."
            )
        object.__setattr__(self, "seed", _int("BilevelSettings.seed", self.seed, 0))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (what a run stores as ``bilevel:settings``, beside its objectives);
        :meth:`from_dict` reads it back."""
        return {
            "inner": self.inner.to_dict(),
            "outer": self.outer.to_dict(),
            "model": self.model.to_dict(),
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BilevelSettings:
        """The settings :meth:`to_dict` wrote (other keys, such as a stored run's objectives,
        are left out)."""
        return cls(
            inner=InnerSettings.from_dict(data.get("inner", {})),
            outer=OuterSettings.from_dict(data.get("outer", {})),
            model=ModelSettings.from_dict(data.get("model", {})),
            seed=data.get("seed", 0),
        )

    def resolved(self, objectives: Sequence[Objective]) -> BilevelSettings:
        """The settings as the run uses them on ``objectives``: the seeds spelled out,
        ``"auto"`` made an aggregate, random search added where it sets the regret's scale."""
        aggregate = resolve_aggregate(self.outer.aggregate, objectives)
        baselines = list(self.outer.baselines)
        if "random" not in baselines and aggregate in ("regret", "auc"):
            baselines.insert(0, "random")  # random search's regret sets the outer value's scale
        seeds = self.inner.seeds or tuple(
            self.seed * 1000 + r for r in range(self.inner.n_repeats)
        )
        inner = dataclasses.replace(
            self.inner,
            n_repeats=len(seeds),
            seeds=seeds,
            heldout_seeds=self.inner.heldout_seeds or seeds,
        )
        outer = dataclasses.replace(
            self.outer,
            aggregate=aggregate,
            baselines=tuple(baselines),
        )
        return dataclasses.replace(self, inner=inner, outer=outer)

#: run_bilevel_study's keyword names of the settings -> (section, field); "" is the top level.
KEYWORDS: dict[str, tuple[str, str]] = {
    "n_inner_trials": ("inner", "n_trials"),
    "n_repeats": ("inner", "n_repeats"),
    "seeds": ("inner", "seeds"),
    "heldout_seeds": ("inner", "heldout_seeds"),
    "n_outer_trials": ("outer", "n_trials"),
    "outer_space": ("outer", "space"),
    "outer_sampler": ("outer", "sampler"),
    "aggregate": ("outer", "aggregate"),
    "prune": ("outer", "prune"),
    "cost_objective": ("outer", "cost_objective"),
    "baselines": ("outer", "baselines"),
    "start_from": ("outer", "start_from"),
    "model": ("model", "model"),
    "on_model_error": ("model", "on_model_error"),
    "max_tokens_total": ("model", "max_tokens_total"),
    "max_cost": ("model", "max_cost"),
    "token_prices": ("model", "token_prices"),
    "seed": ("", "seed"),
}


def keyword_value(settings: BilevelSettings, keyword: str) -> Any:
    """The value of the field a keyword name (:data:`KEYWORDS`) stands for."""
    section, field = KEYWORDS[keyword]
    return getattr(getattr(settings, section) if section else settings, field)


def _replaced(settings: BilevelSettings, keywords: Mapping[str, Any]) -> BilevelSettings:
    """A copy with the fields the keyword names stand for set (each section checked again)."""
    sections: dict[str, dict[str, Any]] = {}
    for keyword, value in keywords.items():
        section, field = KEYWORDS[keyword]
        sections.setdefault(section, {})[field] = value
    top = sections.pop("", {})
    for section, values in sections.items():
        top[section] = dataclasses.replace(getattr(settings, section), **values)
    return dataclasses.replace(settings, **top)


def field_path(keyword: str) -> str:
    """Where a keyword lives in the settings, in words: ``settings.outer.space``."""
    section, field = KEYWORDS[keyword]
    return f"settings.{section + '.' if section else ''}{field}"


def with_keywords(
    settings: BilevelSettings | None, keywords: Mapping[str, Any]
) -> BilevelSettings:
    """``settings`` (the defaults when None) with the keywords given (not None) applied.

    A keyword and a ``settings`` object that sets the same field to something else are an
    error: a field left at its default takes the keyword.
    """
    given = {k: v for k, v in keywords.items() if v is not None}
    base = settings if settings is not None else BilevelSettings()
    if not given:
        return base
    default = BilevelSettings()
    out = base
    sections: dict[str, dict[str, Any]] = {}
    for keyword, value in given.items():
        sections.setdefault(KEYWORDS[keyword][0], {})[keyword] = value
    for values in sections.values():  # a section at a time: an error names its keywords
        try:
            out = _replaced(out, values)
        except ConfigurationError as err:
            named = ", ".join(f"{k}={v!r}" for k, v in values.items())
            raise ConfigurationError(f"{named}: {err}") from None
    for keyword in given:
        ours, theirs = keyword_value(out, keyword), keyword_value(base, keyword)
        if settings is not None and theirs != keyword_value(default, keyword) and ours != theirs:
            raise ConfigurationError(
                f"{keyword}={given[keyword]!r} and {field_path(keyword)}={theirs!r} disagree: "
                f"give {keyword} once, as the keyword or in the settings object."
            )
    return out


def _known(cls: type, data: Mapping[str, Any], table: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"The {table} settings must be a table but got {data!r}.")
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigurationError(
            f"Unknown {table} settings {unknown}; {cls.__name__} has {fields}."
        )
    return dict(data)
