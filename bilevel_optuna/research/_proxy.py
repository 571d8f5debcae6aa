"""GuardedMechanism: the in-process stand-in for a generated mechanism that runs elsewhere.

The sampler calls the proxy's hooks like any mechanism's; each call sends the context as plain
data to the mechanism's guarded process (:mod:`._boundary`), waits for the answer within the
mechanism's own time limit, and applies the changes back (notes, the history's order by trial
number, ``params``, the mechanism's own entry of ``context.record``, the random generator's
state). The proxy is ``trusted`` (the sampler calls it without its thread guard) because it
enforces its own limit: a call that overruns kills the process and raises, so the sampler
switches the mechanism off for that trial and records the error; the next call starts a fresh
process. One process per proxy instance, i.e. per mechanism per study.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar

from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from bilevel_optuna.research import _wire
from bilevel_optuna.research._boundary import FULL
from bilevel_optuna.research._boundary import BoundaryError
from bilevel_optuna.research._boundary import GuardedProcess
from bilevel_optuna.research._boundary import Layers
from bilevel_optuna.research._boundary import Limits
from bilevel_optuna.samplers._mechanism import HOOKS
from bilevel_optuna.samplers._mechanism import Mechanism
from bilevel_optuna.samplers._mechanism import ProposalContext
from bilevel_optuna.samplers._mechanism import Review

if TYPE_CHECKING:
    import optuna


class GuardedHookError(Exception):
    """A guarded hook failed: it raised in its process, overran its time, or the process died."""


class GuardedMechanism(Mechanism):
    """Base of the proxy classes made by ``guarded_class()``; do not use it directly."""

    trusted: ClassVar[bool] = True
    source: ClassVar[str] = ""
    source_sha256: ClassVar[str] = ""
    generated_name: ClassVar[str] = ""
    limits: ClassVar[Limits] = Limits()
    layers: ClassVar[Layers] = FULL
    _space_wire: ClassVar[dict[str, str]] = {}

    def __init__(self, **params: Any) -> None:
        space = type(self).search_space()
        unknown = sorted(set(params) - set(space))
        if unknown:
            raise ValueError(
                f"Mechanism {self.name!r} takes no parameter {unknown}; it takes {sorted(space)}."
            )
        self._params = dict(params)
        for key, value in params.items():
            setattr(self, key, value)
        self._process: GuardedProcess | None = None
        self._last_context: Any = None
        self._lock = threading.Lock()  # one message at a time, built and sent together
        self.calls = 0

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:
        return _wire.space_from_wire(cls._space_wire)

    def params(self) -> dict[str, Any]:
        return dict(self._params)

    # --------------------------------------------------------------- process
    def _ensure_process(self) -> GuardedProcess:
        if self._process is None:
            self._process = GuardedProcess(limits=self.limits, layers=self.layers)
            weakref.finalize(self, self._process.close)
        return self._process

    def _ensure(self) -> GuardedProcess:
        self._ensure_process()
        assert self._process is not None
        if self._process.pid is None:
            self._last_context = None
            reply = self._process.request(
                {
                    "op": "load",
                    "source": self.source,
                    "sha256": self.source_sha256,
                    "params": self._params,
                },
                timeout=self.limits.start_timeout,
            )
            if not reply.get("ok"):
                self._process.kill()
                raise GuardedHookError(f"load: {reply.get('error')}")
        return self._process

    def close(self) -> None:
        """End the guarded process (it is started again on the next call)."""
        if self._process is not None:
            self._process.close()

    def _call(self, message: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        try:
            process = self._ensure()
            reply = process.request({"op": "call", **message})
        except BoundaryError as err:
            self._last_context = None
            raise GuardedHookError(str(err)) from None
        if not reply.get("ok"):
            raise GuardedHookError(str(reply.get("error", "failed"))[:500])
        return reply

    # -------------------------------------------------------------- contexts
    def _context_wire(self, ctx: ProposalContext) -> dict[str, Any]:
        data: dict[str, Any] = {
            "search_space": _wire.space_to_wire(ctx.search_space),
            "trial": _wire.trials_to_wire([ctx.trial]),
            "minimize": ctx.minimize,
            "history": [t.number for t in ctx.history],
            "notes": list(ctx.notes),
            "params": dict(ctx.params) if ctx.params is not None else None,
            "record": {k: v for k, v in ctx.record.items() if _wire._jsonable(v)},
            "rng": _wire.rng_to_wire(ctx.rng),
        }
        last = self._last_context() if self._last_context is not None else None
        if last is not ctx:
            # The study's trials cross once per proposal; later hooks of it reuse them.
            data["trials"] = _wire.trials_to_wire(ctx.trials)
            self._last_context = weakref.ref(ctx)
        return data

    def _apply(self, ctx: ProposalContext, changes: Mapping[str, Any] | None) -> None:
        if not changes:
            return
        ctx.notes[:] = [str(n) for n in changes.get("notes", ctx.notes)]
        by_number = {t.number: t for t in ctx.trials}
        numbers = changes.get("history")
        if numbers is not None:
            ctx.history[:] = [by_number[n] for n in numbers if n in by_number]
        params = changes.get("params")
        ctx.params = dict(params) if isinstance(params, dict) else None
        record = changes.get("record")
        if isinstance(record, dict):
            ctx.record[self.name] = record
        try:
            ctx.rng.bit_generator.state = changes["rng"]
        except (KeyError, TypeError, ValueError):
            pass

    # ----------------------------------------------------------------- hooks
    # Subclasses made by guarded_class() keep only the hooks the generated class defines, so
    # the sampler's proof record counts exactly those.
    def _prepare(self, context: ProposalContext) -> None:
        with self._lock:
            reply = self._call({"hook": "prepare", "context": self._context_wire(context)})
        self._apply(context, reply.get("changes"))

    def _review(self, candidate: dict[str, Any], context: ProposalContext) -> Review:
        with self._lock:
            reply = self._call(
                {"hook": "review", "candidate": candidate, "context": self._context_wire(context)}
            )
        self._apply(context, reply.get("changes"))
        result = reply.get("result") or {}
        action = result.get("action")
        if action == "reject":
            return Review.reject(str(result.get("reason", "")))
        if action == "replace" and isinstance(result.get("params"), dict):
            return Review.replace(result["params"], str(result.get("reason", "")))
        return Review.accept()

    def _choose(
        self, candidates: list[dict[str, Any]], context: ProposalContext
    ) -> list[dict[str, Any]]:
        with self._lock:
            reply = self._call(
                {
                    "hook": "choose",
                    "candidates": candidates,
                    "context": self._context_wire(context),
                }
            )
        self._apply(context, reply.get("changes"))
        result = reply.get("result")
        return [dict(c) for c in result] if isinstance(result, list) else candidates

    def _after_trial(
        self,
        study: "optuna.Study",
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        message = {
            "hook": "after_trial",
            "trial": _wire.trials_to_wire([trial]),
            "state": state.name,
            "values": list(values) if values is not None else None,
        }
        with self._lock:
            self._call(message)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"Guarded[{self.name}]({args})"


def guarded_class(
    source: str,
    *,
    name: str,
    hooks: Sequence[str],
    space: Mapping[str, str],
    version: str = "1",
    sha256: str,
    limits: Limits | None = None,
    layers: Layers | None = None,
) -> type[GuardedMechanism]:
    """A proxy class for one generated mechanism, from what the gate found out about it.

    Args:
        source: The generated source text.
        name: The name the mechanism is registered and recorded under.
        hooks: The hooks the generated class defines (only these are proxied and counted).
        space: Its hyperparameters, as Optuna distribution JSON.
        version: Its ``version``.
        sha256: The source's SHA-256.
        limits, layers: Limits and layers of its guarded process.
    """
    unknown = sorted(set(hooks) - set(HOOKS))
    if unknown:
        raise ValueError(f"Unknown hooks {unknown}; hooks are {list(HOOKS)}.")
    namespace: dict[str, Any] = {
        "name": name,
        "version": str(version),
        "source": source,
        "source_sha256": sha256,
        "generated_name": name,
        "_space_wire": dict(space),
        "__doc__": f"Generated mechanism {name} (source {sha256[:12]}), run behind the boundary.",
    }
    for hook in hooks:
        namespace[hook] = getattr(GuardedMechanism, f"_{hook}")
    if limits is not None:
        namespace["limits"] = limits
    if layers is not None:
        namespace["layers"] = layers
    return type(f"Guarded_{name}", (GuardedMechanism,), namespace)
