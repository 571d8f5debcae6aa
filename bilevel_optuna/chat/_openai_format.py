"""What an OpenAI-compatible request sends, and what an endpoint's refusal is about.

The response format (structured output with or without ``strict``, JSON mode, plain text with
the schema in the prompt), the order in which ``"auto"`` steps down, the token cap's two names,
and reading which request field a 400/422 names. :class:`~bilevel_optuna.chat.OpenAIChatModel`
decides what to try next from these.
"""

from __future__ import annotations

import json
import re
from typing import Any
from typing import Literal

import openai

ResponseFormat = Literal["auto", "json_schema", "json_object", "text"]
RESPONSE_FORMATS: tuple[str, ...] = ("auto", "json_schema", "json_object", "text")

# The formats "auto" tries, in order, when an endpoint refuses the previous one: with a 400, or
# a 422 from servers that validate the request body (FastAPI-based, e.g. llama_cpp.server).
FALLBACK = {"json_schema": "json_object", "json_object": "text"}
FORMAT_REFUSED = (openai.BadRequestError, openai.UnprocessableEntityError)
# The token cap's name, newest first: OpenAI deprecated ``max_tokens`` for
# ``max_completion_tokens``, and its reasoning models reject the old name; servers that predate
# the new name know only ``max_tokens``. The first is sent until the endpoint refuses it.
TOKEN_PARAMS = ("max_completion_tokens", "max_tokens")
# Request fields a 400 may name; one that names any of these but response_format is about that
# field, not about the response format.
REQUEST_FIELDS = frozenset(
    {"max_completion_tokens", "max_tokens", "temperature", "seed", "n", "messages", "model"}
    | {"top_p", "stream", "response_format"}
)
_QUOTED = re.compile(r"""['"`]([A-Za-z_]+)['"`]""")


def with_schema_instruction(
    messages: list[dict[str, str]], schema: dict[str, Any]
) -> list[dict[str, str]]:
    """Put the schema into the prompt, for endpoints that cannot take it as response_format."""
    instruction = (
        "Answer with one JSON object and nothing else. It must match this JSON schema:\n"
        + json.dumps(schema)
    )
    if messages and messages[0]["role"] == "system":
        first = {"role": "system", "content": messages[0]["content"] + "\n\n" + instruction}
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def strict_qualifies(schema: Any) -> bool:
    """Whether ``schema`` meets structured output's strict mode: every object lists all its
    properties as required and allows no others (checked through properties, items, $defs,
    anyOf). OpenAI refuses ``strict`` on a schema that does not."""
    if isinstance(schema, list):
        return all(strict_qualifies(s) for s in schema)
    if not isinstance(schema, dict):
        return True
    is_object = schema.get("type") == "object" or "properties" in schema
    if is_object:
        properties = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False:
            return False
        if sorted(schema.get("required") or []) != sorted(properties):
            return False
    nested: list[Any] = list((schema.get("properties") or {}).values())
    nested += list((schema.get("$defs") or {}).values())
    nested += [schema[k] for k in ("items", "anyOf") if k in schema]
    return all(strict_qualifies(s) for s in nested)


def response_format(
    fmt: str, schema: dict[str, Any], *, strict: bool = False
) -> dict[str, Any] | None:
    """The request's ``response_format`` field for ``fmt`` (``None``: send none)."""
    if fmt == "json_schema":
        json_schema: dict[str, Any] = {"name": "answer", "schema": schema}
        if strict:
            json_schema["strict"] = True
        return {"type": "json_schema", "json_schema": json_schema}
    if fmt == "json_object":
        return {"type": "json_object"}
    return None


def rejected_param(body: object, text: str, token_param: str) -> str | None:
    """The request field a 400/422 is about, where it says: OpenAI's ``param``, the ``loc`` of
    a FastAPI 422, the token cap's name anywhere in the message ``text``, or the first quoted
    request field in it; ``None`` where it names none."""
    if isinstance(body, dict):
        param = body.get("param")
        if isinstance(param, str) and param:
            return re.split(r"[.\[]", param, maxsplit=1)[0]
        detail = body.get("detail")
        if isinstance(detail, list):
            for item in detail:
                loc = item.get("loc") if isinstance(item, dict) else None
                if isinstance(loc, list) and len(loc) > 1 and loc[1] in REQUEST_FIELDS:
                    return str(loc[1])
    if re.search(rf"\b{token_param}\b", text):
        return token_param
    for match in _QUOTED.finditer(text):
        if match.group(1) in REQUEST_FIELDS:
            return match.group(1)
    return None
