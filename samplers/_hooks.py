"""Calling mechanism hooks safely, and counting the calls as proof that they ran.

A hook that raises or overruns its time limit switches its mechanism off for the rest of the
trial; the error is recorded on the trial and the trial goes on. A hook that overruns cannot be
killed (Python threads cannot be), so it is left to finish in a daemon thread and its result is
ignored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from typing import TypeVar

from bilevel_optuna._logging import get_logger
from bilevel_optuna.samplers._mechanism import Mechanism
from bilevel_optuna.samplers._mechanism import overridden_hooks

_logger = get_logger(__name__)

T = TypeVar("T")

#: Longest error text kept per mechanism per trial.
MAX_ERROR_CHARS = 300


class HookFailure(Exception):
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


class HookRunner:
    """Runs the hooks of a list of mechanisms for one trial and keeps the record.

    The record, stored on the trial under ``llm:mechanisms``, maps each mechanism name to
    ``{"version", "hooks": {hook: calls}, "changed": n, "errors": [...], "off": bool}`` plus
    whatever the mechanism wrote into ``context.record[name]``.
    """

    def __init__(self, mechanisms: list[Mechanism], *, timeout: float | None) -> None:
        self.mechanisms = mechanisms
        self.timeout = timeout
        self.off: set[str] = set()
        self.record: dict[str, dict[str, Any]] = {
            m.name: {
                "version": m.version,
                "hooks": {h: 0 for h in overridden_hooks(m)},
                "changed": 0,
                "errors": [],
            }
            for m in mechanisms
        }

    def active(self, hook: str) -> list[Mechanism]:
        """Mechanisms, in order, that define ``hook`` and are not switched off."""
        return [
            m
            for m in self.mechanisms
            if m.name not in self.off and hook in self.record[m.name]["hooks"]
        ]

    def call(self, mechanism: Mechanism, hook: str, *args: Any) -> tuple[bool, Any]:
        """Call one hook; return ``(ok, result)``. A failure switches the mechanism off."""
        entry = self.record[mechanism.name]
        entry["hooks"][hook] += 1
        start = time.perf_counter()
        try:
            return True, _call_with_timeout(getattr(mechanism, hook), args, self.timeout)
        except Exception as err:  # noqa: BLE001 - any error in user or generated code
            message = f"{hook}: {type(err).__name__}: {err}"[:MAX_ERROR_CHARS]
            entry["errors"].append(message)
            self.off.add(mechanism.name)
            _logger.warning(
                "Mechanism %r switched off for this trial after %.2f s: %s",
                mechanism.name,
                time.perf_counter() - start,
                message,
            )
            return False, None

    def changed(self, mechanism: Mechanism) -> None:
        self.record[mechanism.name]["changed"] += 1

    def as_record(self, extra: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, entry in self.record.items():
            merged = dict(entry)
            merged["off"] = name in self.off
            merged.update(extra.get(name, {}))
            out[name] = merged
        return out
