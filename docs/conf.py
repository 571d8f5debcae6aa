"""Sphinx configuration of the bilevel-optuna documentation.

Build locally with ``python -m sphinx -W -n -b html docs docs/_build/html`` (warnings are
errors and every cross-reference must resolve, as in CI: ``tests/docs_tests/test_build.py``).
"""

from __future__ import annotations

import os
import sys

# The package is installed in development mode (``pip install -e .``); this keeps the build
# working from a plain checkout as well.
sys.path.insert(0, os.path.abspath(".."))
sys.path.insert(0, os.path.abspath("_ext"))

from bilevel_optuna import __version__  # noqa: E402

project = "bilevel-optuna"
author = "the bilevel-optuna authors"
copyright = "2026, the bilevel-optuna authors"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "cli_reference",
    "public_api",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "_tools", "_static/README.md", "examples", "notes"]

myst_enable_extensions = ["colon_fence", "deflist"]
# Headings get anchors, so a page can link to ``other.md#a-section``.
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "alabaster"
html_static_path = ["_static"]
html_title = f"bilevel-optuna {release}"
html_theme_options = {
    "description": "An LLM proposes Optuna trials; a second Optuna loop tunes the proposer.",
    "fixed_sidebar": True,
}

# Nitpicky mode (-n) checks every cross-reference. There is no network in CI, so intersphinx
# cannot fetch other projects' inventories: names of other packages are listed here. Names of
# this package are never ignored: each must resolve to the API reference.
nitpicky = True
_EXTERNAL_MODULES = (
    "optuna",
    "numpy",
    "np",
    "scipy",
    "sqlalchemy",
    "openai",
    "llama_cpp",
    "torch",
    "matplotlib",
    "plotly",
    "jsonschema",
    "referencing",
    "tqdm",
    "argparse",
    "collections",
    "concurrent",
    "contextlib",
    "dataclasses",
    "datetime",
    "enum",
    "logging",
    "os",
    "pathlib",
    "random",
    "re",
    "subprocess",
    "threading",
    "types",
    "typing",
    "typing_extensions",
    "_thread",
    "multiprocessing",
    "http",
    "socket",
    "io",
    "ast",
    "abc",
)
# Names of other packages that annotations written under ``TYPE_CHECKING`` leave unqualified.
_EXTERNAL_BARE_NAMES = (
    "ArrayLike",  # numpy.typing
    "ArtifactStore",  # optuna.artifacts
    "BaseDistribution",  # optuna.distributions
    "BaseSampler",  # optuna.samplers
    "BaseStorage",  # optuna.storages
    "Callback",  # optuna.study
    "FrozenTrial",  # optuna.trial
    "Path",  # pathlib
    "Study",  # optuna.study
    "TrialState",  # optuna.trial
)
nitpick_ignore_regex = [(r"py:.*", rf"{module}(\..*)?") for module in _EXTERNAL_MODULES]
nitpick_ignore = [("py:class", name) for name in _EXTERNAL_BARE_NAMES]
