"""The settings of a :class:`~bilevel_optuna.objectives.ScriptObjective`, in three groups.

How the command runs (:class:`ScriptRun`), how the parameters reach it (:class:`ScriptParams`)
and how the metric is read from it (:class:`ScriptMetric`). Each is a frozen dataclass that
checks its own values when it is built, so that a wrong setting fails before the first trial,
with a message naming the field and the fix. What needs more than one group (placeholders in
the command, the constants file inside the template) is checked by the objective.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives._script_checks import ENV_NAME
from bilevel_optuna.objectives._script_metric import compile_pattern
from bilevel_optuna.objectives._script_params import PARAMS_VIA

__all__ = ["ScriptMetric", "ScriptParams", "ScriptRun"]

KEEP_WORKDIRS = ("never", "failed", "always")
ON_FAILURE = ("nan", "raise")
DIRECTIONS = ("minimize", "maximize")
DEFAULT_IGNORE = (".git", ".venv", "venv", "__pycache__", "*.pyc", ".ipynb_checkpoints")


def resolve_path(path: str | os.PathLike[str], base: Path) -> Path:
    """``path`` with ``~`` expanded, taken relative to ``base`` unless absolute."""
    resolved = Path(os.path.expanduser(os.fspath(path)))
    return resolved if resolved.is_absolute() else base / resolved


def _one_of(option: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigurationError(f"{option} must be one of {allowed} but got {value!r}.")


def _inside_trial_folder(option: str, path: str) -> None:
    if os.path.isabs(path) or ".." in Path(path).parts:
        raise ConfigurationError(
            f"{option} must be a path inside the trial's folder, relative to it, but got "
            f"{path!r}; a shared absolute path would collide between trials."
        )


@dataclasses.dataclass(frozen=True)
class ScriptRun:
    """How each trial's command runs: its folder, time limit, environment and device.

    Args:
        timeout: Seconds a trial may run before its process group is stopped and the trial
            fails; ``None`` for no limit.
        kill_grace: Seconds between SIGTERM and SIGKILL when a script is stopped.
        template: A folder copied to make each trial's folder (``template_ignore`` left out);
            ``None`` for a fresh empty folder. Relative paths are taken from the current folder.
        template_ignore: Glob patterns of the template not copied (virtual environments, git).
        workdir_root: Where trial folders are made; the system temporary folder by default.
        keep_workdirs: ``"never"`` (delete each trial's folder), ``"failed"`` (keep those of
            failed trials) or ``"always"``. A kept folder also holds the full output in
            ``bilevel_optuna_output.log`` and is named in the user attribute ``script:workdir``.
        devices: Devices handed out one per concurrent trial, e.g. ``("0", "1")``: each trial
            gets one through ``device_env`` and gives it back when it ends, so
            ``study.optimize(..., n_jobs=len(devices))`` runs one trial per GPU. Within one
            process; give each worker process its own list.
        device_env: The variable a trial's device is set in.
        env: Extra environment variables (placeholders allowed in values).
        on_failure: ``"nan"`` (return ``nan``: Optuna marks the trial FAILED and the study
            goes on) or ``"raise"`` (raise :class:`~bilevel_optuna.objectives.ScriptFailedError`;
            pass ``catch=(ScriptFailedError,)`` to ``optimize`` to go on).

    Raises:
        ConfigurationError: A value out of range or of the wrong kind.
    """

    timeout: float | None = None
    kill_grace: float = 5.0
    template: Path | None = None
    template_ignore: tuple[str, ...] = DEFAULT_IGNORE
    workdir_root: Path | None = None
    keep_workdirs: str = "never"
    devices: tuple[str, ...] | None = None
    device_env: str = "CUDA_VISIBLE_DEVICES"
    env: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)
    on_failure: str = "nan"

    def __post_init__(self) -> None:
        _one_of("keep_workdirs", self.keep_workdirs, KEEP_WORKDIRS)
        _one_of("on_failure", self.on_failure, ON_FAILURE)
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigurationError(f"timeout must be positive or None but got {self.timeout!r}.")
        if not self.kill_grace >= 0:
            raise ConfigurationError(f"kill_grace must be >= 0 but got {self.kill_grace!r}.")
        if self.devices is not None and not list(self.devices):
            raise ConfigurationError("devices must name at least one device, or be None.")
        if not ENV_NAME.match(self.device_env):
            raise ConfigurationError(
                f"device_env must be an environment variable name but got {self.device_env!r}."
            )
        cwd = Path.cwd()
        root = self.workdir_root
        # Normalized once here (frozen: through object.__setattr__), so that the objective and
        # its pickled copies in other processes see the same absolute folders.
        values = {
            "timeout": None if self.timeout is None else float(self.timeout),
            "kill_grace": float(self.kill_grace),
            "template": (
                None if self.template is None else resolve_path(self.template, cwd).resolve()
            ),
            "template_ignore": tuple(self.template_ignore),
            "workdir_root": (
                Path(tempfile.gettempdir()) if root is None else resolve_path(root, cwd).resolve()
            ),
            "devices": None if self.devices is None else tuple(str(d) for d in self.devices),
            "env": {str(key): str(value) for key, value in (self.env or {}).items()},
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)


@dataclasses.dataclass(frozen=True)
class ScriptParams:
    """How a trial's parameters reach the script.

    Args:
        via: ``"args"`` (placeholders in the command, or ``--name value`` appended when it
            names none), ``"env"`` (variables ``env_prefix + NAME``), ``"json"`` or ``"toml"``
            (a file in the trial's folder whose path is ``{params_file}`` and the environment
            variable ``BILEVEL_OPTUNA_PARAMS_FILE``), or ``"constants"`` (``NAME = value`` lines
            rewritten in a per-trial copy of ``constants_file``; parameter names are the
            constants' names). The user's own files are never modified.
        file: File name of the ``"json"``/``"toml"`` parameters, relative to the trial's
            folder; ``params.json`` or ``params.toml`` by default.
        env_prefix: Prefix of the variables with ``via="env"``.
        constants_file: The Python file whose constants ``via="constants"`` rewrites; with a
            template, a path inside it (relative paths are taken from it). Without one, the
            copy is put in the trial's folder under the same name.

    Raises:
        ConfigurationError: A value out of range, or a field that ``via`` does not use.
    """

    via: str = "args"
    file: str | None = None
    env_prefix: str = ""
    constants_file: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        _one_of("params_via", self.via, PARAMS_VIA)
        if self.via in ("json", "toml"):
            name = self.file_name
            assert name is not None
            if os.path.isabs(name) or ".." in Path(name).parts:
                raise ConfigurationError(
                    f"params_file must be relative to the trial's folder but got {self.file!r}."
                )
        elif self.file is not None:
            raise ConfigurationError(
                f"params_file is used only with params_via='json' or 'toml', not {self.via!r}."
            )
        if self.via == "constants" and self.constants_file is None:
            raise ConfigurationError(
                "params_via='constants' needs constants_file, the Python file whose "
                "`NAME = value` lines are rewritten per trial."
            )
        if self.via != "constants" and self.constants_file is not None:
            raise ConfigurationError(
                f"constants_file is used only with params_via='constants', not {self.via!r}."
            )

    @property
    def file_name(self) -> str | None:
        """The name of the parameters file in the trial's folder (``file``, else
        ``params.json`` or ``params.toml``), or ``None`` where ``via`` writes no file."""
        if self.via not in ("json", "toml"):
            return None
        return self.file or f"params.{self.via}"


@dataclasses.dataclass(frozen=True)
class ScriptMetric:
    """How a trial's value is read from the script, and which way is better.

    Give exactly one of ``pattern`` and ``file``.

    Args:
        pattern: A regular expression matched against each line of the output (stdout and
            stderr together); the last match is the trial's value. Its group named ``value``,
            else its first group, else the whole match, is the number, e.g.
            ``r"^val_bpb:\\s*(\\S+)"``.
        file: Instead of ``pattern``: a file, relative to the trial's folder, that the script
            writes; it holds a number, or a JSON object with the number under ``key``.
        key: The key of the number in a JSON ``file``.
        intermediate: A regular expression for intermediate values, reported to the trial as
            they stream so that pruners work: groups named ``step`` and ``value``, or two groups
            (step, value), or one group (value; steps count matches from 0). A pruned trial's
            process group is stopped and :class:`optuna.TrialPruned` raised.
        direction: ``"minimize"`` or ``"maximize"``.

    Raises:
        ConfigurationError: Neither or both of ``pattern`` and ``file``, a pattern that does not
            compile, a file outside the trial's folder.
    """

    pattern: str | None = None
    file: str | None = None
    key: str | None = None
    intermediate: str | None = None
    direction: str = "minimize"

    def __post_init__(self) -> None:
        _one_of("direction", self.direction, DIRECTIONS)
        if (self.pattern is None) == (self.file is None):
            raise ConfigurationError(
                "Give exactly one of metric (a pattern matched against the output, e.g. "
                r"'^val_bpb:\s*(\S+)') and metric_file (a file the script writes)."
            )
        if self.pattern is not None:
            compile_pattern("metric", self.pattern)
        if self.file is not None:
            _inside_trial_folder("metric_file", self.file)
        if self.key is not None and self.file is None:
            raise ConfigurationError("metric_key names a field of metric_file; give metric_file.")
        if self.intermediate is not None:
            compiled = compile_pattern("intermediate", self.intermediate)
            if "value" not in compiled.groupindex and compiled.groups not in (1, 2):
                raise ConfigurationError(
                    f"intermediate pattern {self.intermediate!r} needs groups named 'step' and "
                    "'value', or two groups (step, value), or one group (value)."
                )


#: Every flat keyword of the old constructor and of a spec's script table, with the settings
#: group and field it now sets: ``(group, field)``.
FLAT_KEYS: dict[str, tuple[str, str]] = {
    "metric": ("metric", "pattern"),
    "metric_file": ("metric", "file"),
    "metric_key": ("metric", "key"),
    "intermediate": ("metric", "intermediate"),
    "direction": ("metric", "direction"),
    "params_via": ("params", "via"),
    "params_file": ("params", "file"),
    "env_prefix": ("params", "env_prefix"),
    "constants_file": ("params", "constants_file"),
    "timeout": ("run", "timeout"),
    "kill_grace": ("run", "kill_grace"),
    "template": ("run", "template"),
    "template_ignore": ("run", "template_ignore"),
    "workdir_root": ("run", "workdir_root"),
    "keep_workdirs": ("run", "keep_workdirs"),
    "devices": ("run", "devices"),
    "device_env": ("run", "device_env"),
    "env": ("run", "env"),
    "on_failure": ("run", "on_failure"),
}

GROUPS: dict[str, type] = {"run": ScriptRun, "params": ScriptParams, "metric": ScriptMetric}


def group_kwargs(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Sort flat keywords (the old constructor's, a spec table's) into the three groups."""
    grouped: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}
    for key, value in flat.items():
        group, field = FLAT_KEYS[key]
        grouped[group][field] = value
    return grouped


def spelled(key: str) -> str:
    """How a flat keyword is written now, e.g. ``run=ScriptRun(kill_grace=...)``."""
    group, field = FLAT_KEYS[key]
    return f"{group}={GROUPS[group].__name__}({field}=...)"


def merge(group: str, settings: Any, shortcuts: Mapping[str, Any]) -> Any:
    """``settings`` (or the group's defaults) with the shortcut keywords given set in it.

    A shortcut that is ``None`` was not given. One that contradicts a field the settings object
    sets itself is an error, since either spelling could be the intended one.
    """
    cls = GROUPS[group]
    values = {FLAT_KEYS[key][1]: value for key, value in shortcuts.items() if value is not None}
    if settings is None:
        return cls(**values)
    if not isinstance(settings, cls):
        raise ConfigurationError(
            f"{group} must be a {cls.__name__} but got {type(settings).__name__} {settings!r}."
        )
    if not values:
        return settings
    merged = dataclasses.replace(settings, **values)
    default = _default(cls)
    for field in values:
        current = getattr(settings, field)
        if current != getattr(merged, field) and current != default.get(field):
            raise ConfigurationError(
                f"{field} is given twice, as a keyword ({values[field]!r}) and in {group}= "
                f"({current!r}); give it once."
            )
    return merged


def _default(cls: type) -> dict[str, Any]:
    """The fields of a settings object built with no arguments, as normalized when built (the
    plain field defaults where a group cannot be built so)."""
    try:
        return dataclasses.asdict(cls())
    except ConfigurationError:  # ScriptMetric needs a pattern or a file
        return {f.name: f.default for f in dataclasses.fields(cls)}
