"""Whether llama.cpp's extra CPU buffer types (AMX, weight repacking) run on this machine.

Some virtual machines list AMX in /proc/cpuinfo without enabling it, and llama.cpp's AMX kernels
then die with SIGILL on the first batch; a child process finds out, once per llama.cpp build,
CPU, kernel and model (the answer is cached under ``~/.cache/bilevel-optuna``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
import sys
import threading
from pathlib import Path

from bilevel_optuna._logging import get_logger
from bilevel_optuna.chat._llama._compat import import_llama_cpp

_logger = get_logger(__name__)

_PROBE_CACHE_NAME = "llama-cpu-check.json"
_PROBE_LOCK = threading.Lock()
# Seconds the child process that checks the CPU's AMX instructions may take.
_PROBE_TIMEOUT_S = 120.0
# Loads one model and evaluates a few tokens: on machines whose CPU lists AMX but whose
# hypervisor does not enable it, llama.cpp's AMX kernels die with SIGILL on the first batch.
_PROBE = (
    "import sys, llama_cpp\n"
    "m = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, verbose=False)\n"
    "m.eval(m.tokenize(b'one two three four five six seven eight'))\n"
)


def all_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _probe_extra_buffers(model_path: str) -> bool:
    """Evaluate a few tokens in a child process; False when the child dies (SIGILL)."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", _PROBE, model_path],
            capture_output=True,
            timeout=_PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return True  # slow, not dead: nothing says the kernels are broken
    if result.returncode == 0:
        return True
    _logger.warning(
        "llama.cpp's AMX kernels crash on this machine (exit code %d: the CPU lists AMX but "
        "the system does not enable it); loading without extra buffer types, which is slower. "
        "For full speed rebuild llama-cpp-python without AMX: CMAKE_ARGS='-DGGML_NATIVE=OFF "
        "-DGGML_AVX2=ON -DGGML_AVX512=ON -DGGML_FMA=ON -DGGML_F16C=ON' pip install "
        "--no-cache-dir --force-reinstall llama-cpp-python",
        result.returncode,
    )
    return False


def _probe_cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bilevel-optuna" / _PROBE_CACHE_NAME


def _probe_key(model_path: str, cpuinfo: str) -> str:
    """What the probe's answer depends on: llama.cpp's build, the CPU, the kernel, the model."""
    import llama_cpp

    lib = Path(llama_cpp.__file__).parent / "lib"
    builds = sorted(
        (p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in lib.glob("libggml-cpu*")
    )
    cpu = [line for line in cpuinfo.splitlines() if line.startswith(("model name", "flags"))]
    parts = [llama_cpp.__version__, builds, cpu[:2], platform.release(), model_path]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


@functools.lru_cache(maxsize=None)
def extra_buffers_work(model_path: str) -> bool:
    """Whether llama.cpp's extra CPU buffer types (AMX, weight repacking) run on this machine.

    Only a CPU that lists AMX is checked, in a child process so that a SIGILL kills the child
    rather than the caller. The answer is kept for this process and, keyed by the llama.cpp
    build, CPU, kernel and model, in a file under ``~/.cache/bilevel-optuna`` for the next
    processes (each check costs a model load, seconds on a busy machine).
    """
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True
    if "amx_tile" not in cpuinfo:
        return True
    with _PROBE_LOCK:  # threads arriving together check once: the others read the file
        return _cached_probe(model_path, cpuinfo)


def _cached_probe(model_path: str, cpuinfo: str) -> bool:
    import_llama_cpp()
    key = _probe_key(model_path, cpuinfo)
    cache = _probe_cache_path()
    try:
        known = json.loads(cache.read_text())
        if isinstance(known.get(key), bool):
            return bool(known[key])
    except (OSError, ValueError, AttributeError):
        known = {}
    works = _probe_extra_buffers(model_path)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        known = known if isinstance(known, dict) else {}
        known[key] = works
        partial = cache.with_name(f"{cache.name}.{os.getpid()}")
        partial.write_text(json.dumps(known))
        os.replace(partial, cache)
    except OSError:
        pass  # no cache then: the next process checks again
    return works
