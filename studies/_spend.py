"""A run's model policy and spend: what happens when the endpoint fails, the cap, the sums.

The policy (:class:`ModelPolicy`) is a run setting (``ModelSettings`` of
``studies/specs/_settings.py``, the ``[model]`` table of a spec) stored with the run, so every
worker applies it. The cap is the run's: each LLM inner study gets what the rest of the run has left as its
own cap when it starts (with several workers at once, the run may pass its cap by what the
others spend on the studies they run meanwhile). The sums are read from the trials
(``samplers/_spend.py``), for ``bilevel-optuna status`` and the report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.storages import BaseStorage

from bilevel_optuna import _attrs
from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.chat._spec import get_chat_model
from bilevel_optuna.exceptions import ChatModelError
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.samplers._llm_sampler import ON_MODEL_ERROR
from bilevel_optuna.samplers._spend import Spend
from bilevel_optuna.samplers._spend import check_cap
from bilevel_optuna.samplers._spend import check_prices
from bilevel_optuna.samplers._spend import spend_of

#: Study kinds whose trials a run's spend counts.
_KINDS = ("outer", "inner", "baseline", "heldout", "single")
#: At most this many studies are listed one by one in ``status``.
_MAX_LISTED = 12


@dataclasses.dataclass(frozen=True)
class ModelPolicy:
    """What the run's LLM samplers do when the endpoint fails, and the run's spend cap.

    Attributes:
        on_model_error: ``"raise"`` (the run stops with the error) or ``"fallback"`` (the LLM
            studies' trials come from their base sampler, counted).
        max_tokens_total: Tokens the whole run may spend on the model, or ``None``.
        max_cost: Money the whole run may spend, counted with ``token_prices``, or ``None``.
        token_prices: ``(input, output)`` price per 1M tokens, or ``None``.
    """

    on_model_error: str = "raise"
    max_tokens_total: int | None = None
    max_cost: float | None = None
    token_prices: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.on_model_error not in ON_MODEL_ERROR:
            raise ConfigurationError(
                f"on_model_error must be one of {list(ON_MODEL_ERROR)} but got "
                f"{self.on_model_error!r}."
            )
        object.__setattr__(self, "token_prices", check_prices(self.token_prices))
        check_cap(self.max_tokens_total, self.max_cost, self.token_prices)

    @property
    def capped(self) -> bool:
        return self.max_tokens_total is not None or self.max_cost is not None

    def sampler_kwargs(self, spent_elsewhere: Spend | None = None) -> dict[str, Any]:
        """LLMSampler's keywords for one study of the run: the run's cap less what the rest
        of the run has spent (``spent_elsewhere``) is the study's own cap."""
        kwargs: dict[str, Any] = {"on_model_error": self.on_model_error}
        if self.token_prices is not None:
            kwargs["token_prices"] = self.token_prices
        spent = spent_elsewhere or Spend()
        if self.max_tokens_total is not None:
            kwargs["max_tokens_total"] = max(self.max_tokens_total - spent.tokens, 0)
        if self.max_cost is not None:
            kwargs["max_cost"] = max(self.max_cost - (spent.cost(self.token_prices) or 0.0), 0.0)
        return kwargs

    def to_settings(self) -> dict[str, Any]:
        """The policy's fields as stored (``ModelSettings.to_dict()`` without the model)."""
        return {
            "on_model_error": self.on_model_error,
            "max_tokens_total": self.max_tokens_total,
            "max_cost": self.max_cost,
            "token_prices": list(self.token_prices) if self.token_prices else None,
        }


def check_model(model: ChatModel | str | None, policy: ModelPolicy) -> None:
    """Check the run's endpoint before any work (once per process per endpoint and model).

    Under ``"raise"`` its error ends the run before anything is stored; under ``"fallback"``
    the run goes on and each LLM sampler says once that it falls back.
    """
    try:
        get_chat_model(model).check()
    except ChatModelError:
        if policy.on_model_error == "raise":
            raise


def run_spend(storage: BaseStorage, run: str) -> dict[str, Spend]:
    """Study name -> spend, for every study of ``run`` (its outer study included)."""
    spends: dict[str, Spend] = {}
    for summary in optuna.get_all_study_summaries(storage=storage, include_best_trial=False):
        attrs = summary.user_attrs
        if summary.study_name != run and attrs.get(_attrs.RUN) != run:
            continue
        if attrs.get(_attrs.KIND) not in _KINDS:
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        spends[summary.study_name] = spend_of(study.get_trials(deepcopy=False))
    return spends


def total(spends: dict[str, Spend], *, excluding: str | None = None) -> Spend:
    out = Spend()
    for name, spend in spends.items():
        if name != excluding:
            out = out + spend
    return out


def stored_policy(settings: Mapping[str, Any]) -> Mapping[str, Any]:
    """The policy's keys of a run's stored settings (``bilevel:settings``): under ``model``
    (version 2), or at the top (version 1, where ``model`` was the spec)."""
    model = settings.get("model")
    return model if isinstance(model, Mapping) else settings


def prices_of(settings: Mapping[str, Any]) -> tuple[float, float] | None:
    """The prices stored with a run's settings, or ``None``."""
    prices = stored_policy(settings).get("token_prices")
    return (float(prices[0]), float(prices[1])) if prices else None


def spend_lines(storage: BaseStorage, run: str, settings: Mapping[str, Any]) -> list[str]:
    """``status``'s lines: the run's spend, its cap, and the studies that spent (largest
    first) or fell back."""
    spends = run_spend(storage, run)
    prices = prices_of(settings)
    whole = total(spends)
    if not whole.tokens and not whole.n_fallback:
        return []
    caps = []
    policy = stored_policy(settings)
    if policy.get("max_tokens_total") is not None:
        n = policy["max_tokens_total"]
        caps.append(f"{n:,} token{'' if n == 1 else 's'}")
    if policy.get("max_cost") is not None:
        caps.append(f"${policy['max_cost']:g}")
    cap = f" (cap: {' or '.join(caps)})" if caps else ""
    lines = [f"model spend{cap}: {whole.describe(prices)}"]
    listed = sorted(
        ((n, s) for n, s in spends.items() if s.tokens or s.n_fallback),
        key=lambda item: -item[1].tokens,
    )
    for name, spend in listed[:_MAX_LISTED]:
        lines.append(f"  {name}: {spend.describe(prices)}")
    if len(listed) > _MAX_LISTED:
        rest = total(dict(listed[_MAX_LISTED:]))
        lines.append(
            f"  ... {len(listed) - _MAX_LISTED} more studies: {rest.describe(prices)}"
        )
    return lines


def spend_markdown(storage: BaseStorage, run: str, settings: Mapping[str, Any]) -> str:
    """The report's section on the model's spend and the fallbacks, per study and in all."""
    spends = run_spend(storage, run)
    prices = prices_of(settings)
    whole = total(spends)
    money = prices is not None
    rows = [
        "## Model spend and fallbacks",
        "",
        f"In all: {whole.describe(prices)}."
        + ("" if money else " Give token_prices to see it in money."),
        "",
        "| study | prompt tokens | completion tokens |"
        + (" cost |" if money else "")
        + " fallback trials |",
        "|---|---:|---:|" + ("---:|" if money else "") + "---:|",
    ]
    for name, spend in sorted(spends.items()):
        if not spend.tokens and not spend.n_fallback:
            continue
        why = ", ".join(f"{n} {r}" for r, n in sorted(spend.why.items()))
        cost = spend.cost(prices)
        rows.append(
            f"| {name} | {spend.prompt_tokens:,} | {spend.completion_tokens:,} |"
            + (f" {cost:.4f} |" if cost is not None else "")
            + f" {spend.n_fallback}{f' ({why})' if why else ''} |"
        )
    return "\n".join(rows) + "\n"

