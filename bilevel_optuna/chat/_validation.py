"""Checking a chat model's answer against the request's JSON schema.

Every backend runs the same check, so an answer that one backend rejects is rejected by all of
them, and a replayed study fails where the recorded one failed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from typing import TYPE_CHECKING
from typing import Any
from typing import Literal

import jsonschema.exceptions
import jsonschema.validators
import referencing.exceptions

from bilevel_optuna.exceptions import ChatAnswerError
from bilevel_optuna.exceptions import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

    import jsonschema.protocols

    from bilevel_optuna.chat._base import ChatReply
    from bilevel_optuna.chat._base import ChatRequest

Validate = Literal["schema", "json", "none"]
VALIDATE_MODES: tuple[str, ...] = ("schema", "json", "none")

# How many schema violations an error message lists; the rest are counted.
_MAX_LISTED_VIOLATIONS = 3
# How much of a bad answer an error message quotes; the whole text is on ChatAnswerError.raw.
_MAX_QUOTED_CHARS = 200
# A JSON answer wrapped in a Markdown code fence, as models write it when nothing constrains them.
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```$", re.DOTALL)


def _check_validate_mode(validate: str) -> Validate:
    if validate not in VALIDATE_MODES:
        raise ValueError(f"validate must be one of {VALIDATE_MODES} but got {validate!r}.")
    return validate  # type: ignore[return-value]


@functools.lru_cache(maxsize=64)
def _validator(schema_json: str) -> jsonschema.protocols.Validator:
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as err:
        raise ConfigurationError(
            f"json_schema is not a valid JSON schema: {err.message}. Fix the schema passed in "
            "ChatRequest(json_schema=...)."
        ) from err
    return cls(schema)


def _strip_fence(text: str) -> str:
    stripped = text.strip()
    match = _FENCE.match(stripped)
    return match.group(1).strip() if match else stripped


def _quote(text: str) -> str:
    if len(text) <= _MAX_QUOTED_CHARS:
        return repr(text)
    return repr(text[:_MAX_QUOTED_CHARS]) + f"... ({len(text)} characters)"


def _path(error: jsonschema.exceptions.ValidationError) -> str:
    return "$" + "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path
    )


def validate_answer(
    text: str,
    json_schema: Mapping[str, Any] | None = None,
    *,
    finish_reason: str | None = None,
    max_tokens: int | None = None,
) -> Any:
    """Parse a JSON answer and check it against a JSON schema.

    Surrounding whitespace and a Markdown code fence (```` ```json ... ``` ````) are ignored.
    Numeric bounds (``minimum``, ``maximum``) are checked here even though llama.cpp's grammar
    does not enforce them.

    Args:
        text: The model's answer.
        json_schema: The schema the answer must follow; ``None`` checks only that it is JSON.
        finish_reason: The backend's finish reason; ``"length"`` makes the message say the
            answer was cut off.
        max_tokens: The request's token cap, quoted in that message.

    Returns:
        The parsed answer.

    Raises:
        ChatAnswerError: The answer is not JSON or breaks the schema; ``raw`` holds the text.

    Example:

        .. code-block:: python

            schema = {"type": "object", "properties": {"x": {"type": "number", "maximum": 1}}}
            validate_answer('{"x": 0.5}', schema)  # -> {"x": 0.5}
    """
    return _validate(
        text, json_schema, finish_reason=finish_reason, max_tokens=max_tokens, reply=None
    )


def _validate(
    text: str,
    json_schema: Mapping[str, Any] | None,
    *,
    finish_reason: str | None,
    max_tokens: int | None,
    reply: ChatReply | None,
) -> Any:
    model = f" from {reply.model}" if reply is not None else ""
    try:
        value = json.loads(_strip_fence(text))
    except json.JSONDecodeError as err:
        if finish_reason == "length":
            cap = f"max_tokens={max_tokens}" if max_tokens is not None else "max_tokens"
            fix = (
                f"It was cut off at {cap}: raise max_tokens, or cap free-text fields with "
                "maxLength in the schema."
            )
        else:
            fix = (
                "Use an endpoint with structured output (response_format='json_schema'), or "
                "a lower temperature."
            )
        raise ChatAnswerError(
            f"The model's answer{model} is not valid JSON ({err.msg} at position {err.pos}): "
            f"{_quote(text)}. {fix}",
            raw=text,
            reply=reply,
        ) from err
    if json_schema is None:
        return value
    validator = _validator(json.dumps(json_schema, sort_keys=True))
    try:
        errors = sorted(
            validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path]
        )
    except referencing.exceptions.Unresolvable as err:  # never fetched from the network
        raise ConfigurationError(
            f"json_schema refers to {err.ref!r}, which cannot be resolved: keep every $ref "
            "inside the schema (#/$defs/...)."
        ) from err
    if errors:
        listed = "; ".join(f"at {_path(e)}: {e.message}" for e in errors[:_MAX_LISTED_VIOLATIONS])
        more = len(errors) - _MAX_LISTED_VIOLATIONS
        if more > 0:
            listed += f"; and {more} more"
        raise ChatAnswerError(
            f"The model's answer{model} is JSON but does not match the schema ({listed}). "
            "Retry with another seed, or repair the value: ChatAnswerError.raw holds the answer.",
            raw=text,
            reply=reply,
        )
    return value


def check_reply(reply: ChatReply, request: ChatRequest, validate: Validate) -> ChatReply:
    """Run a backend's answer check; return the reply with its JSON text unwrapped from fences.

    Free-text requests (no ``json_schema``) pass unchecked. ``validate="json"`` checks only that
    the answer parses, ``"schema"`` also checks the schema, ``"none"`` nothing.
    """
    if request.json_schema is None or validate == "none":
        return reply
    if reply.choices:
        choices = tuple(_strip_fence(c) for c in reply.choices)
        reply = dataclasses.replace(reply, text=choices[0], choices=choices)
    else:
        unwrapped = _strip_fence(reply.text)
        if unwrapped != reply.text:
            reply = dataclasses.replace(reply, text=unwrapped)
    for text in reply.texts:
        _validate(
            text,
            request.json_schema if validate == "schema" else None,
            finish_reason=reply.finish_reason,
            max_tokens=request.max_tokens,
            reply=reply,
        )
    return reply
