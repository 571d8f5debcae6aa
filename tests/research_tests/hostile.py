"""Proxies whose guarded process is :mod:`fake_child`: a child that sends scripted bytes."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

from bilevel_optuna.research._boundary import GuardedProcess
from bilevel_optuna.research._proxy import guarded_class
from bilevel_optuna.research._proxy import GuardedMechanism
from bilevel_optuna.research._sandbox import Layers
from bilevel_optuna.research._sandbox import Limits

NONE = Layers(namespaces=False, rlimits=False, seccomp=False)
_FAKE = Path(__file__).with_name("fake_child.py")


class ScriptedProcess(GuardedProcess):
    def _command(self) -> list[str]:
        return [sys.executable, "-I", str(_FAKE)]


def frame(message: Any) -> bytes:
    data = json.dumps(message).encode()
    return struct.pack(">I", len(data)) + data


def raw_frame(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def hostile(
    calls: list[bytes | str],
    *,
    hooks: tuple[str, ...] = ("prepare",),
    space: dict[str, str] | None = None,
    load: bytes | None = None,
    exit_after: list[bool] | None = None,
    limits: Limits | None = None,
) -> GuardedMechanism:
    """A proxy whose child answers ``load`` with ``load`` (a valid reply if ``None``) and the
    n-th call with ``calls[n]`` (the last one repeated; ``"close"``: it closes its reply pipe
    and lives on)."""
    script = {
        "load": load.hex() if load is not None else None,
        "calls": [c if isinstance(c, str) else c.hex() for c in calls],
        "exit_after": exit_after or [],
        "hooks": list(hooks),
        "space": space or {},
    }
    cls = guarded_class(
        json.dumps(script),
        name="hostile",
        hooks=list(hooks),
        space=space or {},
        sha256="0" * 64,
        limits=limits or Limits(hook_timeout=5.0, start_timeout=20.0, restart_backoff=0.0),
        layers=NONE,
    )

    class Scripted(cls):  # type: ignore[misc, valid-type]
        def _ensure_process(self) -> GuardedProcess:
            if self._process is None:
                self._process = ScriptedProcess(limits=self.limits, layers=self.layers)
            return self._process

    return Scripted()
