"""The one decoder for everything the guarded child sends, applied before any other code reads it.

The child runs generated code, so every byte it sends is written by an attacker: a reply, a
name, a search space, a record, an error text. :mod:`._boundary` hands each frame to
:func:`parse` and the proxy and the gate read it only through the typed decoders below
(:func:`decode_ready`, :func:`decode_load`, :func:`decode_reply`); what fails is a
:class:`ProtocolError`, which the caller turns into the mechanism's recorded failure.

In order, for each frame:

1. **bytes**: the length prefix is checked against ``Limits.reply_bytes`` before the body is
   read; the body must be UTF-8;
2. **depth**: nesting is counted on the raw text, before parsing, so a value nested 200,000
   deep never reaches the JSON parser's recursion;
3. **JSON**: duplicate keys, ``NaN``, ``Infinity`` and numbers that overflow to infinity are
   refused by the parser's hooks;
4. **budgets**: every string (keys included) is at most ``Limits.string_chars`` characters,
   every list or object at most ``Limits.list_items`` items;
5. **schema**: each message has a typed schema (required and optional fields, their types,
   allowed values); unknown fields are refused. Names match one strict identifier pattern;
   search spaces are rebuilt into Optuna distributions with finite bounds and choices; a
   mechanism's ``record`` over ``Limits.record_bytes`` is kept as a summary.

Why a decoder of our own over :mod:`json` and not msgspec or pydantic: the limits that matter
here are on the raw bytes and on every node of free-form values (a mechanism's ``record`` and
``params`` are arbitrary JSON), and they must hold before parsing (depth) or during it (duplicate
keys, non-finite numbers). Neither library offers a depth limit before parsing or a per-node
string and list budget on untyped values, so both would need this module's walk around them;
the six message schemas are small enough to state directly, and the package gains no dependency
in its security boundary.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution
from optuna.distributions import json_to_distribution

from bilevel_optuna.exceptions import BilevelOptunaError

if TYPE_CHECKING:
    from bilevel_optuna.research._sandbox import Limits

#: A mechanism's name: lowercase identifier of 2 to 40 characters (the gate's own pattern).
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{1,39}")
#: A registered name: the mechanism's name and 8 hex digits of its source's SHA-256.
REGISTERED_PATTERN = re.compile(r"[a-z][a-z0-9_]{1,39}_[0-9a-f]{8}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_HOOKS = ("prepare", "review", "choose", "after_trial")
_ACTIONS = ("accept", "reject", "replace")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPENERS = np.array([ord("["), ord("{")], dtype=np.uint8)
_CLOSERS = np.array([ord("]"), ord("}")], dtype=np.uint8)


class ProtocolError(BilevelOptunaError):
    """The child sent something that is not a valid message; the mechanism fails."""


def is_name(value: Any) -> bool:
    """Whether ``value`` is a valid mechanism name (data, never code or a path)."""
    return isinstance(value, str) and NAME_PATTERN.fullmatch(value) is not None


def is_registered_name(value: Any) -> bool:
    """Whether ``value`` is a valid registered name of a generated mechanism."""
    return isinstance(value, str) and REGISTERED_PATTERN.fullmatch(value) is not None


def clean_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, control characters (terminal escapes) replaced."""
    return _CONTROL.sub("?", text[:limit])


# ------------------------------------------------------------------------- parsing
def parse(data: bytes, limits: "Limits") -> dict[str, Any]:
    """One frame's body as a JSON object, within the byte, depth, string and list budgets."""
    if len(data) > limits.reply_bytes:
        raise ProtocolError(
            f"a reply of {len(data)} bytes is over the {limits.reply_bytes}-byte budget"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ProtocolError(f"a reply that is not UTF-8 ({err.reason})") from None
    depth = nesting_depth(data)
    if depth > limits.depth:
        raise ProtocolError(f"a reply nested {depth} deep; at most {limits.depth}")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except ProtocolError:
        raise
    except (ValueError, RecursionError) as err:
        raise ProtocolError(f"a reply that is not JSON ({str(err)[:200]})") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"a reply must be a JSON object, not {type(value).__name__}")
    check_budgets(value, limits)
    return value


def nesting_depth(data: bytes) -> int:
    """How deep brackets nest in JSON text, strings skipped; counted without parsing (a
    running sum over the bytes, vectorized: a megabyte takes milliseconds)."""
    codes = np.frombuffer(_STRINGS.sub(b"", data), dtype=np.uint8)
    if not codes.size:
        return 0
    steps = np.isin(codes, _OPENERS).astype(np.int64) - np.isin(codes, _CLOSERS)
    return max(int(np.cumsum(steps).max()), 0)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ProtocolError("a reply with a duplicate key")
    return out


def _no_constant(name: str) -> Any:
    raise ProtocolError(f"a reply with the non-finite number {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ProtocolError(f"a reply with a number that overflows to {value}")
    return value


def check_budgets(value: Any, limits: "Limits") -> None:
    """Every string at most ``string_chars``, every list or object at most ``list_items``,
    numbers finite, types JSON's own; iterative, so depth cannot exhaust the stack."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if len(item) > limits.string_chars:
                raise ProtocolError(
                    f"a string of {len(item)} characters; at most {limits.string_chars}"
                )
        elif isinstance(item, (dict, list)):
            if len(item) > limits.list_items:
                raise ProtocolError(
                    f"a {'list' if isinstance(item, list) else 'object'} of {len(item)} items; "
                    f"at most {limits.list_items}"
                )
            if isinstance(item, dict):
                for key, sub in item.items():
                    if not isinstance(key, str):
                        raise ProtocolError("an object key that is not a string")
                    stack.append(key)
                    stack.append(sub)
            else:
                stack.extend(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ProtocolError("a non-finite number")
        elif item is not None and not isinstance(item, (bool, int)):
            raise ProtocolError(f"a value of type {type(item).__name__}")


# ------------------------------------------------------------------------- schemas
Check = Callable[[Any, str], Any]


def _fields(
    message: Any,
    where: str,
    required: Mapping[str, Check],
    optional: Mapping[str, Check] | None = None,
) -> dict[str, Any]:
    """``message`` as an object with exactly these fields, each checked; unknown ones refused."""
    if not isinstance(message, dict):
        raise ProtocolError(f"{where} must be an object, not {type(message).__name__}")
    optional = optional or {}
    unknown = sorted(set(message) - set(required) - set(optional))
    if unknown:
        raise ProtocolError(f"{where} has unknown fields {unknown[:5]}")
    missing = sorted(set(required) - set(message))
    if missing:
        raise ProtocolError(f"{where} lacks the fields {missing}")
    out = {}
    for key, check in {**required, **optional}.items():
        if key in message:
            out[key] = check(message[key], f"{where}.{key}")
    return out


def _type(kind: type | tuple[type, ...], label: str) -> Check:
    def check(value: Any, where: str) -> Any:
        # bool is an int to Python; a field that wants a number does not take true/false.
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
            raise ProtocolError(f"{where} must be {label}, not {type(value).__name__}")
        return value

    return check


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


_str = _type(str, "a string")
_int = _type(int, "an integer")
_dict = _type(dict, "an object")


def _const(expected: Any) -> Check:
    def check(value: Any, where: str) -> Any:
        if value is not expected:
            raise ProtocolError(f"{where} must be {json.dumps(expected)}")
        return value

    return check


def _one_of(choices: tuple[str, ...]) -> Check:
    def check(value: Any, where: str) -> Any:
        if value not in choices:
            raise ProtocolError(f"{where} must be one of {list(choices)}")
        return value

    return check


def _optional(inner: Check) -> Check:
    def check(value: Any, where: str) -> Any:
        return None if value is None else inner(value, where)

    return check


def _list_of(inner: Check) -> Check:
    def check(value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise ProtocolError(f"{where} must be a list, not {type(value).__name__}")
        return [inner(v, f"{where}[{i}]") for i, v in enumerate(value)]

    return check


def _scalar(value: Any, where: str) -> Any:
    """A parameter value: a string, a finite number, a boolean or null."""
    if value is not None and not isinstance(value, (str, int, float, bool)):
        raise ProtocolError(f"{where} must be a number, a string, a boolean or null")
    return value


def _params(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where} must be an object of parameters")
    return {k: _scalar(v, f"{where}.{k}") for k, v in value.items()}


def _error(value: Any, where: str) -> str:
    return clean_text(_str(value, where), 500)


# ------------------------------------------------------------------------ messages
def decode_ready(message: dict[str, Any]) -> None:
    """The first message: the child set its limits and filter and is ready."""
    _fields(
        message, "the start-up reply", {"ok": _const(True), "ready": _const(True)}, {"pid": _int}
    )


def decode_failure(message: dict[str, Any], where: str) -> str | None:
    """The error text when ``message`` is a failure reply (``ok: false``), else ``None``."""
    if isinstance(message, dict) and message.get("ok") is False:
        return _fields(message, where, {"ok": _const(False), "error": _error})["error"]
    return None


@dataclasses.dataclass(frozen=True)
class LoadInfo:
    """What the child says about the class it loaded; each field checked."""

    name: str
    version: str
    class_name: str
    doc: str
    hooks: list[str]
    space: dict[str, str]


def decode_load(message: dict[str, Any], limits: "Limits") -> LoadInfo:
    """The reply to ``load``; a failure reply raises with the child's (cleaned) error."""
    error = decode_failure(message, "the load reply")
    if error is not None:
        raise ProtocolError(error)

    def name(value: Any, where: str) -> str:
        if not is_name(value):
            raise ProtocolError(
                f"{where} must match {NAME_PATTERN.pattern} (a lowercase identifier of 2 to 40 "
                f"characters), not {clean_text(repr(value), 60)}"
            )
        return value

    def identifier(value: Any, where: str) -> str:
        if not (isinstance(value, str) and _IDENTIFIER.fullmatch(value)):
            raise ProtocolError(f"{where} must be a Python identifier")
        return value

    def hooks(value: Any, where: str) -> list[str]:
        items = _list_of(_one_of(_HOOKS))(value, where)
        if len(set(items)) != len(items):
            raise ProtocolError(f"{where} names a hook twice")
        return items

    def space(value: Any, where: str) -> dict[str, str]:
        value = _dict(value, where)
        for key, text in value.items():
            identifier(key, f"{where} key")
            distribution_from_text(_str(text, f"{where}.{key}"), f"{where}.{key}", limits)
        return dict(value)

    fields = _fields(
        message,
        "the load reply",
        {
            "ok": _const(True),
            "name": name,
            "version": _str,
            "class_name": identifier,
            "doc": _str,
            "hooks": hooks,
            "space": space,
        },
    )
    return LoadInfo(
        name=fields["name"],
        version=clean_text(fields["version"], 40),
        class_name=fields["class_name"],
        doc=clean_text(fields["doc"], 500),
        hooks=fields["hooks"],
        space=fields["space"],
    )


def distribution_from_text(text: str, where: str, limits: "Limits") -> BaseDistribution:
    """An Optuna distribution from its JSON, with finite bounds, steps and choices only."""
    data = parse(text.encode("utf-8"), limits)
    try:
        dist = json_to_distribution(json.dumps(data))
    except Exception as err:  # noqa: BLE001 - Optuna's own validation, any error
        raise ProtocolError(f"{where} is not a distribution ({str(err)[:200]})") from None
    return check_distribution(dist, where)


def check_distribution(dist: BaseDistribution, where: str) -> BaseDistribution:
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        numbers = [dist.low, dist.high] + ([dist.step] if dist.step is not None else [])
        if not all(isinstance(n, (int, float)) and math.isfinite(n) for n in numbers):
            raise ProtocolError(f"{where} has a bound or step that is not a finite number")
    elif isinstance(dist, CategoricalDistribution):
        for choice in dist.choices:
            if isinstance(choice, float) and not math.isfinite(choice):
                raise ProtocolError(f"{where} has a choice that is not a finite number")
    else:
        raise ProtocolError(f"{where} is a {type(dist).__name__}; only float, int, categorical")
    return dist


@dataclasses.dataclass(frozen=True)
class Changes:
    """What a hook changed on its context, checked."""

    notes: list[str]
    history: list[int]
    params: dict[str, Any] | None
    record: dict[str, Any] | None
    rng: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Reply:
    """A hook's reply: its result (shape per hook) and its changes (``None`` for after_trial)."""

    result: Any
    changes: Changes | None


def decode_reply(hook: str, message: dict[str, Any], limits: "Limits") -> Reply:
    """The reply to a call of ``hook``; a failure reply raises with the child's error."""
    where = f"the {hook} reply"
    error = decode_failure(message, where)
    if error is not None:
        raise ProtocolError(error)
    changes_schema = {
        "notes": _list_of(_str),
        "history": _list_of(_int),
        "params": _optional(_params),
        "record": _optional(_dict),
        "rng": _dict,
    }

    def changes(value: Any, where: str) -> Changes:
        fields = _fields(value, where, changes_schema)
        record = fields["record"]
        if record is not None:
            record = bounded_record(record, limits.record_bytes)
        notes, total = [], 0
        for note in fields["notes"]:
            total += len(note)
            if total > limits.notes_chars:
                break  # the rest is dropped: notes reach every prompt and the storage
            notes.append(clean_text(note, limits.string_chars))
        return Changes(
            notes=notes,
            history=fields["history"],
            params=fields["params"],
            record=record,
            rng=fields["rng"],
        )

    if hook == "after_trial":
        fields = _fields(message, where, {"ok": _const(True), "result": _const(None)})
        return Reply(None, None)
    if hook == "prepare":
        result: Check = _const(None)
    elif hook == "review":

        def result(value: Any, where: str) -> dict[str, Any]:
            out = _fields(
                value,
                where,
                {"action": _one_of(_ACTIONS), "reason": _str, "params": _optional(_params)},
            )
            if out["action"] == "replace" and out["params"] is None:
                raise ProtocolError(f"{where}: a replacement needs its params")
            out["reason"] = clean_text(out["reason"], 500)
            return out

    elif hook == "choose":
        result = _list_of(_params)
    else:
        raise ProtocolError(f"unknown hook {hook!r}")
    fields = _fields(message, where, {"ok": _const(True), "result": result, "changes": changes})
    return Reply(fields["result"], fields["changes"])


def bounded_record(record: dict[str, Any], budget: int) -> dict[str, Any]:
    """``record`` if its JSON fits ``budget`` bytes, else a summary that does: its size and its
    first keys (the rest is dropped, so a trial's stored record stays bounded)."""
    size = len(json.dumps(record, separators=(",", ":")).encode("utf-8"))
    if size <= budget:
        return record
    keys = [clean_text(k, 40) for k in list(record)[:20]]
    return {"summarized": True, "bytes": size, "budget": budget, "keys": keys}


def check_params(
    params: Mapping[str, Any], space: Mapping[str, BaseDistribution], where: str
) -> dict[str, Any]:
    """Parameters the child proposes, against the search space, before any repair runs: known
    names only, a categorical value one of its choices, numbers for numeric parameters."""
    unknown = sorted(set(params) - set(space))
    if unknown:
        raise ProtocolError(
            f"{where} names parameters {clean_text(str(unknown[:5]), 200)} "
            "outside the search space"
        )
    for key, value in params.items():
        dist = space[key]
        if isinstance(dist, CategoricalDistribution):
            if not any(type(value) is type(c) and value == c for c in dist.choices):
                raise ProtocolError(
                    f"{where}.{key} is not one of the choices {list(dist.choices)[:10]}"
                )
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError(f"{where}.{key} must be a number")
    return dict(params)
