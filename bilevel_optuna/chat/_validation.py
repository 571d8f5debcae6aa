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


def _unwrap(text: str) -> str:
    """The JSON inside an answer: without a Markdown fence, and without prose around one
    object (``Here you go: {...} Good luck!``), as endpoints without structured output write it.
    Text that holds no parseable object comes back fence-stripped, to fail as it is."""
    stripped = _strip_fence(text)
    try:
        json.loads(stripped)
        return stripped
    except json.JSONDecodeError:
        pass
    start, end = stripped.find("{"), stripped.rfind("}")
    if start > 0 or (start == 0 and end < len(stripped) - 1):
        inner = stripped[start : end + 1]
        try:
            json.loads(inner)
            return inner
        except json.JSONDecodeError:
            pass
    return stripped


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

    Surrounding whitespace, a Markdown code fence (three backticks, with or without a language) and prose around
    one JSON object are ignored.
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


# Keywords that constrain a scalar's value, not the answer's shape: the sampler repairs these
# (clamps into bounds, snaps to a step, matches a near-miss choice), so an answer that breaks
# only these is returned, marked, rather than raised. llama.cpp's grammar enforces the shape but
# not numeric bounds; see :func:`check_reply`.
_VALUE_KEYWORDS = frozenset(
    {
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "enum",
        "const",
    }
)
_SCALAR_TYPES = frozenset({"number", "integer", "string", "boolean", "null"})


def _is_value_error(error: jsonschema.exceptions.ValidationError) -> bool:
    """Whether ``error`` is about a scalar's value (bounds, choices, a scalar of another type)
    rather than the answer's shape (objects, arrays, their keys and lengths)."""
    if isinstance(error.instance, (dict, list)):
        return False
    if error.validator in _VALUE_KEYWORDS:
        return True
    if error.validator == "type":
        expected = error.validator_value
        expected = [expected] if isinstance(expected, str) else expected
        return all(t in _SCALAR_TYPES for t in expected)
    return False


def _listed(errors: list[jsonschema.exceptions.ValidationError]) -> str:
    listed = "; ".join(f"at {_path(e)}: {e.message}" for e in errors[:_MAX_LISTED_VIOLATIONS])
    more = len(errors) - _MAX_LISTED_VIOLATIONS
    if more > 0:
        listed += f"; and {more} more"
    return listed


def _parse(
    text: str, *, finish_reason: str | None, max_tokens: int | None, reply: ChatReply | None
) -> Any:
    """The answer's JSON; ChatAnswerError (``raw`` = the text) where it is not JSON."""
    model = f" from {reply.model}" if reply is not None else ""
    try:
        return json.loads(_unwrap(text))
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


def _violations(
    value: Any, json_schema: Mapping[str, Any]
) -> list[jsonschema.exceptions.ValidationError]:
    validator = _validator(json.dumps(json_schema, sort_keys=True))
    try:
        return sorted(
            validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path]
        )
    except referencing.exceptions.Unresolvable as err:  # never fetched from the network
        raise ConfigurationError(
            f"json_schema refers to {err.ref!r}, which cannot be resolved: keep every $ref "
            "inside the schema (#/$defs/...)."
        ) from err


def _mismatch(text: str, errors: list[Any], reply: ChatReply | None) -> ChatAnswerError:
    model = f" from {reply.model}" if reply is not None else ""
    return ChatAnswerError(
        f"The model's answer{model} is JSON but does not match the schema ({_listed(errors)}). "
        "Retry with another seed, or repair the value: ChatAnswerError.raw holds the answer.",
        raw=text,
        reply=reply,
    )


def _validate(
    text: str,
    json_schema: Mapping[str, Any] | None,
    *,
    finish_reason: str | None,
    max_tokens: int | None,
    reply: ChatReply | None,
) -> Any:
    value = _parse(text, finish_reason=finish_reason, max_tokens=max_tokens, reply=reply)
    if json_schema is None:
        return value
    errors = _violations(value, json_schema)
    if errors:
        raise _mismatch(text, errors, reply)
    return value


def check_reply(reply: ChatReply, request: ChatRequest, validate: Validate) -> ChatReply:
    """Check a backend's answer once, as :meth:`ChatModel.complete` does for every backend.

    Free-text requests (no ``json_schema``) and ``validate="none"`` pass unchecked. Otherwise
    each answer is unwrapped from a Markdown fence and parsed; ``validate="json"`` stops there,
    ``"schema"`` also checks the schema (prose around one JSON object is dropped as the fence
    is). The contract:

    - An answer that is JSON of the schema's shape but breaks only a scalar's value (a bound,
      ``enum``, ``maxLength``, a scalar of another type) is returned, not raised: its
      violations are in :attr:`ChatReply.schema_errors`, for the caller to repair or refuse.
    - An answer that is not JSON, or not of the schema's shape (a missing or extra key, an
      object or array where another type belongs, too few or too many items), is unusable.
      Where the request asked for several answers (``n``) and some are usable, the reply is
      returned with the unusable ones' indices in :attr:`ChatReply.rejected` and their
      messages in ``schema_errors``; where none is usable, :class:`ChatAnswerError` is raised
      with ``raw`` the first answer's text (``reply`` rides along for its token counts).

    Returns:
        The reply with every answer's text unwrapped from fences, and the two marks set.
    """
    if request.json_schema is None or validate == "none":
        return reply
    texts = tuple(_unwrap(t) for t in reply.texts)
    if reply.choices:
        reply = dataclasses.replace(reply, text=texts[0], choices=texts)
    elif texts[0] != reply.text:
        reply = dataclasses.replace(reply, text=texts[0])
    schema = request.json_schema if validate == "schema" else None
    several = len(texts) > 1
    notes: list[str] = []
    rejected: list[int] = []
    first_error: ChatAnswerError | None = None
    for index, text in enumerate(texts):
        prefix = f"answer {index}: " if several else ""
        try:
            value = _parse(
                text,
                finish_reason=reply.finish_reason,
                max_tokens=request.max_tokens,
                reply=reply,
            )
            errors = [] if schema is None else _violations(value, schema)
            shape = [e for e in errors if not _is_value_error(e)]
            if shape:
                raise _mismatch(text, shape, reply)
        except ChatAnswerError as err:
            first_error = first_error or err
            rejected.append(index)
            notes.append(prefix + str(err))
            continue
        notes.extend(f"{prefix}at {_path(e)}: {e.message}" for e in errors)
    if len(rejected) == len(texts):
        assert first_error is not None
        raise first_error
    if notes or rejected:
        reply = dataclasses.replace(reply, schema_errors=tuple(notes), rejected=tuple(rejected))
    return reply
