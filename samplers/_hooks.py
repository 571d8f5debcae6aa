"""Calling mechanism hooks safely, and counting the calls as proof that they ran.

A hook that raises or overruns its time limit switches its mechanism off for the rest of the
trial; the error is recorded on the trial and the trial goes on.

Trusted mechanisms (``Mechanism.trusted``: the built-ins, and guarded proxies that enforce their
own limits) are called directly. Any other hook runs in a daemon thread under the time limit,
on a copy of the proposal context: Python threads cannot be killed, so a hook that overruns is
left to finish, and since it only ever held the copy, it cannot change the live context (notes,
history, parameters, records) after the sampler has moved on. What an untrusted hook changed on
its copy is applied to the live context only when it returns in time.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from typing import Any
from typing import TypeVar

from bilevel_optuna._logging import get_logger
from bilevel_optuna.exceptions import BilevelOptunaError
from bilevel_optuna.samplers._record import MechanismRecord
from bilevel_optuna.samplers.mechanisms._base import Mechanism
from bilevel_optuna.samplers.mechanisms._base import ProposalContext

_logger = get_logger(__name__)

T = TypeVar("T")

#: Longest error text kept per mechanism per trial.
MAX_ERROR_CHARS = 300


class HookFailure(BilevelOptunaError):
    """A hook raised or timed out; the mechanism is off for this trial."""


def _call_with_timeout(func: Callable[..., T], args: tuple[Any, ...], timeout: float | None) -> T:
    if timeout is None:
        return func(*args)
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(func(*args))
        except BaseException as err:  # noqa: BLE001 - reported to the caller below
            error.append(err)

    thread = threading.Thread(target=target, daemon=True, name="bilevel-optuna-hook")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise HookFailure(f"timed out after {timeout:g} s")
    if error:
        raise error[0]
    return result[0]


def _private_copy(context: ProposalContext) -> ProposalContext:
    """A copy of ``context`` whose mutable parts a hook may change without touching the
    original; the study, the trials and the views computed from them are shared (read-only)."""
    private = copy.copy(context)
    private.notes = list(context.notes)
    private.history = list(context.history)
    private.params = copy.deepcopy(context.params)
    private.record = copy.deepcopy(context.record)
    private.rng = copy.deepcopy(context.rng)
    return private


class HookRunner:
    """Runs the hooks of a list of mechanisms for one trial and keeps its
    :class:`~bilevel_optuna.samplers._record.MechanismRecord`."""

    def __init__(self, mechanisms: list[Mechanism], *, timeout: float | None) -> None:
        self.mechanisms = mechanisms
        self.timeout = timeout
        self.record = MechanismRecord.for_mechanisms(mechanisms)

    def active(self, hook: str) -> list[Mechanism]:
        """Mechanisms, in order, that define ``hook`` and are not switched off."""
        return [
            m
            for m in self.mechanisms
            if not self.record.is_off(m.name) and self.record.defines(m.name, hook)
        ]

    def call(self, mechanism: Mechanism, hook: str, *args: Any) -> tuple[bool, Any]:
        """Call one hook; return ``(ok, result)``. A failure switches the mechanism off."""
        self.record.count_call(mechanism.name, hook)
        start = time.perf_counter()
        try:
            if mechanism.trusted or self.timeout is None:
                return True, getattr(mechanism, hook)(*args)
            return True, self._guarded(mechanism, hook, args)
        except Exception as err:  # noqa: BLE001 - any error in user or generated code
            self.fail(mechanism, f"{hook}: {type(err).__name__}: {err}")
            _logger.warning(
                "Mechanism %r switched off for this trial after %.2f s: %s",
                mechanism.name,
                time.perf_counter() - start,
                self.record.errors(mechanism.name)[-1],
            )
            return False, None

    def _guarded(self, mechanism: Mechanism, hook: str, args: tuple[Any, ...]) -> Any:
        live = next((a for a in args if isinstance(a, ProposalContext)), None)
        if live is None:
            return _call_with_timeout(getattr(mechanism, hook), copy.deepcopy(args), self.timeout)
        private = _private_copy(live)
        safe_args = tuple(private if a is live else copy.deepcopy(a) for a in args)
        result = _call_with_timeout(getattr(mechanism, hook), safe_args, self.timeout)
        # Returned in time: what the hook changed on its copy now reaches the live context.
        live.notes[:] = private.notes
        live.history[:] = private.history
        live.params = private.params
        live.rng = private.rng
        live.record.clear()
        live.record.update(private.record)
        return result

    def fail(self, mechanism: Mechanism, message: str) -> None:
        """Record an error of ``mechanism`` and switch it off for the rest of the trial."""
        self.record.fail(mechanism.name, message[:MAX_ERROR_CHARS])

    def changed(self, mechanism: Mechanism) -> None:
        self.record.count_change(mechanism.name)

    def as_record(self, extra: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The stored value: the counts, plus what mechanisms wrote into ``context.record``."""
        self.record.add_extra(extra)
        return self.record.to_attr()
