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

import copy
import threading
import time
import weakref
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar

from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna._logging import get_logger
from bilevel_optuna.research import _wire
from bilevel_optuna.research._boundary import BoundaryError
from bilevel_optuna.research._boundary import GuardedProcess
from bilevel_optuna.research._decode import NAME_PATTERN
from bilevel_optuna.research._decode import Changes
from bilevel_optuna.research._decode import ProtocolError
from bilevel_optuna.research._decode import Reply
from bilevel_optuna.research._decode import check_params
from bilevel_optuna.research._decode import clean_text
from bilevel_optuna.research._decode import decode_load
from bilevel_optuna.research._decode import decode_reply
from bilevel_optuna.research._decode import is_name
from bilevel_optuna.research._decode import is_registered_name
from bilevel_optuna.research._sandbox import FULL
from bilevel_optuna.research._sandbox import Layers
from bilevel_optuna.research._sandbox import Limits
from bilevel_optuna.samplers.mechanisms._base import HOOKS
from bilevel_optuna.samplers.mechanisms._base import Mechanism
from bilevel_optuna.samplers.mechanisms._base import ProposalContext
from bilevel_optuna.samplers.mechanisms._base import Review
from bilevel_optuna.exceptions import BilevelOptunaError

if TYPE_CHECKING:
    import optuna

_logger = get_logger(__name__)


class GuardedHookError(BilevelOptunaError):
    """A guarded hook failed: it raised in its process, overran its time, the process died,
    its reply failed the decoder, or the mechanism is disabled for the study."""


class GuardedMechanism(Mechanism):
    """Base of the proxy classes made by ``guarded_class()``; do not use it directly.

    Hyperparameters live in the dict ``hyperparameters``, never as attributes: a
    hyperparameter named ``source`` or ``limits`` cannot replace what the proxy runs.
    """

    trusted: ClassVar[bool] = True
    source: ClassVar[str] = ""
    source_sha256: ClassVar[str] = ""
    generated_name: ClassVar[str] = ""
    generated_hooks: ClassVar[tuple[str, ...]] = ()
    declared_name: ClassVar[str] = ""
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
        self.hyperparameters: dict[str, Any] = dict(params)
        self._process: GuardedProcess | None = None
        self._last_context: Any = None
        self._lock = threading.Lock()  # one message at a time, built and sent together
        self.calls = 0
        #: Starts of the guarded process so far, and when the next one may happen.
        self.starts = 0
        self._loaded = False
        self._next_start = 0.0
        #: Why the mechanism is disabled for the study (``None`` while it is not).
        self.disabled: str | None = None
        self._disabled_recorded = False

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:
        return _wire.space_from_wire(cls._space_wire)

    def params(self) -> dict[str, Any]:
        return dict(self.hyperparameters)

    # --------------------------------------------------------------- process
    def _ensure_process(self) -> GuardedProcess:
        if self._process is None:
            self._process = GuardedProcess(limits=self.limits, layers=self.layers)
            weakref.finalize(self, self._process.close)
        return self._process

    def _ensure(self) -> GuardedProcess:
        process = self._ensure_process()
        if process.pid is not None:
            return process
        limits = self.limits
        if self.starts > limits.max_restarts:
            self._disable(
                f"disabled for this study: its guarded process was started {self.starts} times "
                f"(Limits.max_restarts={limits.max_restarts} restarts)"
            )
        wait = self._next_start - time.monotonic()
        if wait > 0:
            raise GuardedHookError(
                f"its guarded process died; the next start is in {wait:.1f} s (backoff)"
            )
        # After a first start the interpreter's files are cached: a start takes a second or
        # two, so a child that keeps dying gets a short limit, not the first start's.
        timeout = limits.restart_timeout if self.starts else limits.start_timeout
        timeout = min(timeout, limits.start_timeout)
        self.starts += 1
        self._last_context = None
        reply = process.request(
            {
                "op": "load",
                "source": self.source,
                "sha256": self.source_sha256,
                "params": self.hyperparameters,
            },
            timeout=timeout,
            start_timeout=timeout,
        )
        try:
            info = decode_load(reply, limits)
            expected = (self.declared_name, sorted(self.generated_hooks), dict(self._space_wire))
            found = (info.name, sorted(info.hooks), info.space)
            if self.declared_name and found != expected:
                raise ProtocolError(
                    f"the class loaded as {info.name!r} with hooks {info.hooks}, not as the gate "
                    f"accepted it ({self.declared_name!r} with hooks {list(self.generated_hooks)})"
                )
        except ProtocolError as err:
            process.kill()
            raise GuardedHookError(f"load: {err}") from None
        self._loaded = True
        return process

    def _disable(self, reason: str) -> None:
        if self.disabled is None:
            self.disabled = reason
            _logger.warning("Generated mechanism %r %s.", self.name, reason)
        raise GuardedHookError(self.disabled)

    def _record_disabled(self, study: Any) -> None:
        """Write the reason into the study's user attributes once (``status`` shows it)."""
        if self.disabled is None or self._disabled_recorded or study is None:
            return
        self._disabled_recorded = True
        try:
            study.set_user_attr(_attrs.RESEARCH_DISABLED_PREFIX + self.name, self.disabled)
        except Exception as err:  # noqa: BLE001 - the trial's record has it anyway
            _logger.debug("Could not record the disabled mechanism on the study: %s", err)

    def close(self) -> None:
        """End the guarded process (it is started again on the next call)."""
        if self._process is not None:
            self._process.close()

    def _call(self, hook: str, message: dict[str, Any], study: Any) -> Reply:
        self.calls += 1
        try:
            try:
                process = self._ensure()
                reply = process.request({"op": "call", "hook": hook, **message})
            except BoundaryError as err:
                self._last_context = None
                # The first restart is at once (a hook that overran once gets a fresh process
                # on the next call); later ones wait restart_backoff, doubled each time.
                backoff = (
                    0.0
                    if self.starts <= 1
                    else self.limits.restart_backoff * 2 ** (self.starts - 2)
                )
                self._next_start = time.monotonic() + backoff
                raise GuardedHookError(str(err)) from None
            try:
                return decode_reply(hook, reply, self.limits)
            except ProtocolError as err:
                raise GuardedHookError(str(err)) from None
        finally:
            self._record_disabled(study)

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

    def _apply(self, ctx: ProposalContext, changes: Changes | None) -> None:
        """Apply checked changes: everything is validated first, then applied together."""
        if changes is None:
            return
        params = None
        if changes.params is not None:
            params = _checked(check_params, changes.params, ctx.search_space, "changes.params")
        bit_generator = copy.deepcopy(ctx.rng.bit_generator)
        try:
            bit_generator.state = changes.rng
        except Exception as err:  # noqa: BLE001 - numpy's validation of a foreign state
            raise GuardedHookError(
                f"changes.rng is not a state of {type(bit_generator).__name__}: "
                f"{clean_text(str(err), 200)}"
            ) from None
        ctx.notes[:] = changes.notes
        by_number = {t.number: t for t in ctx.trials}
        ctx.history[:] = [by_number[n] for n in changes.history if n in by_number]
        ctx.params = params
        if changes.record is not None:
            ctx.record[self.name] = changes.record
        ctx.rng.bit_generator.state = bit_generator.state

    # ----------------------------------------------------------------- hooks
    # Subclasses made by guarded_class() keep only the hooks the generated class defines, so
    # the sampler's proof record counts exactly those.
    def _prepare(self, context: ProposalContext) -> None:
        with self._lock:
            reply = self._call("prepare", {"context": self._context_wire(context)}, context.study)
        self._apply(context, reply.changes)

    def _review(self, candidate: dict[str, Any], context: ProposalContext) -> Review:
        with self._lock:
            reply = self._call(
                "review",
                {"candidate": candidate, "context": self._context_wire(context)},
                context.study,
            )
        result = reply.result
        params = None
        if result["action"] == "replace":
            params = _checked(check_params, result["params"], context.search_space, "params")
        self._apply(context, reply.changes)
        if result["action"] == "reject":
            return Review.reject(result["reason"])
        if result["action"] == "replace":
            return Review.replace(params, result["reason"])
        return Review.accept()

    def _choose(
        self, candidates: list[dict[str, Any]], context: ProposalContext
    ) -> list[dict[str, Any]]:
        with self._lock:
            reply = self._call(
                "choose",
                {"candidates": candidates, "context": self._context_wire(context)},
                context.study,
            )
        ordered = reply.result
        if not ordered or any(c not in candidates for c in ordered):
            raise GuardedHookError("choose must return a non-empty reordering of its candidates")
        self._apply(context, reply.changes)
        return [dict(candidates[candidates.index(c)]) for c in ordered]

    def _after_trial(
        self,
        study: "optuna.Study",
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        message = {
            "trial": _wire.trials_to_wire([trial]),
            "state": state.name,
            "values": list(values) if values is not None else None,
        }
        with self._lock:
            self._call("after_trial", message, study)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        return f"Guarded[{self.name}]({args})"


def _checked(check: Any, *args: Any) -> Any:
    try:
        return check(*args)
    except ProtocolError as err:
        raise GuardedHookError(str(err)) from None


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
    declared_name: str = "",
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
        declared_name: The name the gate read in the source; when given, each start checks
            that the loaded class still reports it, with the same hooks and space.
    """
    if not is_name(name) and not is_registered_name(name):
        raise ValueError(
            f"A generated mechanism's name must match {NAME_PATTERN.pattern} (a registered one "
            f"with _ and 8 hex digits after it), not {name!r}."
        )
    unknown = sorted(set(hooks) - set(HOOKS))
    if unknown:
        raise ValueError(f"Unknown hooks {unknown}; hooks are {list(HOOKS)}.")
    namespace: dict[str, Any] = {
        "name": name,
        "version": str(version),
        "source": source,
        "source_sha256": sha256,
        "generated_name": name,
        "generated_hooks": tuple(hooks),
        "declared_name": declared_name,
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
