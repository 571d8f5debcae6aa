"""Parameter delivery for :class:`~bilevel_optuna.objectives.ScriptObjective`.

How a trial's parameters reach the script: placeholders in the command and the environment
(``{lr}``, ``{{`` for a literal brace), ``--name value`` arguments, environment variables, a
JSON or TOML file, or the script's own ``NAME = value`` constants rewritten in its copy.
"""

from __future__ import annotations

import ast
import collections
import json
import math
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from bilevel_optuna.exceptions import ConfigurationError

if TYPE_CHECKING:
    from bilevel_optuna.objectives._script import ScriptObjective

PARAMS_FILE_ENV = "BILEVEL_OPTUNA_PARAMS_FILE"

PARAMS_VIA = ("args", "env", "json", "toml", "constants")
# Placeholders the command and env values may use besides the parameter names.
STATIC_PLACEHOLDERS = ("python", "template")
TRIAL_PLACEHOLDERS = ("workdir", "params_file", "constants_file", "trial_number", "device")
RESERVED = STATIC_PLACEHOLDERS + TRIAL_PLACEHOLDERS
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def placeholders(text: str) -> set[str]:
    return {m.group(1) for m in _PLACEHOLDER.finditer(text) if m.group(1)}


def substitute(text: str, values: Mapping[str, str], *, partial: bool = False) -> str:
    """Replace ``{name}`` by ``values[name]``; ``{{`` and ``}}`` stand for literal braces.

    With ``partial``, placeholders missing from ``values`` are left as they are.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "{{":
            return "{"
        if match.group(0) == "}}":
            return "}"
        if partial and match.group(1) not in values:
            return match.group(0)
        return values[match.group(1)]

    return _PLACEHOLDER.sub(replace, text)


def format_value(value: Any) -> str:
    """A parameter value as text for the command line and the environment."""
    return repr(value) if isinstance(value, float) else str(value)


def _python_literal(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    return repr(value)


def toml_dumps(params: Mapping[str, Any]) -> str:
    """Flat ``key = value`` TOML for str, int, float and bool values."""
    lines = []
    for key, value in params.items():
        name = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value) if math.isfinite(value) else str(value)
        elif isinstance(value, str):
            text = json.dumps(value, ensure_ascii=False)
        else:
            raise TypeError(f"TOML cannot hold the value {value!r} of {key!r}.")
        lines.append(f"{name} = {text}\n")
    return "".join(lines)


def _module_constants(tree: ast.Module) -> tuple[dict[str, list[ast.expr]], set[str]]:
    """Module-level ``NAME = value`` assignments: name to the value nodes, in file order; and
    the names assigned only together with others (``A = B = 1``, ``A, B = 1, 2``)."""
    found: dict[str, list[ast.expr]] = collections.defaultdict(list)
    shared: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign):
            if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                found[node.targets[0].id].append(node.value)
            else:
                for target in node.targets:
                    shared.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            if isinstance(node.target, ast.Name):
                found[node.target.id].append(node.value)
    return dict(found), shared - set(found)


def _parse_python(source: str, filename: str) -> ast.Module:
    try:
        return ast.parse(source, filename=filename)
    except SyntaxError as err:
        raise ConfigurationError(
            f"{filename} is not valid Python ({err.msg}, line {err.lineno}); constants can "
            "only be rewritten in a file Python can parse."
        ) from err


def rewrite_constants(source: str, values: Mapping[str, Any], *, filename: str = "<file>") -> str:
    """Return ``source`` with each module-level ``NAME = value`` set to ``values[NAME]``.

    Only the value expression is replaced, so comments, spacing and the rest of the file stay
    as they were. Every module-level assignment of a name is rewritten (a name assigned twice
    ends with the same value either way). Values are written as Python literals.

    Args:
        source: The text of a Python file.
        values: Constant name to its new value (int, float, str, bool or None).
        filename: Name used in error messages.

    Returns:
        The rewritten text.

    Raises:
        ConfigurationError: The file does not parse, or a name is not assigned at module level;
            the message lists the names that are.

    Example:
        >>> rewrite_constants("LR = 0.1  # learning rate\\n", {"LR": 0.02})
        'LR = 0.02  # learning rate\\n'
    """
    tree = _parse_python(source, filename)
    constants, shared = _module_constants(tree)
    together = [name for name in values if name in shared]
    if together:
        raise ConfigurationError(
            f"{filename} assigns {together} only together with other names on one line "
            "(`A = B = 1` or `A, B = 1, 2`); give each constant a line `NAME = value` of its own."
        )
    missing = [name for name in values if name not in constants]
    if missing:
        available = ", ".join(sorted(constants)) or "none"
        folded = {constant.lower(): constant for constant in constants}
        hints = {name: folded[name.lower()] for name in missing if name.lower() in folded}
        hint = "".join(f" Did you mean {close!r} for {name!r}?" for name, close in hints.items())
        raise ConfigurationError(
            f"{filename} has no module-level assignment of {missing} (a line `NAME = value` at "
            f"the top level of the file). Names assigned there: {available}.{hint}"
        )
    # AST columns count UTF-8 bytes, so splice the encoded text.
    data = source.encode("utf-8")
    starts = [0]
    for line in data.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    edits = []
    for name, value in values.items():
        literal = _python_literal(value).encode("utf-8")
        for node in constants[name]:
            assert node.end_lineno is not None and node.end_col_offset is not None
            begin = starts[node.lineno - 1] + node.col_offset
            end = starts[node.end_lineno - 1] + node.end_col_offset
            edits.append((begin, end, literal))
    for begin, end, literal in sorted(edits, reverse=True):
        data = data[:begin] + literal + data[end:]
    return data.decode("utf-8")


def static_values(objective: ScriptObjective) -> dict[str, str]:
    """The placeholders known before any trial: ``{python}`` and ``{template}``."""
    values = {"python": sys.executable}
    if objective.template is not None:
        values["template"] = str(objective.template)
    return values


def env_name(objective: ScriptObjective, name: str) -> str:
    """The environment variable a parameter is passed in with ``params_via="env"``."""
    return f"{objective.env_prefix}{name.upper()}"


def prepare(
    objective: ScriptObjective,
    workdir: Path,
    params: dict[str, Any],
    number: int | None,
    device: str | None,
) -> tuple[list[str], dict[str, str]]:
    """Deliver the parameters into ``workdir``; return the trial's command and environment."""
    values = static_values(objective)
    values["workdir"] = str(workdir)
    values["trial_number"] = "" if number is None else str(number)
    if device is not None:
        values["device"] = device
    values.update({name: format_value(value) for name, value in params.items()})

    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")  # So that Python scripts stream their output.
    via = objective.params_via
    if via == "json" or via == "toml":
        assert objective.params_file is not None
        path = workdir / objective.params_file
        path.parent.mkdir(parents=True, exist_ok=True)
        if via == "json":
            path.write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
        else:
            path.write_text(toml_dumps(params), encoding="utf-8")
        values["params_file"] = str(path)
        env[PARAMS_FILE_ENV] = str(path)
    elif via == "env":
        for name, value in params.items():
            env[env_name(objective, name)] = format_value(value)
    elif via == "constants":
        assert objective.constants_file is not None and objective._constants_rel is not None
        target = workdir / objective._constants_rel
        source_path = target if target.is_file() else objective.constants_file
        source = source_path.read_text(encoding="utf-8")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(
            rewrite_constants(source, params, filename=objective.constants_file.name),
            encoding="utf-8",
        )
        values["constants_file"] = str(target)

    command = [substitute(arg, values) for arg in objective.command]
    if objective._auto_args:
        for name, value in params.items():
            command += [f"--{name}", format_value(value)]
    env.update({key: substitute(value, values) for key, value in objective.env.items()})
    if device is not None:
        env[objective.device_env] = device
    return command, env
