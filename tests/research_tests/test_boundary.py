"""Each layer of the boundary on its own, with the attack checked for effect (the file, the
connection), and a control without the layer where the attack does take effect."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sources as S
from guard import needs_boundary
from helpers import prepare_once
from helpers import proxy

from bilevel_optuna.research._proxy import GuardedHookError
from bilevel_optuna.research._sandbox import Layers
from bilevel_optuna.research._sandbox import Limits

NONE = Layers(namespaces=False, rlimits=False, seccomp=False)
NAMESPACES = Layers(namespaces=True, rlimits=False, seccomp=False)
RLIMITS = Layers(namespaces=False, rlimits=True, seccomp=False)
SECCOMP = Layers(namespaces=False, rlimits=False, seccomp=True)
SECCOMP_ERRNO = Layers(namespaces=False, rlimits=False, seccomp=True, seccomp_errno=True)

pytestmark = needs_boundary


# ------------------------------------------------------------------ file system
def test_without_layers_the_file_write_takes_effect(tmp_path: Path) -> None:
    target = tmp_path / "written.txt"
    _, error = prepare_once(S.fill(S.WRITE_FILE, path=target), NONE)
    assert error is None
    assert target.exists()  # the control: the attack works where nothing stops it


def test_namespaces_stop_a_file_write_outside_the_private_tmp(tmp_path: Path) -> None:
    target = tmp_path / "written.txt"
    _, error = prepare_once(S.fill(S.WRITE_FILE, path=target), NAMESPACES)
    assert error is not None and ("Read-only" in error or "No such file" in error)
    assert not target.exists()


def test_namespaces_hide_files_outside_the_interpreter_and_package(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    source = S.fill(
        "from bilevel_optuna.samplers import Mechanism\n"
        "class R(Mechanism):\n    name = 'reader'\n"
        "    def prepare(self, context):\n"
        "        context.notes.append(open('{path}').read())\n",
        path=secret,
    )
    ctx, error = prepare_once(source, NAMESPACES)
    assert error is not None and "No such file" in error
    assert "s3cret" not in " ".join(ctx.notes)
    ctx, error = prepare_once(source, NONE)
    assert error is None and ctx.notes == ["s3cret"]  # control


# ---------------------------------------------------------------------- network
def test_without_layers_the_connection_is_made(listener) -> None:  # type: ignore[no-untyped-def]
    _, error = prepare_once(S.fill(S.OPEN_SOCKET, port=listener.port), NONE)
    assert error is None
    assert listener.connections == 1


def test_namespaces_stop_a_connection(listener) -> None:  # type: ignore[no-untyped-def]
    _, error = prepare_once(S.fill(S.OPEN_SOCKET, port=listener.port), NAMESPACES)
    assert error is not None and "Connection refused" in error
    assert listener.connections == 0


def test_seccomp_stops_a_connection(listener) -> None:  # type: ignore[no-untyped-def]
    _, error = prepare_once(S.fill(S.OPEN_SOCKET, port=listener.port), SECCOMP)
    assert error is not None and "SIGSYS" in error  # the attempt kills the process
    assert listener.connections == 0
    _, error = prepare_once(S.fill(S.OPEN_SOCKET, port=listener.port), SECCOMP_ERRNO)
    assert error is not None and "Operation not permitted" in error
    assert listener.connections == 0


# -------------------------------------------------------------------- processes
def test_seccomp_stops_a_fork(tmp_path: Path) -> None:
    target = tmp_path / "child.txt"
    _, error = prepare_once(S.fill(S.FORK, path=target), SECCOMP)
    assert error is not None and "SIGSYS" in error
    assert not target.exists()
    _, error = prepare_once(S.fill(S.FORK, path=target), NONE)
    assert error is None and target.exists()  # control


def test_seccomp_stops_running_a_program(tmp_path: Path) -> None:
    target = tmp_path / "exec.txt"
    source = S.fill(
        "import subprocess\nfrom bilevel_optuna.samplers import Mechanism\n"
        "class X(Mechanism):\n    name = 'execer'\n"
        "    def prepare(self, context):\n"
        "        subprocess.run(['/bin/sh', '-c', 'echo x > {path}'], check=True)\n",
        path=target,
    )
    _, error = prepare_once(source, SECCOMP)
    assert error is not None and "SIGSYS" in error
    assert not target.exists()


# ---------------------------------------------------------------------- rlimits
def test_rlimits_stop_a_memory_hog() -> None:
    _, error = prepare_once(S.MEMORY_HOG, RLIMITS, Limits(hook_timeout=60))
    assert error is not None and "MemoryError" in error


def test_rlimits_stop_a_hog_of_cpu_time() -> None:
    _, error = prepare_once(S.ENDLESS_LOOP, RLIMITS, Limits(cpu_seconds=2, hook_timeout=60))
    assert error is not None and "SIGXCPU" in error


def test_rlimits_cap_file_size_and_open_files() -> None:
    big = (
        "from bilevel_optuna.samplers import Mechanism\nclass B(Mechanism):\n    name = 'big'\n"
        "    def prepare(self, context):\n"
        "        open('big.bin', 'wb').write(b'x' * (4 * 1024 * 1024))\n"
    )
    _, error = prepare_once(big, RLIMITS, Limits(file_bytes=1024 * 1024))
    assert error is not None and "File too large" in error
    many = (
        "from bilevel_optuna.samplers import Mechanism\nclass M(Mechanism):\n    name = 'many'\n"
        "    def prepare(self, context):\n"
        "        self.files = [open('f%d' % i, 'w') for i in range(200)]\n"
    )
    _, error = prepare_once(many, RLIMITS, Limits(open_files=32))
    assert error is not None and "Too many open files" in error


# ------------------------------------------------------------- the environment
@pytest.mark.parametrize("layers", [NONE, Layers()], ids=["no-layers", "all-layers"])
def test_the_environment_holds_no_secret(monkeypatch: pytest.MonkeyPatch, layers: Layers) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    monkeypatch.setenv("BILEVEL_OPTUNA_STORAGE", "postgresql://user:pw@db/x")
    ctx, error = prepare_once(S.READ_ENV, layers)
    assert error is None
    assert ctx.notes and "sk-test-secret" not in ctx.notes[0] and "pw@db" not in ctx.notes[0]


# ---------------------------------------------------------------- the time guard
def test_an_overrunning_hook_is_killed_and_the_next_call_starts_afresh() -> None:
    source = (
        "from bilevel_optuna.samplers import Mechanism\nclass S(Mechanism):\n    name = 'slow'\n"
        "    def prepare(self, context):\n"
        "        if len(context.notes) == 0:\n"
        "            while True:\n                pass\n"
        "        context.notes.append('ran')\n"
    )
    from helpers import context

    mechanism = proxy(source, Layers(), Limits(hook_timeout=1.0))
    try:
        with pytest.raises(GuardedHookError, match="timed out"):
            mechanism.prepare(context())
        first = mechanism._process
        assert first is not None and first.pid is None  # killed
        ctx = context()
        ctx.notes.append("go")
        mechanism.prepare(ctx)
        assert ctx.notes == ["go", "ran"]
        assert first.starts == 2
    finally:
        mechanism.close()


def test_a_hard_exit_is_a_hook_error_not_the_samplers_exit() -> None:
    _, error = prepare_once(S.HARD_EXIT, Layers())
    assert error is not None and "exited with status 7" in error


def test_the_guarded_process_is_another_process() -> None:
    source = (
        "from bilevel_optuna.samplers import Mechanism\nclass P(Mechanism):\n    name = 'pid'\n"
        "    def prepare(self, context):\n        context.record['pid'] = {'x': 1}\n"
        "        context.record[self.name] = {'ran': True}\n"
    )
    mechanism = proxy(source, Layers())
    from helpers import context

    ctx = context()
    try:
        mechanism.prepare(ctx)
        assert mechanism._process is not None and mechanism._process.pid not in (None, os.getpid())
    finally:
        mechanism.close()
    # Only the mechanism's own record entry comes back.
    assert ctx.record == {"under_test": {"ran": True}}
