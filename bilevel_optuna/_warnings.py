"""Warnings at the user's line: the stack level of the first frame outside this package.

The warning classes themselves are in :mod:`bilevel_optuna.exceptions`.
"""

from __future__ import annotations

import sys
import warnings


def _inside(module: object) -> bool:
    return isinstance(module, str) and (module == "bilevel_optuna" or module.startswith(
        "bilevel_optuna."
    ))


def warn(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` pointing at the first caller outside ``bilevel_optuna``, wherever the
    package's modules live (an editable install keeps ``samplers/`` and ``studies/`` beside
    ``bilevel_optuna/``, so a file path would not tell)."""
    frame = sys._getframe(1)  # the caller of warn is stacklevel 2
    level = 2
    while frame is not None and _inside(frame.f_globals.get("__name__")):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    warnings.warn(message, category, stacklevel=level)


def renamed(module: str, name: str, names: dict[str, tuple[str, object]]) -> object:
    """A module's ``__getattr__`` for names that were renamed: the object under its old name,
    with a :class:`FutureWarning` (Optuna's category for deprecations, shown by default)
    naming the new one. ``names`` maps each old name to the new name and the object."""
    if name not in names:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new, obj = names[name]
    warn(
        f"{module}.{name} is deprecated: use {module}.{new} (the same class); the old name "
        "will be removed in a later release.",
        FutureWarning,
    )
    return obj
