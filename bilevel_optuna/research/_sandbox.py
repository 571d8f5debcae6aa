"""What the boundary is built of: its layers, the limits of the guarded process, and the
bubblewrap command line that makes its namespaces.

:class:`Layers` says which layers are on (all of them outside tests), :class:`Limits` the
resource and time limits, :func:`boundary_problems` what keeps a layer from working on this
machine; :mod:`._boundary` starts and talks to the process built from them. The whole security
model is in ``docs/security.md`` and the table of layers in :mod:`._boundary`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess
import sys

from bilevel_optuna.research import _seccomp

#: Environment the child gets: nothing of the parent's.
SAFE_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONHASHSEED": "0",
}



@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits of the guarded process.

    Args:
        memory_bytes: Address space (``RLIMIT_AS``); the interpreter with numpy and Optuna
            takes about 0.6 GiB of it.
        cpu_seconds: CPU time over the process's whole life (``RLIMIT_CPU``); a study's worth
            of hook calls, not one call (that is ``hook_timeout``).
        open_files: ``RLIMIT_NOFILE``.
        file_bytes: Largest file it may write, in its own ``/tmp`` (``RLIMIT_FSIZE``).
        processes: ``RLIMIT_NPROC`` (tasks, threads included).
        tmp_bytes: Size of its private ``/tmp``.
        hook_timeout: Wall-clock seconds one hook call may take.
        start_timeout: Wall-clock seconds to start the process and load the source the first
            time.
        restart_timeout: Wall-clock seconds for any start after the first attempt (the
            interpreter's files are then in the page cache): a child that keeps dying costs a
            trial at most this much.
        max_restarts: Starts after the first one, per mechanism per study; past them the
            mechanism is disabled for the study (recorded, shown by ``status``).
        restart_backoff: Seconds to wait after a death before the next start, from the second
            restart on (the first is at once), doubled each time; calls in between fail at
            once instead of waiting.
        reply_bytes: Largest reply the parent reads from the child (checked on the length
            prefix, before the body is read).
        record_bytes: Largest ``context.record`` entry kept per hook call (its JSON); a larger
            one is stored as a summary (its size and first keys).
        notes_chars: Characters of notes (they reach the model's prompt and the stored
            prompts) kept from one hook's reply; notes past it are dropped.
        string_chars: Longest string in a reply (names, notes, keys, values).
        list_items: Most items of any list or object in a reply.
        depth: Deepest nesting of a reply, counted before it is parsed.
    """

    memory_bytes: int = 512 * 1024**2
    cpu_seconds: int = 600
    open_files: int = 64
    file_bytes: int = 16 * 1024**2
    processes: int = 8
    tmp_bytes: int = 64 * 1024**2
    hook_timeout: float = 3.0
    start_timeout: float = 60.0
    restart_timeout: float = 5.0
    max_restarts: int = 3
    restart_backoff: float = 1.0
    reply_bytes: int = 1024**2
    record_bytes: int = 16 * 1024
    notes_chars: int = 4096
    string_chars: int = 4096
    list_items: int = 10_000
    depth: int = 32

    def rlimits(self) -> dict[str, int]:
        return {
            "RLIMIT_AS": self.memory_bytes,
            "RLIMIT_CPU": self.cpu_seconds,
            "RLIMIT_NOFILE": self.open_files,
            "RLIMIT_FSIZE": self.file_bytes,
            "RLIMIT_NPROC": self.processes,
            "RLIMIT_CORE": 0,
        }


@dataclasses.dataclass(frozen=True)
class Layers:
    """Which layers are on. Everything is on in production; tests switch single layers on to
    show what each one stops alone. The environment is always scrubbed."""

    namespaces: bool = True
    rlimits: bool = True
    seccomp: bool = True
    #: Forbidden system calls fail with ``EPERM`` instead of killing the process: the filter as
    #: it was before issue 22, kept for the tests' controls only.
    seccomp_errno: bool = False

    @property
    def complete(self) -> bool:
        return self.namespaces and self.rlimits and self.seccomp


FULL = Layers()


@functools.lru_cache(maxsize=1)
def _bwrap_problem() -> str | None:
    path = shutil.which("bwrap")
    if path is None:
        return (
            "bubblewrap is not installed: `apt-get install bubblewrap` (Debian/Ubuntu) or your "
            "distribution's package"
        )
    probe = subprocess.run(
        [path, *bwrap_args(Layers(), tmp_bytes=1024**2), "--", "/bin/true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return (
            f"bubblewrap cannot create namespaces here ({probe.stderr.strip()[:200]}); allow "
            "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1) or run as root"
        )
    return None


def boundary_problems(layers: Layers = FULL) -> list[str]:
    """What keeps the boundary from being built on this machine (empty: all layers work)."""
    problems = []
    if not sys.platform.startswith("linux"):
        return [f"the boundary needs Linux namespaces; this is {sys.platform}"]
    if layers.namespaces:
        problem = _bwrap_problem()
        if problem:
            problems.append(problem)
    if layers.seccomp:
        problem = _seccomp.available()
        if problem:
            problems.append(problem)
    return problems


def _visible_paths() -> list[str]:
    """What the child may read: the interpreter, its standard library, the site-packages and
    this package's folders; not ``sys.path`` as a whole, which may hold the working folder (and
    a SQLite database in it)."""
    import importlib.util
    import site
    import sysconfig

    paths = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
    }
    paths.update(
        sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")
    )
    paths.update(site.getsitepackages())
    for name in ("bilevel_optuna", "bilevel_optuna.samplers"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            paths.update(spec.submodule_search_locations)
    paths = {os.path.abspath(p) for p in paths if p}
    paths |= {os.path.realpath(p) for p in paths}
    kept: list[str] = []
    for p in sorted(paths):
        if os.path.isdir(p) and not any(p.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(p)
    return kept


def bwrap_args(layers: Layers, *, tmp_bytes: int) -> list[str]:
    """bubblewrap's arguments: read-only system and package folders, a private ``/tmp`` of
    ``tmp_bytes``, every namespace new, no capability, only :data:`SAFE_ENV` as environment."""
    args = []
    for system in ("/usr", "/etc/ld.so.cache", "/etc/alternatives"):
        if os.path.exists(system):
            args += ["--ro-bind", system, system]
    for link in ("bin", "lib", "lib64", "sbin"):
        target = f"/{link}"
        if os.path.islink(target):
            args += ["--symlink", os.readlink(target), target]
        elif os.path.isdir(target):
            args += ["--ro-bind", target, target]
    visible = [p for p in _visible_paths() if not p.startswith("/usr/")]
    # A package checked out under /tmp (a CI clone, say) is bound again after the private
    # /tmp is mounted over it: bubblewrap applies its mounts in order.
    under_tmp = [p for p in visible if p == "/tmp" or p.startswith("/tmp/")]
    for path in visible:
        if path not in under_tmp:
            args += ["--ro-bind", path, path]
    args += [
        "--dev", "/dev",
        "--proc", "/proc",
        "--size", str(tmp_bytes), "--tmpfs", "/tmp",
    ]  # fmt: skip
    for path in under_tmp:
        args += ["--ro-bind", path, path]
    args += [
        "--remount-ro", "/",
        "--remount-ro", "/dev",
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        "--clearenv",
        "--chdir", "/tmp",
    ]  # fmt: skip
    for key, value in SAFE_ENV.items():
        args += ["--setenv", key, value]
    return args
