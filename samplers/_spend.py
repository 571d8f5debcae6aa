"""What the model cost a study: tokens, money at the user's prices, the cap, and the fallbacks.

Every proposal stores its tokens on its trial (``llm:prompt_tokens``, ``llm:completion_tokens``)
and every trial the base sampler proposed instead is marked ``llm:source = "fallback"`` with
why in ``llm:error``; the sums here are read from those attributes, so they hold for any
number of threads, processes and servers. :class:`LLMSampler` writes a summary of its
fallbacks on the study (``llm:fallback``) and where it reached its cap (``llm:spend_cap``).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any

from optuna.trial import FrozenTrial

from bilevel_optuna import _attrs
from bilevel_optuna.exceptions import ConfigurationError

#: Why a trial fell back, as ``llm:fallback`` counts it (the start of its ``llm:error``).
CAP_REASON = "spend cap reached"
ENDPOINT_REASON = "endpoint error"
ANSWER_REASON = "no usable answer"
REFUSED_REASON = "request refused"
#: Study user attribute: ``{"trials": n, "why": {reason: n}, "last_error": "..."}``.
FALLBACK_ATTR = _attrs.FALLBACK
#: Study user attribute written once, where the sampler's cap was reached.
CAP_ATTR = _attrs.SPEND_CAP


def check_prices(token_prices: Sequence[float] | None) -> tuple[float, float] | None:
    """``(input, output)`` prices per 1M tokens, checked; ``None`` where none are given."""
    if token_prices is None:
        return None
    prices = tuple(token_prices)
    if len(prices) != 2 or not all(
        isinstance(p, (int, float)) and not isinstance(p, bool) and p >= 0 and math.isfinite(p)
        for p in prices
    ):
        raise ConfigurationError(
            "token_prices must be two numbers >= 0, the prices per 1M input (prompt) and "
            f"output (completion) tokens, e.g. (0.15, 0.60), but got {token_prices!r}."
        )
    return float(prices[0]), float(prices[1])


def check_cap(
    max_tokens_total: int | None, max_cost: float | None, prices: tuple[float, float] | None
) -> None:
    """Raise where a cap is invalid, or a money cap has no prices to count money with."""
    if max_tokens_total is not None and (
        isinstance(max_tokens_total, bool) or not isinstance(max_tokens_total, int)
        or max_tokens_total < 0
    ):
        raise ConfigurationError(
            f"max_tokens_total must be an int >= 0 or None but got {max_tokens_total!r}."
        )
    if max_cost is not None:
        if isinstance(max_cost, bool) or not isinstance(max_cost, (int, float)) or max_cost < 0:
            raise ConfigurationError(
                f"max_cost must be a number >= 0 or None but got {max_cost!r}."
            )
        if prices is None:
            raise ConfigurationError(
                f"max_cost={max_cost} needs the model's prices to count money: give "
                "token_prices=(INPUT, OUTPUT) per 1M tokens (TOML: token_prices = [0.15, 0.6]), "
                "or cap tokens with max_tokens_total."
            )


@dataclasses.dataclass(frozen=True)
class Spend:
    """Tokens a set of trials spent on the model, and the trials proposed by the fallback.

    Attributes:
        prompt_tokens: Input tokens, over every model call (repairs included).
        completion_tokens: Output tokens.
        n_trials: Trials counted.
        n_fallback: Trials whose parameters came from the base sampler instead of the model.
        why: Reason -> fallback trials (:data:`CAP_REASON`, :data:`ENDPOINT_REASON`,
            :data:`REFUSED_REASON`, :data:`ANSWER_REASON`).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    n_trials: int = 0
    n_fallback: int = 0
    why: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def cost(self, prices: tuple[float, float] | None) -> float | None:
        """Money at ``prices`` (per 1M input, output tokens), or ``None`` without prices."""
        if prices is None:
            return None
        return (self.prompt_tokens * prices[0] + self.completion_tokens * prices[1]) / 1e6

    def __add__(self, other: Spend) -> Spend:
        why = Counter(self.why)
        why.update(other.why)
        return Spend(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.n_trials + other.n_trials,
            self.n_fallback + other.n_fallback,
            dict(why),
        )

    def describe(self, prices: tuple[float, float] | None) -> str:
        """``"1,234 tokens (1,000 in, 234 out), $0.0012; 2 of 20 trials fell back (...)"``."""
        text = (
            f"{self.tokens:,} tokens ({self.prompt_tokens:,} in, {self.completion_tokens:,} out)"
        )
        cost = self.cost(prices)
        if cost is not None:
            text += f", ${cost:.4f}"
        if self.n_fallback:
            why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.why.items()))
            text += (
                f"; {self.n_fallback} of the {self.n_trials} trials from the fallback sampler "
                f"({why})"
            )
        return text


def reason_of(error: str) -> str:
    """The fallback reason an ``llm:error`` text stands for."""
    if error.startswith(CAP_REASON):
        return CAP_REASON
    if error.startswith(ENDPOINT_REASON):
        return ENDPOINT_REASON
    if error.startswith(REFUSED_REASON):
        return REFUSED_REASON
    return ANSWER_REASON


def spend_of(trials: Iterable[FrozenTrial]) -> Spend:
    """The spend and fallbacks recorded on ``trials``."""
    prompt = completion = n = n_fallback = 0
    why: Counter[str] = Counter()
    for t in trials:
        attrs = t.user_attrs
        n += 1
        prompt += int(attrs.get(_attrs.PROMPT_TOKENS, 0) or 0)
        completion += int(attrs.get(_attrs.COMPLETION_TOKENS, 0) or 0)
        if attrs.get(_attrs.SOURCE) == "fallback":
            n_fallback += 1
            why[reason_of(str(attrs.get(_attrs.ERROR, "")))] += 1
    return Spend(prompt, completion, n, n_fallback, dict(why))


def cap_reached(
    spend: Spend,
    *,
    max_tokens_total: int | None,
    max_cost: float | None,
    prices: tuple[float, float] | None,
) -> str | None:
    """Which cap ``spend`` has reached, in words, or ``None``."""
    if max_tokens_total is not None and spend.tokens >= max_tokens_total:
        return f"max_tokens_total={max_tokens_total:,}: {spend.tokens:,} tokens spent"
    cost = spend.cost(prices)
    if max_cost is not None and cost is not None and cost >= max_cost:
        return f"max_cost={max_cost:g}: {cost:.4f} spent"
    return None


def count_fallback(attrs: dict[str, Any], reason: str, error: str) -> dict[str, Any]:
    """The study's ``llm:fallback`` summary with one more trial that fell back for ``reason``."""
    why = dict(attrs.get("why", {}))
    why[reason] = int(why.get(reason, 0)) + 1
    return {"trials": int(attrs.get("trials", 0)) + 1, "why": why, "last_error": error[:300]}
