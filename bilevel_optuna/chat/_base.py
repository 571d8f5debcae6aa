"""The chat-model protocol: one request in, one reply out, whatever the backend."""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
from typing import Any

from bilevel_optuna.chat._validation import Validate
from bilevel_optuna.chat._validation import check_reply


@dataclasses.dataclass(frozen=True)
class ChatRequest:
    """What the sampler asks a chat model.

    Args:
        messages: OpenAI-style messages, each a mapping with ``role`` and ``content``.
        json_schema: A JSON schema the answer must follow, or ``None`` for free text.
        temperature: Sampling temperature.
        max_tokens: Cap on completion tokens.
        seed: Sampling seed; backends that honour it give the same answer for the same request.
        n: Independent answers to sample from the same prompt (OpenAI's ``n``). The embedded
            model reads the prompt once and writes the answers side by side, in one batch per
            token; an endpoint that ignores ``n`` returns one answer.
    """

    messages: tuple[dict[str, str], ...]
    json_schema: dict[str, Any] | None = None
    temperature: float = 0.7
    max_tokens: int = 256
    seed: int | None = None
    n: int = 1

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError("messages must hold at least one message but got none.")
        for message in self.messages:
            if set(message) != {"role", "content"}:
                raise ValueError(
                    f"Each message must have exactly the keys 'role' and 'content' but got {message}."
                )
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 but got {self.temperature}.")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1 but got {self.max_tokens}.")
        if self.n < 1:
            raise ValueError(f"n must be >= 1 but got {self.n}.")
        # A tuple of dicts keeps the dataclass hashable in spirit and cheap to pass around.
        object.__setattr__(self, "messages", tuple(dict(m) for m in self.messages))

    def to_json(self) -> str:
        """Canonical JSON of the request (sorted keys), the input of :meth:`hash`."""
        data: dict[str, Any] = {
            "messages": list(self.messages),
            "json_schema": self.json_schema,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }
        if self.n != 1:  # absent for one answer, so hashes stored before ``n`` still match
            data["n"] = self.n
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        """A stable SHA-256 of the request; replay looks answers up by it."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class ChatReply:
    """What a chat model answered.

    Args:
        text: The answer, as the model wrote it.
        prompt_tokens: Tokens in the prompt, as the backend counted them.
        completion_tokens: Tokens in the answer.
        latency_s: Wall-clock seconds the call took, retries included.
        model: The model's name.
        finish_reason: ``"stop"``, or ``"length"`` when the answer hit ``max_tokens`` (a JSON
            answer is then usually cut off); ``None`` where the backend did not say.
        choices: Every answer of a request with ``n > 1``, ``text`` first; empty for one
            answer (see :attr:`texts`). ``completion_tokens`` counts them all.
        schema_errors: Set by the answer check (:meth:`ChatModel.complete`), never stored:
            what breaks the request's schema in answers that are still JSON of its shape (a
            bound, an ``enum``, a scalar of another type), and, for ``n > 1``, why the
            answers in ``rejected`` are unusable. Each starts with ``"answer i: "`` when
            there are several answers. Empty: every answer follows the schema.
        rejected: Set by the answer check, never stored: indices into :attr:`texts` of the
            answers that are not JSON of the schema's shape (only when others are; where
            none is, :meth:`ChatModel.complete` raises instead). See :attr:`usable_texts`.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    model: str
    finish_reason: str | None = None
    choices: tuple[str, ...] = ()
    schema_errors: tuple[str, ...] = ()
    rejected: tuple[int, ...] = ()

    @property
    def texts(self) -> tuple[str, ...]:
        """All answers, ``choices`` where there are several, else ``(text,)``."""
        return self.choices or (self.text,)

    @property
    def usable_texts(self) -> tuple[str, ...]:
        """The answers that are JSON of the schema's shape, :attr:`texts` less ``rejected``."""
        return tuple(t for i, t in enumerate(self.texts) if i not in self.rejected)

    def to_dict(self) -> dict[str, Any]:
        """What is stored: the answer as the backend gave it, without the check's marks
        (a replay checks the answer again)."""
        data = dataclasses.asdict(self)
        del data["schema_errors"], data["rejected"]
        if not self.choices:
            del data["choices"]  # one answer: stored as before
        else:
            data["choices"] = list(self.choices)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChatReply":
        return cls(
            text=str(data["text"]),
            prompt_tokens=int(data["prompt_tokens"]),
            completion_tokens=int(data["completion_tokens"]),
            latency_s=float(data["latency_s"]),
            model=str(data["model"]),
            finish_reason=data.get("finish_reason"),
            choices=tuple(str(c) for c in data.get("choices", ())),
        )


class ChatModel(abc.ABC):
    """A chat model backend: one method to write, ``_complete``.

    :meth:`complete` is a template method: it asks the backend's ``_complete`` for the
    raw answer and checks it once against the request's schema (``check_reply``), so
    every backend checks the same way and a caller gets a reply, marked where values break
    the schema, or a :class:`~bilevel_optuna.exceptions.ChatAnswerError` where no answer is
    usable. Implementations must be safe to call from several threads at once and must raise
    :class:`~bilevel_optuna.exceptions.ChatModelError` subclasses, never a backend's own errors.

    A subclass written before the template method that overrides :meth:`complete` itself
    still works; its answers are then not checked.
    """

    #: Model name recorded on each trial.
    name: str = "unknown"
    #: How :meth:`complete` checks answers to JSON requests: ``"schema"``, ``"json"`` or
    #: ``"none"`` (backends take it as their ``validate`` argument).
    _validate: Validate = "schema"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.complete is ChatModel.complete and cls._complete is ChatModel._complete:
            raise TypeError(
                f"{cls.__name__} must define _complete(self, request) -> ChatReply, the raw "
                "answer; ChatModel.complete checks it against the request's schema."
            )

    def complete(self, request: ChatRequest) -> ChatReply:
        """Answer ``request``, the answer checked once against ``request.json_schema``.

        Returns:
            The reply; see :func:`~bilevel_optuna.chat.validate_answer` for the
            ``schema_errors`` and ``rejected`` marks.

        Raises:
            ChatAnswerError: No answer is JSON (of the schema's shape, when checking it);
                ``raw`` holds the first answer's text.
            ChatModelError: The backend failed (a subclass says how).
        """
        return check_reply(self._complete(request), request, self._validate)

    def _complete(self, request: ChatRequest) -> ChatReply:
        """The backend's answer to ``request``, unchecked."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise where the model cannot answer at all, before any trial asks it.

        :class:`~bilevel_optuna.samplers.LLMSampler` calls it before its first trial, so an
        endpoint that is down, refuses the key or does not serve the model ends the study with
        one message instead of a study of fallbacks. Backends that cannot fail this way (the
        embedded model, replay, uniform) keep this default, which checks nothing.

        Raises:
            ChatModelError: A subclass that says what is wrong and how to fix it.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
