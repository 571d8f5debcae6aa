"""Configuration checks for :class:`~bilevel_optuna.objectives.ScriptObjective`.

Everything that can be checked before the first trial is: placeholders, the program, the
template, how parameters reach the script. Each error names the problem and the fix.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from optuna.distributions import CategoricalDistribution

from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives._script_params import RESERVED
from bilevel_optuna.objectives._script_params import env_name
from bilevel_optuna.objectives._script_params import placeholders
from bilevel_optuna.objectives._script_params import rewrite_constants
from bilevel_optuna.objectives._script_params import static_values
from bilevel_optuna.objectives._script_params import substitute

if TYPE_CHECKING:
    from bilevel_optuna.objectives._script import ScriptObjective

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check(objective: ScriptObjective) -> None:
    """Check ``objective``'s configuration; see :meth:`ScriptObjective.check`."""
    names = list(objective.search_space)
    clash = sorted(set(names) & set(RESERVED))
    if clash:
        raise ConfigurationError(
            f"Parameter name(s) {clash} are reserved placeholders ({list(RESERVED)}); "
            "rename the parameter(s)."
        )
    known = set(RESERVED) | set(names)
    used: set[str] = set()
    for text in [*objective.command, *objective.env.values()]:
        used |= placeholders(text)
    unknown = sorted(used - known)
    if unknown:
        raise ConfigurationError(
            f"Unknown placeholder(s) {['{' + u + '}' for u in unknown]} in the command or "
            f"env; known: parameters {names} and {list(RESERVED)}. Write {{{{ and }}}} for "
            "literal braces."
        )
    if "params_file" in used and objective.params_file is None:
        raise ConfigurationError(
            "{params_file} is set only with params_via='json' or 'toml'."
        )
    if "constants_file" in used and objective.constants_file is None:
        raise ConfigurationError("{constants_file} is set only with params_via='constants'.")
    if "device" in used and objective.devices is None:
        raise ConfigurationError("{device} is set only when devices are given.")
    if "template" in used and objective.template is None:
        raise ConfigurationError("{template} is set only when a template is given.")

    if objective.template is not None:
        if not objective.template.is_dir():
            raise ConfigurationError(
                f"template {str(objective.template)!r} is not a folder; give the folder copied "
                "to make each trial's working folder."
            )
        if objective.workdir_root.is_relative_to(objective.template):
            raise ConfigurationError(
                f"workdir_root {str(objective.workdir_root)!r} is inside the template; each "
                "trial's copy would copy the others. Choose a folder outside it."
            )
    _check_executable(objective)

    # Without parameter placeholders, "args" appends "--name value" for every parameter.
    objective._auto_args = objective.params_via == "args" and not used & set(names)
    if objective.params_via == "args" and not objective._auto_args:
        missing = [name for name in names if name not in used]
        if missing:
            raise ConfigurationError(
                f"Parameter(s) {missing} are not passed to the script: the command names "
                f"some parameters as placeholders but not these. Add "
                f"{' '.join('{' + m + '}' for m in missing)} to it."
            )
    elif objective.params_via == "env":
        # Without a prefix a parameter could silently replace PATH or HOME.
        inherited = set(objective.env)
        if not objective.env_prefix:
            inherited |= set(os.environ)
        for name in names:
            var = env_name(objective, name)
            if not ENV_NAME.match(var):
                raise ConfigurationError(
                    f"Parameter {name!r} gives {var!r}, not a valid environment variable "
                    "name; rename it or change env_prefix."
                )
            if var in inherited:
                raise ConfigurationError(
                    f"Parameter {name!r} would overwrite the environment variable {var!r}; "
                    "set env_prefix (e.g. 'HP_')."
                )
    elif objective.params_via == "toml":
        for name, dist in objective.search_space.items():
            if isinstance(dist, CategoricalDistribution) and None in dist.choices:
                raise ConfigurationError(
                    f"Parameter {name!r} has the choice None, which TOML cannot hold; use "
                    "params_via='json'."
                )
    elif objective.params_via == "constants":
        _check_constants(objective)


def _check_executable(objective: ScriptObjective) -> None:
    program = substitute(objective.command[0], static_values(objective), partial=True)
    if placeholders(program):
        return  # Known only per trial.
    if os.sep in program or (os.altsep and os.altsep in program):
        path = Path(os.path.expanduser(program))
        if not path.is_absolute():
            if objective.template is None:
                raise ConfigurationError(
                    f"The command {program!r} is a relative path, but without a template "
                    "each trial runs in a fresh empty folder; give an absolute path or a "
                    "template."
                )
            path = objective.template / path
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigurationError(
                f"The command {program!r} does not exist or is not executable "
                f"(looked for {str(path)!r})."
            )
    elif shutil.which(program, path=objective.env.get("PATH", os.environ.get("PATH"))) is None:
        raise ConfigurationError(
            f"The command {program!r} was not found on PATH; install it or give its full path."
        )
    if objective.template is None:
        for arg in objective.command[1:]:
            if placeholders(arg) or arg.startswith("-") or os.path.isabs(arg):
                continue
            if objective._constants_rel is not None and Path(arg) == objective._constants_rel:
                continue
            if Path(arg).suffix in (".py", ".sh") and Path(arg).is_file():
                raise ConfigurationError(
                    f"The command names {arg!r}, a relative path, but without a template "
                    f"each trial runs in a fresh empty folder. Give "
                    f"{str(Path(arg).resolve())!r} or set template to its folder."
                )


def _check_constants(objective: ScriptObjective) -> None:
    assert objective.constants_file is not None
    path = objective.constants_file
    if not path.is_file():
        raise ConfigurationError(f"constants_file {str(path)!r} does not exist.")
    source = path.read_text(encoding="utf-8")
    for name in objective.search_space:
        if not name.isidentifier():
            raise ConfigurationError(
                f"Parameter {name!r} is not a Python name, so it cannot be a constant of "
                f"{path.name}."
            )
    rewrite_constants(source, dict.fromkeys(objective.search_space), filename=str(path))
