"""What the embedded model uses of llama-cpp-python, checked once when it is imported.

The decoder writes several answers side by side in one KV cache and checks the grammar lazily;
llama-cpp-python's public API does neither, so the code uses its internals: the ``_internals``
wrappers, ``Llama._input_ids`` / ``_ctx`` / ``_model``, ``Llama.generate`` (wrapped for the
prefix cache), and the module-level defaults ``llama_model_default_params`` /
``llama_context_default_params`` (replaced for one construction). These change between
releases without notice, so the requirement is bounded to the tested range
(:data:`TESTED_RANGE`, also in setup.cfg) and, because an install can still hold another
version (``--no-deps``, a pinned environment), every name is checked here on import, with an
error that names what is missing and the version to install.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

from bilevel_optuna.exceptions import ConfigurationError

#: The llama-cpp-python versions this code was tested with (keep in step with setup.cfg).
TESTED_RANGE = ">=0.3.16,<=0.3.36"
_INSTALL = f"pip install 'llama-cpp-python{TESTED_RANGE}'"
_OMP_WAIT_POLICY = "OMP_WAIT_POLICY"

# Dotted attribute paths, from the llama_cpp package, that the embedded model uses.
REQUIRED_ATTRIBUTES: tuple[str, ...] = (
    "__version__",
    "Llama",
    "Llama.generate",
    "Llama.eval",
    "Llama.reset",
    "Llama.tokenize",
    "Llama.detokenize",
    "Llama.n_vocab",
    "Llama.token_eos",
    "Llama.token_bos",
    "Llama.create_chat_completion",
    "Llama.close",
    "llama_token_data",
    "llama_token_data_array",
    "llama_sampler_apply",
    "llama_get_logits_ith",
    "llama_vocab_is_eog",
    "llama_cpp.llama_model_default_params",
    "llama_cpp.llama_context_default_params",
    "_internals.LlamaSampler.add_grammar",
    "_internals.LlamaSampler.add_greedy",
    "_internals.LlamaSampler.add_top_k",
    "_internals.LlamaSampler.add_typical",
    "_internals.LlamaSampler.add_top_p",
    "_internals.LlamaSampler.add_min_p",
    "_internals.LlamaSampler.add_temp",
    "_internals.LlamaSampler.add_dist",
    "_internals.LlamaSampler.sample",
    "_internals.LlamaSampler.accept",
    "_internals.LlamaSampler.close",
    "_internals.LlamaTokenDataArray.copy_logits",
    "_internals.LlamaBatch.reset",
    "_internals.LlamaBatch.close",
    "_internals.LlamaContext.decode",
    "_internals.LlamaContext.kv_cache_seq_cp",
    "_internals.LlamaContext.kv_cache_seq_rm",
    "_internals.LlamaModel.token_get_text",
    "llama_chat_format.Jinja2ChatFormatter",
    "llama_grammar.LlamaGrammar.from_string",
    "llama_grammar.json_schema_to_gbnf",
)
# Fields of llama.cpp's parameter structs that the replaced defaults set.
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "llama_cpp.llama_model_params": ("use_extra_bufts",),
    "llama_cpp.llama_context_params": ("n_seq_max", "kv_unified"),
}
# Attributes of a loaded Llama (set in its constructor, so checked on the first model).
REQUIRED_INSTANCE_ATTRIBUTES: tuple[str, ...] = ("_input_ids", "_ctx", "_model", "n_tokens")
_checked: list[ModuleType] = []  # the module, once imported and checked


def _resolve(root: ModuleType | object, dotted: str) -> bool:
    value: object = root
    for part in dotted.split("."):
        if not hasattr(value, part):
            return False
        value = getattr(value, part)
    return True


def missing_internals(llama_cpp: ModuleType | object) -> list[str]:
    """The names :data:`REQUIRED_ATTRIBUTES` and :data:`REQUIRED_FIELDS` list that
    ``llama_cpp`` (the package, or a stand-in in tests) lacks."""
    missing = [name for name in REQUIRED_ATTRIBUTES if not _resolve(llama_cpp, name)]
    for struct, fields in REQUIRED_FIELDS.items():
        if not _resolve(llama_cpp, struct):
            missing.append(struct)
            continue
        value: object = llama_cpp
        for part in struct.split("."):
            value = getattr(value, part)
        present = {f[0] for f in getattr(value, "_fields_", ())}
        missing.extend(f"{struct}.{f}" for f in fields if f not in present)
    return missing


def _incompatible(version: str, missing: list[str]) -> ConfigurationError:
    return ConfigurationError(
        f"llama-cpp-python {version} lacks what the embedded model uses of it: "
        f"{', '.join(missing)}. bilevel-optuna was tested with llama-cpp-python{TESTED_RANGE}: "
        f"{_INSTALL} (it compiles llama.cpp, a few minutes), or use an endpoint with the "
        "spec 'openai:MODEL@BASE_URL'."
    )


def check_llama_cpp(llama_cpp: ModuleType | object) -> None:
    """Raise :class:`ConfigurationError` naming the version to install where ``llama_cpp``
    lacks a name the embedded model uses."""
    missing = missing_internals(llama_cpp)
    if missing:
        raise _incompatible(str(getattr(llama_cpp, "__version__", "(unknown version)")), missing)


def check_loaded(llama: object, version: str) -> None:
    """The same check for the attributes a constructed ``Llama`` must carry."""
    missing = [f"Llama.{a}" for a in REQUIRED_INSTANCE_ATTRIBUTES if not hasattr(llama, a)]
    if missing:
        raise _incompatible(version, missing)


def import_llama_cpp() -> ModuleType:
    """Import llama_cpp (checked, see the module's docstring) with OpenMP threads that sleep,
    rather than spin, while they wait.

    llama.cpp's OpenMP threads spin at every barrier by default; on a machine shared with
    other work (Optuna workers, an objective's training) a spinning thread holds a core its
    partner needs, and a 2-thread answer measured here took 20-30 s instead of 2-3 s. libgomp
    reads ``OMP_WAIT_POLICY`` once, when llama_cpp's libraries load, so it is set for that
    moment only (unless the user set it) and then restored.
    """
    if _checked:
        return _checked[0]
    previous = os.environ.get(_OMP_WAIT_POLICY)
    if previous is None and "llama_cpp" not in sys.modules:
        os.environ[_OMP_WAIT_POLICY] = "PASSIVE"
    else:
        previous = previous or ""  # already set, or the libraries already loaded: leave it
    try:
        import llama_cpp
        import llama_cpp._internals  # noqa: F401
        import llama_cpp.llama_chat_format  # noqa: F401
        import llama_cpp.llama_cpp  # noqa: F401
        import llama_cpp.llama_grammar  # noqa: F401
    except ImportError as err:
        raise ConfigurationError(
            f"The embedded model needs llama-cpp-python: {_INSTALL} (it compiles llama.cpp, "
            "a few minutes), or use an endpoint with the spec 'openai:MODEL@BASE_URL'."
        ) from err
    finally:
        if previous is None:
            os.environ.pop(_OMP_WAIT_POLICY, None)
    check_llama_cpp(llama_cpp)
    _checked.append(llama_cpp)
    return llama_cpp
