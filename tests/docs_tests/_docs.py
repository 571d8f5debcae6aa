"""Paths and helpers the documentation tests share."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

# The command the README gives for building the site locally; the build test runs the same
# arguments into a temporary folder.
SPHINX_COMMAND = "python -m sphinx -W -n -b html docs docs/_build/html"

sys.path.insert(0, str(DOCS / "_ext"))


def fenced_blocks(text: str, languages: tuple[str, ...]) -> list[str]:
    """Bodies of the fenced blocks of Markdown ``text`` whose info string is in ``languages``."""
    blocks = []
    for match in re.finditer(r"^```([^\n]*)\n(.*?)^```\s*$", text, flags=re.M | re.S):
        if match.group(1).strip() in languages:
            blocks.append(match.group(2))
    return blocks


def shell_commands(block: str) -> list[str]:
    """The commands of a shell block: continuations joined, comments dropped, ``&&`` split."""
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        for part in line.split("&&"):
            part = re.sub(r"\s+#.*$", "", part).strip()
            if part:
                commands.append(part)
    return commands
