"""A test double for the chat-model protocol: answers from a script, records requests.

Used only where a test is about the protocol or about faults; behaviour tests use the embedded
model.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.chat._base import ChatReply
from bilevel_optuna.chat._base import ChatRequest


class ScriptedChatModel(ChatModel):
    """Answers each request with ``answer(request, call_index)``; thread-safe."""

    name = "scripted"

    def __init__(
        self, answer: Callable[[ChatRequest, int], str | list[str] | Exception]
    ) -> None:
        self._answer = answer
        self.requests: list[ChatRequest] = []
        self._lock = threading.Lock()

    def complete(self, request: ChatRequest) -> ChatReply:
        with self._lock:
            index = len(self.requests)
            self.requests.append(request)
        result = self._answer(request, index)
        if isinstance(result, Exception):
            raise result
        texts = [result] if isinstance(result, str) else list(result)  # a list: n answers
        return ChatReply(
            text=texts[0],
            prompt_tokens=100,
            completion_tokens=20 * len(texts),
            latency_s=0.01,
            model=self.name,
            choices=tuple(texts) if len(texts) > 1 else (),
        )


def answer_json(*candidates: dict[str, Any], rationale: str = "because") -> str:
    return json.dumps({"rationale": rationale, "candidates": list(candidates)})
