"""Sphinx glue for a package whose public names live in private modules.

Optuna's layout (``samplers/_tabu.py`` holds ``TabuMechanism``, ``samplers/__init__.py``
re-exports it) means that autodoc sees ``bilevel_optuna.samplers._tabu.TabuMechanism`` in type
hints, while the reference documents ``bilevel_optuna.samplers.TabuMechanism``. Two pieces
connect them:

- ``missing-reference``: a reference to a private path is resolved to the public name of the
  same object (the first public module that exports it, in :data:`PUBLIC_MODULES` order). A
  reference to an object that no public module exports stays unresolved, so nitpicky mode
  still reports it.
- ``.. public-aliases:: MODULE``: documents each name of ``MODULE.__all__`` that another public
  module already documents as a short "alias of" entry, so the top-level package's
  re-exports are targets of their own without repeating the whole docstring.

Written here rather than taken from a library: sphinx-autodoc2 and autoapi resolve re-exports by
reading source files, which would replace autodoc and napoleon for two small hooks.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

# Where each public name is documented in full, most specific first: a name exported by several
# modules is documented in the first and is an alias in the others.
PUBLIC_MODULES = (
    "bilevel_optuna.samplers",
    "bilevel_optuna.objectives",
    "bilevel_optuna.studies",
    "bilevel_optuna.stats",
    "bilevel_optuna.research",
    "bilevel_optuna.chat",
    "bilevel_optuna.exceptions",
    "bilevel_optuna",
)


def public_names(module_name: str) -> list[str]:
    """The module's public names: its ``__all__``, else what it defines without a leading _."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module_name
    ]


def _private_path(obj: Any) -> str | None:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    return f"{module}.{qualname}"


def canonical_names() -> dict[str, str]:
    """Map each exported object's defining path (and its own public paths) to its home."""
    mapping: dict[str, str] = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in public_names(module_name):
            obj = getattr(module, name)
            public = f"{module_name}.{name}"
            if inspect.ismodule(obj):
                continue
            private = _private_path(obj)
            if private is not None and private.startswith("bilevel_optuna"):
                mapping.setdefault(private, public)
    return mapping


def _home(module_name: str, name: str) -> str | None:
    """Where ``module_name.name`` is documented in full, when that is another module."""
    obj = getattr(importlib.import_module(module_name), name)
    for other in PUBLIC_MODULES:
        if other == module_name:
            break
        other_module = importlib.import_module(other)
        if name in public_names(other) and getattr(other_module, name) is obj:
            return f"{other}.{name}"
    return None


class PublicAliases(SphinxDirective):
    """``.. public-aliases:: bilevel_optuna``: an entry per re-exported name."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        module_name = self.arguments[0]
        lines = [f".. py:currentmodule:: {module_name}", ""]
        for name in public_names(module_name):
            home = _home(module_name, name)
            if home is None:
                continue
            obj = getattr(importlib.import_module(module_name), name)
            if inspect.isclass(obj):
                kind, role = "class", "class"
            elif callable(obj):
                kind, role = "function", "func"
            else:
                kind, role = "data", "data"
            lines += [f".. py:{kind}:: {name}", "   :no-index-entry:", ""]
            lines += [f"   Alias of :{role}:`{home}`.", ""]
        container = nodes.section()
        nested_parse_with_titles(self.state, StringList(lines, source=self.get_source_info()[0]),
                                 container)
        return list(container.children)


def _resolve_private(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.TextElement
) -> nodes.Node | None:
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not target.startswith("bilevel_optuna"):
        return None
    public = app.config._bilevel_canonical.get(target)
    if public is None:
        return None
    domain = env.get_domain("py")
    new = node.deepcopy()
    new["reftarget"] = public
    return domain.resolve_xref(
        env, node.get("refdoc", ""), app.builder, node["reftype"], public, new, contnode
    )


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("public-aliases", PublicAliases)
    app.add_config_value("_bilevel_canonical", {}, "env")
    app.connect("config-inited", lambda app, config: setattr(
        config, "_bilevel_canonical", canonical_names()))
    app.connect("missing-reference", _resolve_private)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
