"""The null model: uniformly random answers valid under the request's JSON schema.

``UniformChatModel`` knows nothing: it never reads the prompt, only the schema, and draws every
value uniformly from what the schema allows. With it, an :class:`~bilevel_optuna.samplers.LLMSampler`
keeps all its mechanisms (feedback, review, repair, restarts) but loses the language model, so a
study with the spec ``uniform`` is the ablation of the model itself. It answers at once, offline,
with zero tokens, which also makes it the proposer of the tests and benchmarks of the plumbing
(workers, storages, faults).

The random state is seeded from the request's hash (messages, schema and seed), so the same
request always gets the same answer and a study run with it is reproducible.
"""

from __future__ import annotations

import json
import math
import random
import re
import string
import time
from typing import Any

from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.chat._base import ChatReply
from bilevel_optuna.chat._base import ChatRequest
from bilevel_optuna.exceptions import ChatModelError

__all__ = ["UniformChatModel", "UnsupportedRequestError"]

# Ranges for what a schema leaves open: an unbounded number, an array or a string without a
# maximum length. Any value is valid there; these keep answers short.
_OPEN_NUMBER_SPAN = 1.0
_OPEN_ARRAY_EXTRA = 3
_OPEN_STRING_LENGTH = 12
# Strings under a ``pattern`` are drawn from lower-case letters, digits and ``_`` (an identifier,
# the only patterns this package asks for); a pattern none of these draws matches is an error.
_PATTERN_TRIES = 64
_FIRST_CHARS = string.ascii_lowercase
_NEXT_CHARS = string.ascii_lowercase + string.digits + "_"
_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")


class UnsupportedRequestError(ChatModelError):
    """The uniform model cannot answer this request: free text, or a schema it cannot draw from."""


class UniformChatModel(ChatModel):
    """A chat model that answers with uniformly random values valid under the request's schema.

    Numbers are uniform between ``minimum`` and ``maximum`` (linear, also for a log-scaled
    parameter: the schema does not say log), integers uniform on their range (``multipleOf``
    kept), ``enum`` and ``const`` uniform over their values, arrays of a uniform length between
    ``minItems`` and ``maxItems``, objects with every listed property. Each of the request's
    ``n`` answers is drawn independently. Requests without a schema (free text, such as the
    source code a research round asks for) raise :class:`UnsupportedRequestError`, as does a
    schema with keywords it cannot satisfy by construction (``allOf``, ``not``, ...).

    Example:

        .. code-block:: python

            from bilevel_optuna.chat import get_chat_model

            model = get_chat_model("uniform")
            sampler = LLMSampler(model=model)  # every mechanism, no model
    """

    name = "uniform"

    def _complete(self, request: ChatRequest) -> ChatReply:
        start = time.perf_counter()
        if request.json_schema is None:
            raise UnsupportedRequestError(
                "The uniform model answers only requests with a JSON schema, not free text. "
                "Use a language model ('local', 'openai:MODEL@URL') for this step."
            )
        rng = random.Random(request.hash())
        texts = tuple(
            json.dumps(_draw(request.json_schema, request.json_schema, rng, "$"))
            for _ in range(request.n)
        )
        return ChatReply(
            text=texts[0],
            prompt_tokens=0,
            completion_tokens=0,
            latency_s=time.perf_counter() - start,
            model=self.name,
            finish_reason="stop",
            choices=texts if request.n > 1 else (),
        )


def _unsupported(path: str, what: str) -> UnsupportedRequestError:
    return UnsupportedRequestError(
        f"The uniform model cannot draw a value at {path}: {what}. It supports type, enum, "
        "const, properties, items, minItems/maxItems, minimum/maximum, multipleOf, "
        "minLength/maxLength, an identifier pattern, anyOf/oneOf and local $ref."
    )


def _resolve(ref: str, root: dict[str, Any], path: str) -> dict[str, Any]:
    if not ref.startswith("#"):
        raise _unsupported(path, f"$ref {ref!r} points outside the schema")
    node: Any = root
    for part in ref.lstrip("#").strip("/").split("/") if ref != "#" else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise _unsupported(path, f"$ref {ref!r} does not resolve")
        node = node[part]
    if not isinstance(node, dict):
        raise _unsupported(path, f"$ref {ref!r} is not a schema")
    return node


def _draw(schema: Any, root: dict[str, Any], rng: random.Random, path: str) -> Any:
    if schema is True or schema == {}:
        return None
    if not isinstance(schema, dict):
        raise _unsupported(path, f"the schema {schema!r} allows nothing")
    if "$ref" in schema:
        return _draw(_resolve(schema["$ref"], root, path), root, rng, path)
    for keyword in ("allOf", "not", "if", "dependentSchemas", "contains"):
        if keyword in schema:
            raise _unsupported(path, f"'{keyword}' is not supported")
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        if not schema["enum"]:
            raise _unsupported(path, "'enum' is empty")
        return rng.choice(list(schema["enum"]))
    for keyword in ("anyOf", "oneOf"):
        if keyword in schema:
            return _draw(rng.choice(schema[keyword]), root, rng, path)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = rng.choice(kind) if kind else None
    if kind is None:
        kind = _implied_type(schema)
    if kind == "object":
        return _draw_object(schema, root, rng, path)
    if kind == "array":
        return _draw_array(schema, root, rng, path)
    if kind == "string":
        return _draw_string(schema, rng, path)
    if kind in ("number", "integer"):
        return _draw_number(schema, rng, path, integer=kind == "integer")
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    raise _unsupported(path, f"unknown type {kind!r}; JSON schema types are {_TYPES}")


def _implied_type(schema: dict[str, Any]) -> str:
    """The type a schema without ``type`` implies by its keywords (a number by default)."""
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "minItems" in schema or "maxItems" in schema:
        return "array"
    if {"pattern", "minLength", "maxLength"} & set(schema):
        return "string"
    return "number"


def _draw_object(
    schema: dict[str, Any], root: dict[str, Any], rng: random.Random, path: str
) -> dict[str, Any]:
    properties = schema.get("properties", {})
    missing = [k for k in schema.get("required", []) if k not in properties]
    extra = schema.get("additionalProperties", True)
    if missing and extra is False:
        raise _unsupported(path, f"required {missing} are not among the allowed properties")
    value = {name: _draw(sub, root, rng, f"{path}.{name}") for name, sub in properties.items()}
    for name in missing:  # required but undescribed: anything goes, or what extras must be
        sub = extra if isinstance(extra, dict) else {"type": "null"}
        value[name] = _draw(sub, root, rng, f"{path}.{name}")
    return value


def _draw_array(
    schema: dict[str, Any], root: dict[str, Any], rng: random.Random, path: str
) -> list[Any]:
    low = int(schema.get("minItems", 0))
    high = int(schema.get("maxItems", low + _OPEN_ARRAY_EXTRA))
    if high < low:
        raise _unsupported(path, f"maxItems {high} < minItems {low}")
    if "prefixItems" in schema:
        raise _unsupported(path, "'prefixItems' is not supported")
    items = schema.get("items", {"type": "null"})
    value = [_draw(items, root, rng, f"{path}[{i}]") for i in range(rng.randint(low, high))]
    if schema.get("uniqueItems"):
        unique = {json.dumps(v, sort_keys=True) for v in value}
        if len(unique) < len(value):
            raise _unsupported(path, "'uniqueItems' on items that repeat")
    return value


def _draw_string(schema: dict[str, Any], rng: random.Random, path: str) -> str:
    low = int(schema.get("minLength", 0))
    high = int(schema.get("maxLength", max(low, _OPEN_STRING_LENGTH)))
    if high < low:
        raise _unsupported(path, f"maxLength {high} < minLength {low}")
    pattern = schema.get("pattern")
    tries = _PATTERN_TRIES if pattern is not None else 1
    for _ in range(tries):
        length = rng.randint(max(low, 1) if high >= 1 else 0, high)
        text = "".join(
            rng.choice(_FIRST_CHARS if i == 0 else _NEXT_CHARS) for i in range(length)
        )
        if pattern is None or re.search(pattern, text):
            return text
    raise _unsupported(path, f"no identifier-like string drawn matches the pattern {pattern!r}")


def _draw_number(
    schema: dict[str, Any], rng: random.Random, path: str, *, integer: bool
) -> float | int:
    low, high = schema.get("minimum"), schema.get("maximum")
    low_open, high_open = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    # Draft 4 writes exclusiveMinimum as a flag on minimum; later drafts as the bound itself.
    if isinstance(low_open, bool):
        low_open, low = (low if low_open else None), (None if low_open else low)
    if isinstance(high_open, bool):
        high_open, high = (high if high_open else None), (None if high_open else high)
    lows = [b for b in (low, low_open) if b is not None]
    highs = [b for b in (high, high_open) if b is not None]
    lo = max(lows) if lows else (min(highs) - _OPEN_NUMBER_SPAN if highs else 0.0)
    hi = min(highs) if highs else lo + _OPEN_NUMBER_SPAN
    strict_lo = low_open is not None and lo == low_open
    strict_hi = high_open is not None and hi == high_open
    step = schema.get("multipleOf")
    if integer or step is not None:
        unit = step if step is not None else 1
        if integer and not float(unit).is_integer():
            unit = 1 if step is None else step
        first = math.ceil(lo / unit) + (1 if strict_lo and (lo / unit).is_integer() else 0)
        last = math.floor(hi / unit) - (1 if strict_hi and (hi / unit).is_integer() else 0)
        if last < first:
            raise _unsupported(path, f"no multiple of {unit} lies between {lo} and {hi}")
        k = rng.randint(first, last)
        return int(k * unit) if integer else k * unit
    if hi < lo or (hi == lo and (strict_lo or strict_hi)):
        raise _unsupported(path, f"the range [{lo}, {hi}] is empty")
    value = rng.uniform(lo, hi)
    while (strict_lo and value <= lo) or (strict_hi and value >= hi):
        value = rng.uniform(lo, hi)
    return value
