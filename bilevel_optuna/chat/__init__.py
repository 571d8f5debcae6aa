"""Chat-model backends: one small protocol, so the sampler never knows which model answers.

- :class:`LocalChatModel`: SmolLM2-135M-Instruct (or any GGUF file) in process, the default.
- :class:`OpenAIChatModel`: any OpenAI-compatible endpoint (OpenAI, DeepSeek, vLLM, llama.cpp,
  Ollama, ``bilevel-optuna serve``).
- :class:`ReplayChatModel`: answers recorded in a study, served back by request hash.

:func:`get_chat_model` turns a spec such as ``"openai:MODEL@BASE_URL"`` into one of these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.chat._base import ChatReply
from bilevel_optuna.chat._base import ChatRequest
from bilevel_optuna.chat._local import LocalChatModel
from bilevel_optuna.chat._replay import ReplayChatModel
from bilevel_optuna.chat._server import serve_in_background
from bilevel_optuna.chat._spec import get_chat_model
from bilevel_optuna.chat._spec import openai_chat_model_class
from bilevel_optuna.chat._validation import validate_answer

if TYPE_CHECKING:
    from bilevel_optuna.chat._openai import OpenAIChatModel


def __getattr__(name: str) -> Any:
    # The openai client takes a second or two to import; only the OpenAI backend needs it.
    if name == "OpenAIChatModel":
        return openai_chat_model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ChatModel",
    "ChatReply",
    "ChatRequest",
    "LocalChatModel",
    "OpenAIChatModel",
    "ReplayChatModel",
    "get_chat_model",
    "serve_in_background",
    "validate_answer",
]
