"""The chat steps of one research round: each request seeded from the run, the round and the
step, and an unusable answer recorded as a failure instead of raised.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.chat._base import ChatRequest
from bilevel_optuna.exceptions import ChatAnswerError
from bilevel_optuna.exceptions import ChatModelError

_SYSTEM = (
    "You improve an optimizer in which a language model proposes hyperparameter configurations. "
    "A mechanism is a small Python class with hooks that change how proposals are made."
)

def _seed(seed: int, *parts: int) -> int:
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0] >> 1)


class Asker:
    """Chat steps of one round with recorded defaults when an answer is unusable."""

    def __init__(self, model: ChatModel, seed: int, round_number: int) -> None:
        self.model = model
        self.seed = seed
        self.round = round_number
        self.calls = 0
        self.prompts: list[str] = []
        self.failures: list[str] = []

    def ask(
        self,
        messages: list[dict[str, str]],
        *,
        schema: dict[str, Any] | None,
        max_tokens: int,
        step: int,
        temperature: float = 0.7,
    ) -> str | None:
        request = ChatRequest(
            messages=tuple(messages),
            json_schema=schema,
            temperature=temperature,
            max_tokens=max_tokens,
            seed=_seed(self.seed, self.round, step),
        )
        self.calls += 1
        self.prompts.append(request.hash())
        try:
            return self.model.complete(request).text
        except ChatAnswerError as err:
            self.failures.append(f"step {step}: {err}"[:300])
            return err.raw or (err.reply.text if err.reply else None)
        except ChatModelError as err:
            self.failures.append(f"step {step}: {type(err).__name__}: {err}"[:300])
            return None

    def ask_json(self, messages: list[dict[str, str]], schema: dict[str, Any], **kw: Any) -> Any:
        text = self.ask(messages, schema=schema, **kw)
        if text is None:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            match = re.search(r"\{.*\}", text, re.S)
            if match:
                try:
                    return json.loads(match.group(0))
                except json.JSONDecodeError:
                    pass
        self.failures.append(f"step {kw.get('step')}: the answer is not JSON")
        return None


def user_messages(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": text}]
