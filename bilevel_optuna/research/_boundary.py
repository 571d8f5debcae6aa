"""The security boundary: one guarded process per generated mechanism, for its whole life.

Generated code never runs in the optimizer's process. It runs in a child started here, which
the sampler talks to over two pipes with plain data (:mod:`._wire`). Each layer stops something
on its own, and each is tested on its own (tests/research_tests/test_boundary.py):

===================  =====================================================================
layer                what it stops
===================  =====================================================================
environment          the child's environment is rebuilt from a few safe keys: no API keys,
                     storage URLs or tokens of the parent (``env``, and ``--clearenv``)
namespaces           bubblewrap (Debian's ``bubblewrap``): a new network namespace with no
(bubblewrap)         interface but loopback (no connection leaves), a read-only view of only
                     the interpreter, the libraries and the package (no database file, home
                     folder or secret is even visible), a private size-capped ``/tmp`` as the
                     only writable folder, new PID/IPC/UTS namespaces (every process it
                     starts dies with it), no capabilities, killed when the sampler dies
rlimits              address space (memory hogs get ``MemoryError``), CPU seconds over the
                     process's life (``SIGXCPU``), open files, file size, core dumps, and
                     processes (binding for non-root users; root is exempt from
                     ``RLIMIT_NPROC`` by the kernel, which is what the next layer is for)
seccomp              no new processes, no ``exec``, no sockets of any family, no ``ptrace``,
                     ``mount``, ``unshare`` or module loading: the attempt kills the process
                     (:mod:`._seccomp`)
time guard           each hook call has a wall-clock limit; past it the process group is
                     killed, the hook fails (the mechanism is off for that trial) and the
                     next call starts a fresh process
===================  =====================================================================

What the child sends back is read only through :mod:`._decode` (byte, depth, string and list
budgets, a typed schema per message); docs/security.md is the whole security model.

Where bubblewrap or libseccomp is missing, :func:`boundary_problems` names what is missing and
the gate refuses generated code instead of running it with fewer layers. The layers, the limits
and bubblewrap's arguments are defined in :mod:`._sandbox`; this module starts the process and
talks to it.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bilevel_optuna._logging import get_logger
from bilevel_optuna.research import _wire
from bilevel_optuna.exceptions import BilevelOptunaError
from bilevel_optuna.research._decode import ProtocolError
from bilevel_optuna.research._decode import clean_text
from bilevel_optuna.research._decode import decode_ready
from bilevel_optuna.research._decode import parse
from bilevel_optuna.research._sandbox import FULL
from bilevel_optuna.research._sandbox import SAFE_ENV
from bilevel_optuna.research._sandbox import Layers
from bilevel_optuna.research._sandbox import Limits
from bilevel_optuna.research._sandbox import boundary_problems
from bilevel_optuna.research._sandbox import bwrap_args

_logger = get_logger(__name__)

_CHILD = Path(__file__).with_name("_child.py")

class BoundaryError(BilevelOptunaError):
    """The guarded process failed: it timed out, died, or could not start."""


class HookTimeout(BoundaryError):
    """A call ran past its time limit; the process was killed."""


class ProcessDied(BoundaryError):
    """The guarded process exited or was killed (memory, CPU, a crash, ``os._exit``)."""


class BadReply(BoundaryError):
    """The guarded process sent a reply that failed :mod:`._decode`; the process was killed."""


class GuardedProcess:
    """One child process with the layers on; thread-safe request/reply with a time limit.

    The process starts on the first :meth:`request` and is started again after it was killed;
    :meth:`close` ends it.
    """

    def __init__(self, *, limits: Limits = Limits(), layers: Layers = FULL) -> None:
        self.limits = limits
        self.layers = layers
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stderr: Any = None
        self.starts = 0

    # ------------------------------------------------------------ lifecycle
    def _command(self) -> list[str]:
        # A script, not ``-m``: running a module would import the package's __init__ first.
        python = [sys.executable, "-I", str(_CHILD)]
        if not self.layers.namespaces:
            return python
        bwrap = shutil.which("bwrap")
        assert bwrap is not None
        return [bwrap, *bwrap_args(self.layers, tmp_bytes=self.limits.tmp_bytes), "--", *python]

    def _start(self, timeout: float) -> None:
        problems = boundary_problems(self.layers)
        if problems:
            raise BoundaryError("cannot build the boundary: " + "; ".join(problems))
        self._stderr = tempfile.TemporaryFile(prefix="bilevel-optuna-guarded-")
        cwd = tempfile.mkdtemp(prefix="bilevel-optuna-guarded-")
        self._proc = _launch(
            self._command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=(
                dict(SAFE_ENV, TMPDIR=cwd, HOME=cwd)
                if not self.layers.namespaces
                else dict(SAFE_ENV)
            ),
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
        self._cwd = cwd
        self.starts += 1
        settings = {
            "rlimits": self.limits.rlimits() if self.layers.rlimits else {},
            "seccomp": (
                ("errno" if self.layers.seccomp_errno else True) if self.layers.seccomp else False
            ),
        }
        data = json.dumps(settings).encode()
        reply = self._exchange(struct.pack(">I", len(data)) + data, timeout)
        try:
            decode_ready(reply)
        except ProtocolError as err:
            self.kill()
            raise BadReply(f"the guarded process did not start: {err}") from None

    def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        shutil.rmtree(getattr(self, "_cwd", ""), ignore_errors=True)

    def close(self) -> None:
        """End the process (closing its pipe first, so it exits on its own when it can)."""
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None and proc.stdin is not None:
                try:
                    proc.stdin.close()
                    proc.wait(timeout=1.0)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            self.kill()
            if self._stderr is not None:
                self._stderr.close()
                self._stderr = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stderr_tail(self, size: int = 400) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0, os.SEEK_END)
        end = self._stderr.tell()
        self._stderr.seek(max(0, end - size))
        return clean_text(self._stderr.read().decode("utf-8", "replace").strip(), size)

    # ------------------------------------------------------------- requests
    def request(
        self,
        message: dict[str, Any],
        timeout: float | None = None,
        *,
        start_timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send one message and wait for the reply; kill the process past ``timeout``.

        The reply has passed :func:`._decode.parse` (bytes, depth, JSON, budgets); its schema
        is the caller's to check. ``start_timeout`` bounds starting the process if it is not
        running (default ``Limits.start_timeout``).
        """
        data = json.dumps(message, separators=(",", ":"), default=_wire._default).encode("utf-8")
        with self._lock:
            if self._proc is None:
                self._start(self.limits.start_timeout if start_timeout is None else start_timeout)
            return self._exchange(
                struct.pack(">I", len(data)) + data,
                self.limits.hook_timeout if timeout is None else timeout,
            )

    def _exchange(self, payload: bytes, timeout: float) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        deadline = time.monotonic() + timeout
        out_fd, in_fd = proc.stdin.fileno(), proc.stdout.fileno()
        os.set_blocking(out_fd, False)
        os.set_blocking(in_fd, False)
        buffer = bytearray()
        sent = 0
        with selectors.DefaultSelector() as selector:
            selector.register(in_fd, selectors.EVENT_READ)
            if payload:
                selector.register(out_fd, selectors.EVENT_WRITE)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.kill()
                    raise HookTimeout(f"timed out after {timeout:g} s; the process was killed")
                for key, _ in selector.select(left):
                    if key.fd == out_fd:
                        try:
                            sent += os.write(out_fd, payload[sent : sent + 65536])
                        except BrokenPipeError:
                            selector.unregister(out_fd)
                            continue
                        if sent >= len(payload):
                            selector.unregister(out_fd)
                        continue
                    chunk = os.read(in_fd, 1 << 20)
                    if not chunk:
                        # The pipe closed; a process that closed it and lives on is still held
                        # to the call's deadline (it must not block the sampler in wait()).
                        try:
                            code = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
                        except subprocess.TimeoutExpired:
                            self.kill()
                            raise HookTimeout(
                                f"closed its pipe and ran past {timeout:g} s; the process was "
                                "killed"
                            ) from None
                        tail = self.stderr_tail()
                        self.kill()
                        raise ProcessDied(
                            _death(code) + (f"; its last output: {tail}" if tail else "")
                        )
                    buffer += chunk
                    if len(buffer) >= 4:
                        (size,) = struct.unpack(">I", bytes(buffer[:4]))
                        if size > self.limits.reply_bytes:
                            self.kill()
                            raise BadReply(
                                f"the guarded process announced a reply of {size} bytes; the "
                                f"budget is {self.limits.reply_bytes} (Limits.reply_bytes)"
                            )
                        if len(buffer) >= 4 + size:
                            if len(buffer) > 4 + size:
                                self.kill()
                                raise BadReply("the guarded process sent more than one reply")
                            try:
                                return parse(bytes(buffer[4:]), self.limits)
                            except ProtocolError as err:
                                self.kill()
                                raise BadReply(f"the guarded process sent {err}") from None


def _launch(command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start the process from a thread that lives as long as it does.

    bubblewrap's ``--die-with-parent`` is ``PR_SET_PDEATHSIG``, which fires when the *thread*
    that started the process ends, not the process: a hook called from the sampler's guard
    thread would see its child killed as soon as that thread returned.
    """
    box: dict[str, Any] = {}
    started = threading.Event()

    def run() -> None:
        try:
            box["proc"] = subprocess.Popen(command, **kwargs)
        except BaseException as err:  # noqa: BLE001 - handed to the caller below
            box["error"] = err
        started.set()
        if "proc" in box:
            box["proc"].wait()

    threading.Thread(target=run, daemon=True, name="bilevel-optuna-guarded").start()
    started.wait()
    if "error" in box:
        raise BoundaryError(f"cannot start the guarded process: {box['error']}") from box["error"]
    return box["proc"]


def _death(code: int) -> str:
    # bubblewrap exits with 128 + the signal that killed the process it ran.
    if 128 < code < 128 + signal.NSIG:
        code = -(code - 128)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        why = {
            "SIGKILL": " (killed: memory, or its time ran out)",
            "SIGXCPU": " (CPU limit)",
            "SIGSYS": " (it tried a forbidden system call: a process, a program, a socket, ...)",
        }
        return f"the guarded process was killed by {name}{why.get(name, '')}"
    return f"the guarded process exited with status {code}"
