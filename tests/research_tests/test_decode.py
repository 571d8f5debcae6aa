"""The decoder of everything the guarded child sends: budgets, schemas, and fuzzing.

Hypothesis is used as a library (``@given``; pyproject disables its pytest plugin): every
input, arbitrary or adversarial, ends in a decoded message or :class:`ProtocolError`, never
in another exception.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import distribution_to_json

from bilevel_optuna.research._decode import bounded_record
from bilevel_optuna.research._decode import check_params
from bilevel_optuna.research._decode import decode_load
from bilevel_optuna.research._decode import decode_ready
from bilevel_optuna.research._decode import decode_reply
from bilevel_optuna.research._decode import nesting_depth
from bilevel_optuna.research._decode import parse
from bilevel_optuna.research._decode import ProtocolError
from bilevel_optuna.research._sandbox import Limits

LIMITS = Limits()
HOOKS = ("prepare", "review", "choose", "after_trial")
RNG = {"bit_generator": "PCG64", "state": {"state": 1, "inc": 3}, "has_uint32": 0, "uinteger": 0}
CHANGES = {"notes": ["n"], "history": [1, 2], "params": {"x": 0.5}, "record": {"k": 1}, "rng": RNG}


def _decode_all(data: bytes, limits: Limits = LIMITS) -> None:
    """Every decoder on ``data``; only ProtocolError may come out."""
    try:
        message = parse(data, limits)
    except ProtocolError:
        return
    for decoder in (
        lambda m: decode_ready(m),
        lambda m: decode_load(m, limits),
        *[lambda m, h=h: decode_reply(h, m, limits) for h in HOOKS],
    ):
        try:
            decoder(message)
        except ProtocolError:
            pass


# ------------------------------------------------------------------------------ parsing
def test_a_valid_reply_decodes_to_typed_values() -> None:
    reply = decode_reply(
        "review",
        {
            "ok": True,
            "result": {"action": "replace", "reason": "r", "params": {"x": 1.0}},
            "changes": CHANGES,
        },
        LIMITS,
    )
    assert reply.result["params"] == {"x": 1.0}
    assert reply.changes is not None and reply.changes.history == [1, 2]


@pytest.mark.parametrize(
    "data, why",
    [
        (b"[" * 200_000 + b"]" * 200_000, "nested"),
        (b'{"ok": NaN}', "non-finite"),
        (b'{"ok": Infinity}', "non-finite"),
        (b'{"ok": 1e999}', "overflows"),
        (b'{"ok": true, "ok": false}', "duplicate"),
        (b"\xff\xfe", "UTF-8"),
        (b"[1, 2]", "object"),
        (b'{"ok": tru', "not JSON"),
        (json.dumps({"s": "x" * 5000}).encode(), "characters"),
        (json.dumps({"l": list(range(10_001))}).encode(), "items"),
        (b" " * (LIMITS.reply_bytes + 1), "budget"),
    ],
)
def test_parse_refuses_what_is_not_a_bounded_json_object(data: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        parse(data, LIMITS)


def test_depth_is_counted_before_parsing_and_ignores_brackets_in_strings() -> None:
    assert nesting_depth(b'{"a": [[1], "[[[[["], {"b": "}}}"}]}') == 3
    assert nesting_depth(b"[" * 200_000) == 200_000


@pytest.mark.parametrize("hook", HOOKS)
def test_unknown_fields_are_refused_in_every_reply(hook: str) -> None:
    message = {"ok": True, "result": None, "extra": 1}
    if hook != "after_trial":
        message["changes"] = CHANGES
    with pytest.raises(ProtocolError, match="unknown fields"):
        decode_reply(hook, message, LIMITS)


def test_wrong_types_are_refused() -> None:
    for changes in (
        [],
        {**CHANGES, "notes": "x"},
        {**CHANGES, "history": [True]},
        {**CHANGES, "params": {"x": [1]}},
        {**CHANGES, "record": []},
    ):
        with pytest.raises(ProtocolError):
            decode_reply("prepare", {"ok": True, "result": None, "changes": changes}, LIMITS)


def test_a_failure_reply_keeps_its_error_cleaned_of_terminal_escapes() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_reply("prepare", {"ok": False, "error": "\x1b[2Jboom\r" + "x" * 900}, LIMITS)
    text = str(info.value)
    assert "\x1b" not in text and "\r" not in text and len(text) <= 500


def test_load_refuses_bad_names_spaces_and_hooks() -> None:
    good = {
        "ok": True,
        "name": "ring",
        "version": "1",
        "class_name": "Ring",
        "doc": "",
        "hooks": ["prepare"],
        "space": {},
    }
    assert decode_load(good, LIMITS).name == "ring"
    inf = '{"name": "FloatDistribution", "attributes": {"low": 0, "high": Infinity, "log": false, "step": null}}'
    nan_choice = distribution_to_json(CategoricalDistribution(["a", float("nan")]))
    for bad in (
        {**good, "name": "x\nimport os"},
        {**good, "name": "../../evil"},
        {**good, "name": "A" * 41},
        {**good, "hooks": ["prepare", "prepare"]},
        {**good, "hooks": ["__init__"]},
        {**good, "space": {"r": inf}},
        {**good, "space": {"r": nan_choice}},
        {**good, "space": {"r": '{"name": "Nope", "attributes": {}}'}},
        {**good, "class_name": "a b"},
    ):
        with pytest.raises(ProtocolError):
            decode_load(bad, LIMITS)


def test_a_record_over_budget_is_kept_as_a_summary() -> None:
    big = {f"k{i}": "x" * 1000 for i in range(100)}
    summary = bounded_record(big, 16 * 1024)
    assert summary["summarized"] is True and len(json.dumps(summary)) < 16 * 1024
    assert bounded_record({"a": 1}, 16 * 1024) == {"a": 1}


def test_notes_past_their_budget_are_dropped() -> None:
    changes = {**CHANGES, "notes": ["a" * 3000, "b" * 3000, "c"]}
    reply = decode_reply("prepare", {"ok": True, "result": None, "changes": changes}, LIMITS)
    assert reply.changes is not None and reply.changes.notes == ["a" * 3000]


def test_a_categorical_must_be_one_of_its_choices_before_any_repair() -> None:
    space = {"kind": CategoricalDistribution(["a", "b"]), "x": FloatDistribution(0, 1)}
    assert check_params({"kind": "a", "x": 2.0}, space, "p") == {"kind": "a", "x": 2.0}
    for bad in ({"kind": "a "}, {"kind": "b" * 100}, {"x": "0.5"}, {"y": 1}, {"kind": True}):
        with pytest.raises(ProtocolError):
            check_params(bad, space, "p")


# ------------------------------------------------------------------------------- fuzzing
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)
_keys = st.sampled_from(
    [
        "ok",
        "result",
        "changes",
        "error",
        "name",
        "hooks",
        "space",
        "version",
        "class_name",
        "doc",
        "ready",
        "pid",
        "notes",
        "history",
        "params",
        "record",
        "rng",
        "action",
        "reason",
        "extra",
    ]
)
_shaped = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=6),
    max_leaves=40,
)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes_end_in_a_protocol_error_or_a_message(data: bytes) -> None:
    _decode_all(data)


@settings(max_examples=100, deadline=None)
@given(_json)
def test_fuzz_arbitrary_json_values(value: object) -> None:
    text = json.dumps(value, allow_nan=True).encode()
    _decode_all(text)


@settings(max_examples=150, deadline=None)
@given(_shaped)
def test_fuzz_near_valid_messages(value: object) -> None:
    _decode_all(json.dumps(value).encode())


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from(HOOKS),
    st.dictionaries(st.sampled_from(list(CHANGES)), _json, max_size=5),
    _json,
)
def test_fuzz_changes_and_results_of_each_hook(hook: str, changes: dict, result: object) -> None:
    message = {"ok": True, "result": result, "changes": {**CHANGES, **changes}}
    try:
        reply = decode_reply(hook, json.loads(json.dumps(message)), LIMITS)
    except ProtocolError:
        return
    if reply.changes is not None:
        assert all(isinstance(n, str) for n in reply.changes.notes)
        assert all(type(n) is int for n in reply.changes.history)
        for v in (reply.changes.params or {}).values():
            assert not isinstance(v, float) or math.isfinite(v)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=5000), st.sampled_from([b"[", b'{"a":']))
def test_fuzz_deep_nesting_never_reaches_the_parser(depth: int, opener: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    data = b'{"ok":' + opener * depth + b"1" + closer * depth + b"}"
    if depth + 1 > LIMITS.depth:
        with pytest.raises(ProtocolError, match="nested"):
            parse(data, LIMITS)
    else:
        _decode_all(data)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_fuzz_truncated_frames_of_a_valid_reply(tail: bytes) -> None:
    valid = json.dumps({"ok": True, "result": None, "changes": CHANGES}).encode()
    for cut in (1, len(valid) // 2, len(valid) - 1):
        _decode_all(valid[:cut] + tail)
