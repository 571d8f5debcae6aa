"""LLMSampler's options: the preset's values filled in where none is given, each checked once.

The constructor takes many keywords (the Optuna way: one sampler, its knobs as arguments); this
module is where they are read, so :class:`~bilevel_optuna.samplers.LLMSampler` only stores them
and an error names the option, the value and what is allowed, before any trial runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence

from optuna.distributions import BaseDistribution

from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.samplers import _spend
from bilevel_optuna.samplers._answer import check_search_space
from bilevel_optuna.samplers._presets import preset as get_preset
from bilevel_optuna.samplers._prompt import HISTORY_ORDERS
from bilevel_optuna.samplers._prompt import TEMPLATES
from bilevel_optuna.samplers._prompt import PromptTemplate
from bilevel_optuna.samplers.mechanisms._loading import MechanismSpec

#: What a sampler does when the endpoint fails (``on_model_error``).
ON_MODEL_ERROR = ("raise", "fallback")


@dataclasses.dataclass(frozen=True)
class PromptOptions:
    """The settings a preset supplies, after the user's overrides, checked."""

    temperature: float
    history_size: int
    history_order: str
    template: PromptTemplate
    n_candidates: int
    mechanisms: Iterable[MechanismSpec]
    optimizer_state: str | None
    state_mode: str


def prompt_options(
    preset: str,
    *,
    temperature: float | None,
    history_size: int | None,
    history_order: str | None,
    template: str | PromptTemplate | None,
    n_candidates: int | None,
    mechanisms: Iterable[MechanismSpec] | None,
    optimizer_state: str | None,
    state_mode: str | None,
) -> PromptOptions:
    """Fill each ``None`` from the named preset, then check the values."""
    settings = get_preset(preset)
    temperature = settings["temperature"] if temperature is None else temperature
    history_size = settings["history_size"] if history_size is None else history_size
    history_order = settings["history_order"] if history_order is None else history_order
    template = settings["template"] if template is None else template
    n_candidates = settings["n_candidates"] if n_candidates is None else n_candidates
    mechanisms = settings["mechanisms"] if mechanisms is None else mechanisms
    if optimizer_state is None:
        optimizer_state = settings.get("optimizer_state")
    state_mode = settings.get("state_mode", "beside") if state_mode is None else state_mode
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 but got {temperature}.")
    if history_size < 0:
        raise ValueError(f"history_size must be >= 0 but got {history_size}.")
    if history_order not in HISTORY_ORDERS:
        raise ValueError(
            f"history_order must be one of {HISTORY_ORDERS} but got {history_order!r}."
        )
    if isinstance(template, str):
        if template not in TEMPLATES:
            raise ValueError(
                f"template must be one of {sorted(TEMPLATES)} or a PromptTemplate "
                f"but got {template!r}."
            )
        template = TEMPLATES[template]
    if n_candidates < 1:
        raise ValueError(f"n_candidates must be >= 1 but got {n_candidates}.")
    return PromptOptions(
        temperature=temperature,
        history_size=history_size,
        history_order=history_order,
        template=template,
        n_candidates=n_candidates,
        mechanisms=mechanisms,
        optimizer_state=optimizer_state,
        state_mode=state_mode,
    )


def check_limits(
    *,
    max_attempts: int,
    max_tokens: int | None,
    hook_timeout: float | None,
    search_space: Mapping[str, BaseDistribution] | None,
) -> None:
    """Check the options no preset sets: the attempts, the token cap per call, the hooks'
    time limit and a search space declared up front."""
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1 but got {max_attempts}.")
    if max_tokens is not None and max_tokens < 16:
        raise ValueError(f"max_tokens must be >= 16 but got {max_tokens}.")
    if hook_timeout is not None and hook_timeout <= 0:
        raise ValueError(f"hook_timeout must be > 0 or None but got {hook_timeout}.")
    if search_space is not None:
        check_search_space(search_space)


def check_spending(
    *,
    on_model_error: str,
    token_prices: Sequence[float] | None,
    max_tokens_total: int | None,
    max_cost: float | None,
) -> tuple[float, float] | None:
    """Check what happens when the endpoint fails and the spend cap; return the prices."""
    if on_model_error not in ON_MODEL_ERROR:
        raise ConfigurationError(
            f"on_model_error must be one of {ON_MODEL_ERROR} but got {on_model_error!r}."
        )
    prices = _spend.check_prices(token_prices)
    _spend.check_cap(max_tokens_total, max_cost, prices)
    return prices
