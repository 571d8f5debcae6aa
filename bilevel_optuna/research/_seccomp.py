"""A seccomp filter for the guarded process, through libseccomp (Debian's ``libseccomp2``).

Loaded by the child itself after its own imports and before any generated code runs; a filter
cannot be removed once loaded, and ``no_new_privs`` is set with it. It kills the process
(``SIGSYS``) on: creating processes (``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD``;
``clone3`` gets ``ENOSYS`` so the C library falls back to ``clone``, whose flags the filter can
read), running programs (``execve``), sockets of any family, and the system calls that leave or
reshape the sandbox (``ptrace``, ``mount``, ``unshare``, ``setns``, ``chroot``, module and
keyring calls, ``bpf``, ``perf_event_open``, ...). Everything else is allowed: the child only
computes and talks over pipes it already holds.

Why kill and not refuse with ``EPERM``: a mechanism that tried a forbidden call and caught the
error would otherwise pass the gate's smoke run looking harmless (issue 22, finding 8). Killed,
the attempt is the hook's failure, recorded as "a forbidden system call", and the gate rejects
the source. ``ERRNO_ACTION`` switches back to ``EPERM`` (the boundary's tests use it to show
what each call would have done).

Why ctypes and not a binding: PyPI has no well-kept libseccomp binding for this Python (Debian's
``python3-seccomp`` is built for Debian's own interpreter), and the five calls used here are
libseccomp's stable C API.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno

#: libseccomp actions (seccomp.h).
_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_KILL_PROCESS = 0x80000000


def _act_errno(code: int) -> int:
    return 0x00050000 | (code & 0x0000FFFF)


_SCMP_CMP_MASKED_EQ = 7
_CLONE_THREAD = 0x00010000

#: Forbidden: the process is killed.
DENIED_SYSCALLS = (
    "fork",
    "vfork",
    "execve",
    "execveat",
    "socket",
    "socketpair",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "reboot",
    "swapon",
    "swapoff",
    "userfaultfd",
    "io_uring_setup",
)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class SeccompUnavailable(RuntimeError):
    """libseccomp cannot be loaded, or the kernel refused the filter."""


def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as err:
        raise SeccompUnavailable(
            f"libseccomp is not installed ({err}); install Debian's libseccomp2."
        ) from err
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_load.restype = ctypes.c_int
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.restype = None
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def available() -> str | None:
    """``None`` when the filter can be built here, else the reason it cannot."""
    try:
        _library()
    except SeccompUnavailable as err:
        return str(err)
    return None


def install(*, kill: bool = True) -> None:
    """Load the filter into this process (and every thread it starts later).

    Args:
        kill: Kill the process on a forbidden call (production); ``False`` refuses it with
            ``EPERM`` instead.
    """
    deny = _SCMP_ACT_KILL_PROCESS if kill else _act_errno(errno.EPERM)
    lib = _library()
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:

        def add(name: str, action: int, *cmps: _ArgCmp) -> None:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:  # not on this architecture
                return
            array = (_ArgCmp * len(cmps))(*cmps) if cmps else None
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array)
            if rc < 0:
                raise SeccompUnavailable(f"seccomp_rule_add({name}) failed: {rc}")

        for name in DENIED_SYSCALLS:
            add(name, deny)
        # clone: threads (CLONE_THREAD set) are allowed, new processes are not.
        add("clone", deny, _ArgCmp(0, _SCMP_CMP_MASKED_EQ, _CLONE_THREAD, 0))
        add("clone3", _act_errno(errno.ENOSYS))
        rc = lib.seccomp_load(ctx)
        if rc < 0:
            raise SeccompUnavailable(f"seccomp_load failed: {rc}")
    finally:
        lib.seccomp_release(ctx)
