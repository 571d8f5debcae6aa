"""The guarded process: runs one generated mechanism for its whole life and answers hook calls.

Started by :mod:`bilevel_optuna.research._boundary` (inside bubblewrap, as ``python -I -m
bilevel_optuna.research._child``). The first message says which limits to set and carries the
source; the child sets the resource limits, imports what mechanisms use, loads its seccomp
filter, and only then compiles and runs the generated code. After that every message is one hook
call with plain data (see :mod:`._wire`) and every reply is plain data.

Replies go out on a copy of the original stdout; fd 1 is pointed at stderr, so whatever the
generated code prints cannot corrupt the protocol.
"""

from __future__ import annotations

import os
import sys
import traceback
import types
from typing import Any


def _take_protocol_fds() -> tuple[Any, Any]:
    fd_in, fd_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd_in, "rb", buffering=0), os.fdopen(fd_out, "wb", buffering=0)


def _set_limits(limits: dict[str, int]) -> None:
    import resource

    for name, value in limits.items():
        which = getattr(resource, name)
        # CPU: SIGXCPU at the soft limit (reported as such), SIGKILL two seconds later.
        hard = value + 2 if name == "RLIMIT_CPU" else value
        resource.setrlimit(which, (value, hard))


def _error(err: BaseException) -> dict[str, Any]:
    tb = traceback.extract_tb(err.__traceback__)
    where = f" (line {tb[-1].lineno})" if tb and tb[-1].filename.startswith("mechanism_") else ""
    return {"ok": False, "error": f"{type(err).__name__}: {err}"[:500] + where}


class _Server:
    """Answers the parent's messages with the Mechanism API (``api``) and the wire format
    (``wire``) that :func:`main` imported once the bare packages were in place."""

    def __init__(
        self, stream_in: Any, stream_out: Any, *, api: types.ModuleType, wire: types.ModuleType
    ) -> None:
        self.api = api
        self.wire = wire
        self.stream_in = stream_in
        self.stream_out = stream_out
        self.mechanism: Any = None
        self.trials: list[Any] = []
        self.by_number: dict[int, Any] = {}

    # ------------------------------------------------------------------ load
    def load(self, message: dict[str, Any]) -> dict[str, Any]:
        Mechanism = self.api.Mechanism
        source = message["source"]
        module_name = f"mechanism_{message['sha256'][:12]}"
        module = types.ModuleType(module_name)
        module.__file__ = f"{module_name}.py"
        sys.modules[module_name] = module
        code = compile(source, module.__file__, "exec")
        exec(code, module.__dict__)  # noqa: S102 - this process is the sandbox
        found = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type)
            and issubclass(obj, Mechanism)
            and obj is not Mechanism
            and obj.__module__ == module_name
        ]
        if len(found) != 1:
            return {
                "ok": False,
                "error": "the source must define exactly one Mechanism subclass but defines "
                f"{[c.__name__ for c in found]}",
            }
        cls = found[0]
        space = cls.search_space()
        if not isinstance(space, dict):
            return {"ok": False, "error": "search_space() must return a dict of distributions"}
        self.mechanism = cls(**message.get("params", {}))
        name = cls.name
        if not isinstance(name, str) or not name or name == "mechanism":
            return {"ok": False, "error": "the class must set `name` to a short string of its own"}
        return {
            "ok": True,
            "name": name,
            "version": str(cls.version),
            "class_name": cls.__name__,
            "doc": (cls.__doc__ or "").strip()[:500],
            "hooks": list(self.api.overridden_hooks(self.mechanism)),
            "space": self.wire.space_to_wire(space),
        }

    # ------------------------------------------------------------- contexts
    def context(self, data: dict[str, Any]) -> Any:
        wire = self.wire
        if "trials" in data:
            self.trials = wire.trials_from_wire(data["trials"])
            self.by_number = {t.number: t for t in self.trials}
        space = wire.space_from_wire(data["search_space"])
        trial = wire.trials_from_wire(data["trial"])[0]
        return self.api.ProposalContext(
            study=None,  # type: ignore[arg-type]  # the Study never crosses the boundary
            trial=trial,
            search_space=space,
            trials=list(self.trials),
            minimize=bool(data["minimize"]),
            history=[self.by_number[n] for n in data["history"] if n in self.by_number],
            notes=list(data["notes"]),
            rng=wire.rng_from_wire(data["rng"]),
            params=data["params"],
            record={k: dict(v) for k, v in data["record"].items()},
        )

    def changes(self, ctx: Any) -> dict[str, Any]:
        name = type(self.mechanism).name
        own = ctx.record.get(name)
        return {
            "notes": [str(n) for n in ctx.notes],
            "history": [int(t.number) for t in ctx.history],
            "params": dict(ctx.params) if ctx.params is not None else None,
            "record": dict(own) if isinstance(own, dict) else None,
            "rng": self.wire.rng_to_wire(ctx.rng),
        }

    # ------------------------------------------------------------------ hooks
    def call(self, message: dict[str, Any]) -> dict[str, Any]:
        from optuna.trial import TrialState

        Review = self.api.Review
        hook = message["hook"]
        mechanism = self.mechanism
        if hook == "after_trial":
            trial = self.wire.trials_from_wire(message["trial"])[0]
            state = TrialState[message["state"]]
            mechanism.after_trial(None, trial, state, message["values"])
            return {"ok": True, "result": None}
        ctx = self.context(message["context"])
        if hook == "prepare":
            mechanism.prepare(ctx)
            return {"ok": True, "result": None, "changes": self.changes(ctx)}
        if hook == "review":
            review = mechanism.review(dict(message["candidate"]), ctx)
            if not isinstance(review, Review):
                return {
                    "ok": False,
                    "error": f"review must return a Review but returned {type(review).__name__}",
                }
            if review.action not in ("accept", "reject", "replace"):
                return {"ok": False, "error": f"unknown review action {review.action!r}"}
            result = {
                "action": review.action,
                "reason": str(review.reason),
                "params": dict(review.params) if review.params is not None else None,
            }
            return {"ok": True, "result": result, "changes": self.changes(ctx)}
        if hook == "choose":
            ordered = mechanism.choose([dict(c) for c in message["candidates"]], ctx)
            if not isinstance(ordered, list) or not all(isinstance(c, dict) for c in ordered):
                return {"ok": False, "error": "choose must return a list of parameter dicts"}
            return {"ok": True, "result": [dict(c) for c in ordered], "changes": self.changes(ctx)}
        return {"ok": False, "error": f"unknown hook {hook!r}"}

    # ------------------------------------------------------------------- loop
    def serve(self) -> None:
        wire = self.wire
        while True:
            try:
                message = wire.receive(self.stream_in)
            except wire.WireError:
                return  # the sampler closed the pipe: the study is over
            op = message.get("op")
            try:
                if op == "load":
                    reply = self.load(message)
                elif op == "call":
                    if self.mechanism is None:
                        reply = {"ok": False, "error": "no mechanism is loaded"}
                    else:
                        reply = self.call(message)
                elif op == "ping":
                    reply = {"ok": True}
                else:
                    reply = {"ok": False, "error": f"unknown operation {op!r}"}
            except BaseException as err:  # noqa: BLE001 - SystemExit too: reported, not obeyed
                reply = _error(err)
            try:
                wire.send(self.stream_out, reply)
            except (TypeError, ValueError) as err:
                wire.send(
                    self.stream_out, {"ok": False, "error": f"result is not plain data: {err}"}
                )


def _mechanism_api_only() -> types.ModuleType:
    """Import the Mechanism API without the package's ``__init__`` modules; return it.

    ``bilevel_optuna`` and ``bilevel_optuna.samplers`` import the chat backends, the objectives
    and the studies (seconds, and nothing a mechanism may use); here they are bare packages that
    hold the Mechanism API only, so the child starts faster and generated code that imports
    ``from bilevel_optuna.samplers import Mechanism, Review`` finds exactly that.
    """
    import importlib
    import importlib.util

    for name in (
        "bilevel_optuna",
        "bilevel_optuna.samplers",
        "bilevel_optuna.samplers.mechanisms",
        "bilevel_optuna.research",
    ):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError(f"cannot find the package {name}")
        package = types.ModuleType(name)
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules[name] = package
    api = importlib.import_module("bilevel_optuna.samplers.mechanisms._base")
    for package_name in ("bilevel_optuna", "bilevel_optuna.samplers"):
        package = sys.modules[package_name]
        for attr in ("Mechanism", "ProposalContext", "Review", "normalize", "distance"):
            setattr(package, attr, getattr(api, attr))
    sys.modules["bilevel_optuna"].samplers = sys.modules["bilevel_optuna.samplers"]  # type: ignore[attr-defined]
    return api


def main() -> None:
    stream_in, stream_out = _take_protocol_fds()
    # The first message is raw JSON of the settings, before anything heavy is imported.
    import json
    import struct

    (size,) = struct.unpack(">I", stream_in.read(4))
    settings = json.loads(stream_in.read(size).decode("utf-8"))
    _set_limits(settings.get("rlimits", {}))
    # Everything mechanisms use is imported before the filter, which forbids exec and sockets.
    api = _mechanism_api_only()
    # Late on purpose: imported only once _mechanism_api_only() has made bilevel_optuna and
    # bilevel_optuna.research bare packages; at the top of this module it would run the
    # package's __init__ (the chat backends, the studies) inside the sandbox.
    from bilevel_optuna.research import _wire

    if settings.get("seccomp"):
        # Late on purpose, for the same reason, and only where the filter is asked for.
        from bilevel_optuna.research import _seccomp

        _seccomp.install(kill=settings.get("seccomp") != "errno")
    _wire.send(stream_out, {"ok": True, "pid": os.getpid(), "ready": True})
    _Server(stream_in, stream_out, api=api, wire=_wire).serve()


if __name__ == "__main__":
    main()
