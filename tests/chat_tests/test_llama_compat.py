"""chat/_llama/_compat.py: what the embedded model uses of llama-cpp-python, and the error that
names the version to install where an install lacks it."""

from __future__ import annotations

import configparser
import subprocess
import sys
import types
from pathlib import Path

import pytest

from bilevel_optuna.chat._llama import _compat
from bilevel_optuna.exceptions import ConfigurationError

llama_cpp = pytest.importorskip("llama_cpp")
SETUP_CFG = Path(__file__).resolve().parents[2] / "setup.cfg"


def _without(dotted: str) -> types.ModuleType:
    """A stand-in for llama_cpp that is the real one less one attribute."""
    *parents, last = dotted.split(".")

    def copy(obj: object, path: list[str]) -> object:
        clone = types.SimpleNamespace(**{k: getattr(obj, k) for k in dir(obj) if k != "__class__"})
        if path:
            setattr(clone, path[0], copy(getattr(obj, path[0]), path[1:]))
        else:
            delattr(clone, last)
        return clone

    return copy(llama_cpp, parents)  # type: ignore[return-value]


def test_the_installed_version_has_everything() -> None:
    assert _compat.missing_internals(llama_cpp) == []
    _compat.check_llama_cpp(llama_cpp)


@pytest.mark.parametrize(
    "dotted",
    [
        "_internals.LlamaContext.kv_cache_seq_cp",
        "Llama.generate",
        "llama_cpp.llama_context_default_params",
        "llama_grammar.json_schema_to_gbnf",
    ],
)
def test_a_missing_internal_names_itself_and_the_version_to_install(dotted: str) -> None:
    stand_in = _without(dotted)
    assert _compat.missing_internals(stand_in) == [dotted]
    with pytest.raises(ConfigurationError) as info:
        _compat.check_llama_cpp(stand_in)
    message = str(info.value)
    assert f"llama-cpp-python {llama_cpp.__version__} lacks" in message
    assert dotted in message
    assert f"pip install 'llama-cpp-python{_compat.TESTED_RANGE}'" in message


def test_a_missing_struct_field_is_named() -> None:
    class Params:  # llama_context_params without kv_unified
        _fields_ = [("n_seq_max", int)]

    stand_in = _without("llama_cpp.llama_context_params")
    stand_in.llama_cpp.llama_context_params = Params  # type: ignore[attr-defined]
    assert _compat.missing_internals(stand_in) == ["llama_cpp.llama_context_params.kv_unified"]


def test_a_loaded_model_lacking_an_attribute_is_named() -> None:
    with pytest.raises(ConfigurationError, match=r"Llama\._input_ids"):
        _compat.check_loaded(types.SimpleNamespace(_ctx=1, _model=1, n_tokens=0), "9.9.9")


def test_tested_range_is_the_requirement_in_setup_cfg() -> None:
    config = configparser.ConfigParser()
    config.read(SETUP_CFG)
    requirements = config["options"]["install_requires"].splitlines()
    assert f"llama-cpp-python{_compat.TESTED_RANGE}" in [r.strip() for r in requirements]


def test_the_check_runs_when_the_embedded_backend_is_imported() -> None:
    # In a fresh process, a llama_cpp lacking one internal fails at the first import of the
    # backend's loader, not of bilevel_optuna, with the version to install.
    code = (
        "import llama_cpp._internals as i\n"
        "del i.LlamaContext.kv_cache_seq_cp\n"
        "import bilevel_optuna, bilevel_optuna.chat\n"
        "from bilevel_optuna.chat._llama._compat import import_llama_cpp\n"
        "from bilevel_optuna.exceptions import ConfigurationError\n"
        "try:\n"
        "    import_llama_cpp()\n"
        "except ConfigurationError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "lacks what the embedded model uses of it: _internals.LlamaContext." in out.stdout
    assert _compat.TESTED_RANGE in out.stdout
