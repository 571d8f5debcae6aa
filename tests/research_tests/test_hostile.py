"""The proxy against a hostile child: whatever bytes it sends, truncated or dying mid-message,
the hook ends in :class:`GuardedHookError` (the mechanism's recorded failure) or in a valid,
bounded change of the context; never in another exception.

The child is :mod:`fake_child`, which sends scripted bytes, so no sandbox is needed here.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import context
from hostile import frame
from hostile import hostile
from hostile import raw_frame
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from optuna.distributions import CategoricalDistribution

from bilevel_optuna.research._proxy import GuardedHookError
from bilevel_optuna.research._sandbox import Limits
from bilevel_optuna.samplers.mechanisms._base import Review

RNG = np.random.default_rng(0).bit_generator.state


def _changes(**over: object) -> dict:
    return {"notes": [], "history": [], "params": None, "record": None, "rng": RNG, **over}


def _prepare(calls: list[bytes], **kwargs: object) -> tuple[object, str | None]:
    mechanism = hostile(calls, **kwargs)  # type: ignore[arg-type]
    ctx = context()
    try:
        mechanism.prepare(ctx)
        return ctx, None
    except GuardedHookError as err:
        return ctx, str(err)
    finally:
        mechanism.close()


def test_a_valid_reply_is_applied() -> None:
    ctx, error = _prepare(
        [frame({"ok": True, "result": None, "changes": _changes(notes=["hi"], record={"a": 1})})]
    )
    assert error is None
    assert ctx.notes == ["hi"] and ctx.record["hostile"] == {"a": 1}


@pytest.mark.parametrize(
    "reply, why",
    [
        (frame({"ok": True, "result": None, "changes": []}), "must be an object"),
        (raw_frame(b"[" * 200_000 + b"]" * 200_000), "nested"),
        (raw_frame(b'{"ok": true, "result": null, "changes": NaN}'), "non-finite"),
        (frame({"ok": True, "result": None, "changes": _changes(), "x": 1}), "unknown fields"),
        (b"\x7f\xff\xff\xff" + b"{}", "announced a reply"),
        (
            frame(
                {"ok": True, "result": None, "changes": _changes(rng={"bit_generator": "MT19937"})}
            ),
            "changes.rng",
        ),
        (
            frame({"ok": True, "result": None, "changes": _changes(params={"kind": "d"})}),
            "not one of the choices",
        ),
        (frame({"ok": True}) + frame({"ok": True}), "more than one reply"),
    ],
)
def test_malformed_replies_are_the_mechanisms_failure(reply: bytes, why: str) -> None:
    ctx, error = _prepare([reply])
    assert error is not None and why in error, error
    assert ctx.notes == [] and ctx.params is None and "hostile" not in ctx.record


def test_a_child_dying_mid_message_is_a_hook_error() -> None:
    whole = frame({"ok": True, "result": None, "changes": _changes()})
    _, error = _prepare([whole[: len(whole) // 2]], exit_after=[True])
    assert error is not None and "exited with status 3" in error


def test_a_child_that_closes_its_pipe_and_lives_on_is_held_to_the_time_limit() -> None:
    # Before, the sampler waited in wait() for as long as the child lived (its CPU limit).
    _, error = _prepare(["close"], limits=Limits(hook_timeout=1.0, restart_backoff=0.0))
    assert error is not None and "closed its pipe and ran past 1 s" in error


def test_a_reply_over_the_byte_budget_is_refused_before_it_is_read() -> None:
    big = frame({"ok": True, "result": None, "changes": _changes(record={"x": "a" * 5000})})
    _, error = _prepare([big], limits=Limits(reply_bytes=4096, restart_backoff=0.0))
    assert error is not None and "budget is 4096" in error


def test_review_and_choose_results_are_checked_against_the_space_and_candidates() -> None:
    ctx = context()
    replace_bad = frame(
        {
            "ok": True,
            "result": {"action": "replace", "reason": "", "params": {"kind": "zz"}},
            "changes": _changes(),
        }
    )
    mechanism = hostile([replace_bad], hooks=("review",))
    try:
        with pytest.raises(GuardedHookError, match="not one of the choices"):
            mechanism.review({"x": 0.0}, ctx)
    finally:
        mechanism.close()
    candidates = [{"x": 1.0}, {"x": 2.0}]
    for result, ok in (([{"x": 2.0}, {"x": 1.0}], True), ([{"x": 3.0}], False), ([], False)):
        mechanism = hostile(
            [frame({"ok": True, "result": result, "changes": _changes()})], hooks=("choose",)
        )
        try:
            if ok:
                assert mechanism.choose([dict(c) for c in candidates], context()) == result
            else:
                with pytest.raises(GuardedHookError, match="reordering"):
                    mechanism.choose([dict(c) for c in candidates], context())
        finally:
            mechanism.close()


_values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_json = st.recursive(
    _values,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
_fields = st.fixed_dictionaries(
    {},
    optional={
        "notes": st.lists(st.text(max_size=10), max_size=3) | _json,
        "history": st.lists(st.integers(-2, 20), max_size=5) | _json,
        "params": st.dictionaries(
            st.sampled_from(["x", "lr", "layers", "kind", "q"]), _values, max_size=4
        )
        | _json,
        "record": st.dictionaries(st.text(max_size=5), _json, max_size=3) | _json,
        "rng": st.just(RNG) | _json,
    },
)


@st.composite
def _replies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["changes", "result", "json", "bytes", "truncated", "deep"]))
    if kind == "changes":
        changes = {**_changes(), **draw(_fields)}
        message = {"ok": True, "result": None, "changes": changes}
        if draw(st.booleans()):
            message[draw(st.text(max_size=4))] = draw(_json)
        return raw_frame(json.dumps(message, allow_nan=True).encode())
    if kind == "result":
        result = draw(
            st.fixed_dictionaries(
                {
                    "action": st.sampled_from(["accept", "reject", "replace", "x"]) | _json,
                    "reason": _json,
                    "params": _json,
                }
            )
        )
        return frame({"ok": True, "result": result, "changes": _changes()})
    if kind == "json":
        return raw_frame(json.dumps(draw(_json), allow_nan=True).encode())
    if kind == "bytes":
        return raw_frame(draw(st.binary(max_size=64)))
    if kind == "truncated":
        whole = frame({"ok": True, "result": None, "changes": _changes()})
        return whole[: draw(st.integers(0, len(whole) - 1))]
    depth = draw(st.integers(10, 3000))
    return raw_frame(b'{"ok":true,"result":null,"changes":' + b"[" * depth + b"]" * depth + b"}")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(["prepare", "review", "choose", "after_trial"]), _replies(), st.booleans())
def test_fuzz_the_proxy_ends_only_in_a_recorded_failure_or_a_valid_change(
    hook: str, reply: bytes, dies: bool
) -> None:
    mechanism = hostile(
        [reply],
        hooks=(hook,),
        exit_after=[dies],
        limits=Limits(hook_timeout=1.0, start_timeout=20.0, restart_backoff=0.0),
    )
    ctx = context()
    candidates = [{"x": 1.0, "lr": 0.01, "layers": 2, "kind": "a"}]
    try:
        if hook == "prepare":
            mechanism.prepare(ctx)
        elif hook == "review":
            review = mechanism.review(dict(candidates[0]), ctx)
            assert isinstance(review, Review)
        elif hook == "choose":
            assert mechanism.choose([dict(c) for c in candidates], ctx) == candidates
        else:
            mechanism.after_trial(None, ctx.trials[-1], ctx.trials[-1].state, None)
    except GuardedHookError:
        pass
    finally:
        mechanism.close()
    # Whatever happened, the context holds only valid, bounded values.
    assert all(isinstance(n, str) for n in ctx.notes)
    if ctx.params is not None:
        for key, value in ctx.params.items():
            dist = ctx.search_space[key]
            if isinstance(dist, CategoricalDistribution):
                assert value in dist.choices
            else:
                assert math.isfinite(value)
    record = ctx.record.get("hostile")
    assert record is None or len(json.dumps(record)) <= Limits().record_bytes
