"""Sphinx glue for a package whose public names live in private modules.

Optuna's layout (``samplers/mechanisms/_tabu.py`` holds ``TabuMechanism``,
``samplers/__init__.py`` re-exports it) means that autodoc sees
``bilevel_optuna.samplers.mechanisms._tabu.TabuMechanism`` in type
hints, while the reference documents ``bilevel_optuna.samplers.TabuMechanism``. Two pieces
connect them:

- a post-transform points a reference to a private path, or to a bare name, at the public name
  of the same object (the first public module that exports it, in ``PUBLIC_MODULES`` order).
  A reference to an object that no public module exports stays unresolved, so nitpicky mode
  still reports it.
- ``.. public-aliases:: MODULE``: documents each name of ``MODULE.__all__`` that another public
  module already documents as a short "alias of" entry, so the top-level package's
  re-exports are targets of their own without repeating the whole docstring.

Written here rather than taken from a library: sphinx-autodoc2 and autoapi resolve re-exports by
reading source files, which would replace autodoc and napoleon for two small hooks.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform
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


@functools.lru_cache(maxsize=1)
def _canonical() -> dict[str, str]:
    """Map each exported object's bare name, defining path and alias paths to its home.

    A bare name exported as two different objects is left out (it stays ambiguous, and
    nitpicky mode says so).
    """
    mapping: dict[str, str] = {}
    bare: dict[str, str | None] = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in public_names(module_name):
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                continue
            public = f"{module_name}.{name}"
            home = _home(module_name, name) or public
            mapping.setdefault(public, home)
            private = _private_path(obj)
            if private is not None and private.startswith("bilevel_optuna"):
                mapping.setdefault(private, home)
            if bare.get(name, home) != home:
                bare[name] = None
            else:
                bare[name] = home
    for name, home in bare.items():
        if home is not None:
            mapping.setdefault(name, home)
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


class ResolvePublicNames(SphinxPostTransform):
    """Point references to this package's objects at their documented public names.

    Runs before Sphinx's own resolver. A bare name (``Objective``, from an annotation that
    autodoc could not evaluate) would otherwise be searched by suffix and match both the full
    entry and the top-level alias; a private path
    (``...samplers.mechanisms._tabu.TabuMechanism``) has no entry of its own.
    """

    default_priority = 5  # Sphinx's ReferencesResolver runs at 10

    def run(self, **kwargs: Any) -> None:
        canonical = _canonical()
        for node in self.document.findall(pending_xref):
            if node.get("refdomain") != "py":
                continue
            target = node.get("reftarget", "")
            public = canonical.get(target)
            if public is not None:
                node["reftarget"] = public
                node["refspecific"] = False


def _process_bases(app: Sphinx, name: str, obj: Any, options: Any, bases: list[type]) -> None:
    """Show a private base class (``_AnyDimension``) as the public bases it stands for."""
    expanded: list[type] = []
    for base in bases:
        while base.__name__.startswith("_") and base.__module__.startswith("bilevel_optuna"):
            base = base.__bases__[0]
        if base not in expanded:
            expanded.append(base)
    bases[:] = expanded


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("public-aliases", PublicAliases)
    app.add_post_transform(ResolvePublicNames)
    app.connect("autodoc-process-bases", _process_bases)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
