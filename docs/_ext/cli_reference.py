"""``.. cli-reference:: module:function``: a section per (sub)command with its own ``--help``.

Why not sphinx-argparse: it parses every help string and epilog as reStructuredText, and the
``compare`` subcommand's epilog is preformatted terminal text (its examples, indented, with
globs such as ``'outer-*'``), which breaks a build with warnings as errors. Each parser's own
``format_help()`` in a literal block is exactly what the user sees in the terminal, and no
help text can break the build.
"""

from __future__ import annotations

import argparse
import importlib
import os
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

_WIDTH = "100"  # argparse wraps to $COLUMNS; fixed, so the page does not depend on the terminal


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help(parser: argparse.ArgumentParser) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = _WIDTH
    try:
        return parser.format_help()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


class CliReference(SphinxDirective):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        module_name, _, function = self.arguments[0].partition(":")
        parser = getattr(importlib.import_module(module_name), function)()
        return self._sections(parser, parser.prog)

    def _sections(self, parser: argparse.ArgumentParser, prog: str) -> list[nodes.Node]:
        section_id = nodes.make_id(prog)
        section = nodes.section(ids=[section_id])
        section += nodes.title(text=prog)
        text = _help(parser)
        section += nodes.literal_block(text, text)
        result: list[nodes.Node] = [section]
        for name, child in _subcommands(parser).items():
            section.extend(self._sections(child, f"{prog} {name}"))
        return result


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("cli-reference", CliReference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
