"""A training script as an objective: one subprocess per trial, the metric read from its output.

Researchers already have a script that prints a metric (autoresearch's ``train.py`` prints
``val_bpb: 0.997900``). :class:`ScriptObjective` runs it once per trial, in a folder of its own,
passes the trial's parameters the way the script expects them, streams the output for
intermediate values (so Optuna's pruners work) and reads the final metric from it.

A trial whose script crashes (non-zero exit, timeout, no metric, NaN) returns ``nan``, which
Optuna records as a FAILED trial while the study goes on; the reason is stored in the trial's
user attribute :data:`bilevel_optuna._attrs.FAILURE_REASON`, where the LLM proposer's prompt
shows it, so that the model stops proposing configurations that crash.
"""

from __future__ import annotations

import ast
import codecs
import collections
import dataclasses
import inspect
import json
import math
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import IO
from typing import TYPE_CHECKING
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution

from bilevel_optuna import _attrs
from bilevel_optuna._logging import get_logger
from bilevel_optuna._logging import redact
from bilevel_optuna.exceptions import BilevelOptunaError
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.objectives._space_config import distributions_from_config

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

__all__ = [
    "ScriptFailedError",
    "ScriptObjective",
    "rewrite_constants",
]

_logger = get_logger(__name__)

# Trial user attributes written by this module (besides _attrs.FAILURE_REASON).
EXIT_CODE_ATTR = "script:exit_code"
OUTPUT_TAIL_ATTR = "script:output_tail"
WORKDIR_ATTR = "script:workdir"
DEVICE_ATTR = "script:device"

PARAMS_FILE_ENV = "BILEVEL_OPTUNA_PARAMS_FILE"
OUTPUT_LOG_NAME = "bilevel_optuna_output.log"

_PARAMS_VIA = ("args", "env", "json", "toml", "constants")
_KEEP_WORKDIRS = ("never", "failed", "always")
_ON_FAILURE = ("nan", "raise")
_DIRECTIONS = ("minimize", "maximize")
_DEFAULT_IGNORE = (".git", ".venv", "venv", "__pycache__", "*.pyc", ".ipynb_checkpoints")
# Placeholders the command and env values may use besides the parameter names.
_STATIC_PLACEHOLDERS = ("python", "template")
_TRIAL_PLACEHOLDERS = ("workdir", "params_file", "constants_file", "trial_number", "device")
_RESERVED = _STATIC_PLACEHOLDERS + _TRIAL_PLACEHOLDERS
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ERROR_LINE = re.compile(r"^\s*[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Fault)\b")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")

_TAIL_CHARS = 2000
_REASON_CHARS = 200
_MAX_LINE_CHARS = 1 << 20
_POLL_S = 0.5
_DRAIN_S = 5.0


class ScriptFailedError(BilevelOptunaError):
    """A trial's script crashed, timed out or printed no usable metric.

    Raised only with ``on_failure="raise"``; by default the trial returns ``nan`` instead.

    Attributes:
        reason: One short line, the same as the trial's failure reason.
        exit_code: The script's exit status, or ``None`` where it never ran or was stopped.
        output_tail: The last characters of its output, secrets removed.
    """

    def __init__(self, reason: str, *, exit_code: int | None, output_tail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code
        self.output_tail = output_tail


@dataclasses.dataclass
class _Outcome:
    value: float | None = None
    reason: str | None = None
    exit_code: int | None = None
    tail: str = ""


def _placeholders(text: str) -> set[str]:
    return {m.group(1) for m in _PLACEHOLDER.finditer(text) if m.group(1)}


def _substitute(text: str, values: Mapping[str, str], *, partial: bool = False) -> str:
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


def _format_value(value: Any) -> str:
    """A parameter value as text for the command line and the environment."""
    return repr(value) if isinstance(value, float) else str(value)


def _python_literal(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    return repr(value)


def _toml_dumps(params: Mapping[str, Any]) -> str:
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


class _DevicePool:
    """Devices handed to concurrent trials, one each; a trial waits while all are taken."""

    def __init__(self, devices: Sequence[str]) -> None:
        self._free: queue.Queue[str] = queue.Queue()
        for device in devices:
            self._free.put(device)

    def acquire(self) -> str:
        return self._free.get()

    def release(self, device: str) -> None:
        self._free.put(device)


class _Tail:
    """The last lines of the output, enough of them to fill ``chars`` characters."""

    def __init__(self, chars: int) -> None:
        self._chars = chars
        # Each line takes at least one character with its line break.
        self._lines: collections.deque[str] = collections.deque(maxlen=chars)

    def extend(self, batch: list[str]) -> None:
        limit = self._chars
        self._lines.extend(line if len(line) <= limit else line[-limit:] for line in batch)

    def lines(self) -> list[str]:
        return list(self._lines)

    def text(self) -> str:
        return "\n".join(self._lines)[-self._chars :]


def _read_lines(stream: IO[bytes], lines: queue.Queue[list[str] | None]) -> None:
    """Put the lines of ``stream`` on ``lines`` as they arrive, a list per read; ``None`` at
    the end. ``\\r`` ends a line too, so that progress bars redrawn in place count as lines."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    fd = stream.fileno()
    try:
        while True:
            chunk = os.read(fd, 65536)
            text = decoder.decode(chunk, final=not chunk)
            if text:
                parts = _LINE_BREAK.split(pending + text)
                # A "\r\n" split across two reads leaves an empty line: harmless.
                pending = parts.pop()
                if len(pending) > _MAX_LINE_CHARS:
                    parts.append(pending)
                    pending = ""
                if parts:
                    lines.put(parts)
            if not chunk:
                break
    except OSError:  # The pipe was closed under us: the trial is over.
        pass
    finally:
        if pending:
            lines.put([pending])
        lines.put(None)


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the process group the script leads (to the script alone off POSIX)."""
    killpg = getattr(os, "killpg", None)
    try:
        if killpg is not None:
            killpg(proc.pid, sig)
        elif proc.poll() is None:
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _error_line(lines: Sequence[str]) -> str:
    """The line that best says why a script failed: its last exception, else its last line."""
    stripped = [line.strip() for line in lines if line.strip()]
    for line in reversed(stripped):
        if _ERROR_LINE.match(line):
            return line
    return stripped[-1] if stripped else "no output"


def _shorten(text: str, limit: int = _REASON_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _resolve(path: str | os.PathLike[str], base: Path) -> Path:
    resolved = Path(os.path.expanduser(os.fspath(path)))
    return resolved if resolved.is_absolute() else base / resolved


class ScriptObjective(Objective):
    """Run a command once per trial and read the metric it prints.

    Each trial runs in a folder of its own (a copy of ``template``, or a fresh temporary one),
    as a process group of its own, so that parallel trials never collide and a timeout or a
    pruned trial stops the script and everything it started.

    Args:
        command: The command, as a list of arguments or one string split like a shell would
            (no shell runs it). It may name placeholders: ``{python}`` (this interpreter),
            ``{template}``, ``{workdir}`` (the trial's folder, also its working directory),
            ``{params_file}``, ``{constants_file}``, ``{trial_number}``, ``{device}``, and each
            parameter by name. Write ``{{`` and ``}}`` for literal braces.
        search_space: Parameter name to an Optuna distribution, or the table form of
            :func:`~bilevel_optuna.objectives._space_config.distributions_from_config`
            (``{"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}}``).
        metric: A regular expression matched against each line of the output (stdout and
            stderr together); the last match is the trial's value. Its group named ``value``,
            else its first group, else the whole match, is the number, e.g.
            ``r"^val_bpb:\\s*(\\S+)"``.
        metric_file: Instead of ``metric``: a file, relative to the trial's folder, that the
            script writes; it holds a number, or a JSON object with the number under
            ``metric_key``.
        metric_key: The key of the number in a JSON ``metric_file``.
        intermediate: A regular expression for intermediate values, reported to the trial as
            they stream so that pruners work: groups named ``step`` and ``value``, or two groups
            (step, value), or one group (value; steps count matches from 0). A pruned trial's
            process group is stopped and :class:`optuna.TrialPruned` raised.
        params_via: How parameters reach the script: ``"args"`` (placeholders in ``command``,
            or ``--name value`` appended when it names none), ``"env"`` (variables
            ``env_prefix + NAME``), ``"json"`` or ``"toml"`` (a file in the trial's folder whose
            path is ``{params_file}`` and the environment variable
            ``BILEVEL_OPTUNA_PARAMS_FILE``), or ``"constants"`` (``NAME = value`` lines
            rewritten in a per-trial copy of ``constants_file``; parameter names are the
            constants' names). The user's own files are never modified.
        params_file: File name of the ``"json"``/``"toml"`` parameters, relative to the trial's
            folder; ``params.json`` or ``params.toml`` by default.
        env_prefix: Prefix of the variables with ``params_via="env"``.
        constants_file: The Python file whose constants ``params_via="constants"`` rewrites;
            with a ``template``, a path inside it (relative paths are taken from it). Without
            one, the copy is put in the trial's folder under the same name.
        direction: ``"minimize"`` or ``"maximize"``.
        timeout: Seconds a trial may run before its process group is stopped and the trial
            fails; ``None`` for no limit.
        kill_grace: Seconds between SIGTERM and SIGKILL when a script is stopped.
        template: A folder copied to make each trial's folder (``template_ignore`` left out);
            ``None`` for a fresh empty folder.
        template_ignore: Glob patterns of the template not copied (virtual environments, git).
        workdir_root: Where trial folders are made; the system temporary folder by default.
        keep_workdirs: ``"never"`` (delete each trial's folder), ``"failed"`` (keep those of
            failed trials) or ``"always"``. A kept folder also holds the full output in
            ``bilevel_optuna_output.log`` and is named in the user attribute ``script:workdir``.
        devices: Devices handed out one per concurrent trial, e.g. ``["0", "1"]``: each trial
            gets one through ``device_env`` and gives it back when it ends, so
            ``study.optimize(..., n_jobs=len(devices))`` runs one trial per GPU. Within one
            process; give each worker process its own list.
        device_env: The variable a trial's device is set in.
        env: Extra environment variables (placeholders allowed in values).
        on_failure: ``"nan"`` (return ``nan``: Optuna marks the trial FAILED and the study
            goes on) or ``"raise"`` (raise :class:`ScriptFailedError`; pass
            ``catch=(ScriptFailedError,)`` to ``optimize`` to go on).
        name: Registry name of the objective.
        description: What is optimized, for the LLM prompt.
        optimum: Best attainable value where known.
        noise: Notes on noise, for the prompt and the reports.

    Raises:
        ConfigurationError: A setting is wrong or cannot work (a command that does not exist, a
            pattern that does not compile, a constant absent from the file, ...): checked here,
            before the first trial.

    Example:
        .. code-block:: python

            objective = ScriptObjective(
                command=["{template}/.venv/bin/python", "train.py"],
                template="~/autoresearch",
                params_via="constants",
                constants_file="train.py",
                search_space={"MATRIX_LR": {"type": "float", "low": 0.01, "high": 0.1,
                                            "log": True}},
                metric=r"^val_bpb:\\s*(\\S+)",
                timeout=600,
            )
            study = optuna.create_study(direction=objective.direction)
            study.optimize(objective, n_trials=20)
    """

    def __init__(
        self,
        *,
        command: str | Sequence[str],
        search_space: Mapping[str, Any],
        metric: str | None = None,
        metric_file: str | None = None,
        metric_key: str | None = None,
        intermediate: str | None = None,
        params_via: str = "args",
        params_file: str | None = None,
        env_prefix: str = "",
        constants_file: str | os.PathLike[str] | None = None,
        direction: str = "minimize",
        timeout: float | None = None,
        kill_grace: float = 5.0,
        template: str | os.PathLike[str] | None = None,
        template_ignore: Sequence[str] = _DEFAULT_IGNORE,
        workdir_root: str | os.PathLike[str] | None = None,
        keep_workdirs: str = "never",
        devices: Sequence[str] | None = None,
        device_env: str = "CUDA_VISIBLE_DEVICES",
        env: Mapping[str, str] | None = None,
        on_failure: str = "nan",
        name: str = "script",
        description: str = "",
        optimum: float | None = None,
        noise: str = "",
    ) -> None:
        if isinstance(command, str):
            command = shlex.split(command)
        if not command or not all(isinstance(arg, str) for arg in command):
            raise ConfigurationError(
                f"command must be a non-empty list of strings (or one string) but got "
                f"{command!r}."
            )
        self.command = list(command)
        self.search_space: dict[str, BaseDistribution] = distributions_from_config(search_space)

        for option, value, allowed in (
            ("params_via", params_via, _PARAMS_VIA),
            ("keep_workdirs", keep_workdirs, _KEEP_WORKDIRS),
            ("on_failure", on_failure, _ON_FAILURE),
            ("direction", direction, _DIRECTIONS),
        ):
            if value not in allowed:
                raise ConfigurationError(f"{option} must be one of {allowed} but got {value!r}.")
        self.params_via = params_via
        self.keep_workdirs = keep_workdirs
        self.on_failure = on_failure
        self.direction = direction

        if (metric is None) == (metric_file is None):
            raise ConfigurationError(
                "Give exactly one of metric (a pattern matched against the output, e.g. "
                r"'^val_bpb:\s*(\S+)') and metric_file (a file the script writes)."
            )
        self.metric = metric
        self._metric_re = None if metric is None else self._compile("metric", metric)
        if metric_file is not None and (
            os.path.isabs(metric_file) or ".." in Path(metric_file).parts
        ):
            raise ConfigurationError(
                f"metric_file must be a path inside the trial's folder, relative to it, but got "
                f"{metric_file!r}; a shared absolute path would collide between trials."
            )
        if metric_key is not None and metric_file is None:
            raise ConfigurationError("metric_key names a field of metric_file; give metric_file.")
        self.metric_file = metric_file
        self.metric_key = metric_key

        self.intermediate = intermediate
        self._intermediate_re = None
        if intermediate is not None:
            self._intermediate_re = self._compile("intermediate", intermediate)
            groups = self._intermediate_re.groupindex
            if "value" not in groups and self._intermediate_re.groups not in (1, 2):
                raise ConfigurationError(
                    f"intermediate pattern {intermediate!r} needs groups named 'step' and "
                    "'value', or two groups (step, value), or one group (value)."
                )

        if timeout is not None and not timeout > 0:
            raise ConfigurationError(f"timeout must be positive or None but got {timeout!r}.")
        if not kill_grace >= 0:
            raise ConfigurationError(f"kill_grace must be >= 0 but got {kill_grace!r}.")
        self.timeout = None if timeout is None else float(timeout)
        self.kill_grace = float(kill_grace)

        cwd = Path.cwd()
        self.template = None if template is None else _resolve(template, cwd).resolve()
        self.template_ignore = tuple(template_ignore)
        self.workdir_root = (
            Path(tempfile.gettempdir())
            if workdir_root is None
            else _resolve(workdir_root, cwd).resolve()
        )

        if devices is not None:
            devices = [str(device) for device in devices]
            if not devices:
                raise ConfigurationError("devices must name at least one device, or be None.")
        self.devices = None if devices is None else list(devices)
        if not _ENV_NAME.match(device_env):
            raise ConfigurationError(
                f"device_env must be an environment variable name but got {device_env!r}."
            )
        self.device_env = device_env
        self._pool = None if self.devices is None else _DevicePool(self.devices)

        self.env = {str(key): str(value) for key, value in (env or {}).items()}
        self.env_prefix = env_prefix

        self.params_file: str | None = None
        if params_via in ("json", "toml"):
            self.params_file = params_file or f"params.{params_via}"
            if os.path.isabs(self.params_file) or ".." in Path(self.params_file).parts:
                raise ConfigurationError(
                    f"params_file must be relative to the trial's folder but got {params_file!r}."
                )
        elif params_file is not None:
            raise ConfigurationError(
                f"params_file is used only with params_via='json' or 'toml', not {params_via!r}."
            )

        self.constants_file: Path | None = None
        self._constants_rel: Path | None = None
        if params_via == "constants":
            if constants_file is None:
                raise ConfigurationError(
                    "params_via='constants' needs constants_file, the Python file whose "
                    "`NAME = value` lines are rewritten per trial."
                )
            base = self.template if self.template is not None else cwd
            self.constants_file = _resolve(constants_file, base).resolve()
            if self.template is not None and self.constants_file.is_relative_to(self.template):
                self._constants_rel = self.constants_file.relative_to(self.template)
            else:
                self._constants_rel = Path(self.constants_file.name)
        elif constants_file is not None:
            raise ConfigurationError(
                f"constants_file is used only with params_via='constants', not {params_via!r}."
            )

        self.name = name
        self.description = description or self._default_description()
        self.optimum = optimum
        self.noise = noise
        self.check()

    # --- configuration -------------------------------------------------------------------

    @staticmethod
    def _compile(option: str, pattern: str) -> re.Pattern[str]:
        try:
            return re.compile(pattern)
        except re.error as err:
            raise ConfigurationError(
                f"{option} pattern {pattern!r} is not a valid regular expression: {err}."
            ) from err

    def _default_description(self) -> str:
        goal = "minimize" if self.direction == "minimize" else "maximize"
        source = (
            f"the number matched by {self.metric!r} in its output"
            if self.metric is not None
            else f"the number in {self.metric_file!r}"
        )
        return f"Runs `{shlex.join(self.command)}` per trial; {goal} {source}."

    def _texts(self) -> list[str]:
        """Every string placeholders may appear in: the command and the env values."""
        return [*self.command, *self.env.values()]

    def check(self) -> None:
        """Check up front what can be checked before the first trial.

        Called by the constructor; call it again after changing the files it names.

        Raises:
            ConfigurationError: The message names the problem and what to do about it.
        """
        names = list(self.search_space)
        clash = sorted(set(names) & set(_RESERVED))
        if clash:
            raise ConfigurationError(
                f"Parameter name(s) {clash} are reserved placeholders ({list(_RESERVED)}); "
                "rename the parameter(s)."
            )
        known = set(_RESERVED) | set(names)
        used: set[str] = set()
        for text in self._texts():
            used |= _placeholders(text)
        unknown = sorted(used - known)
        if unknown:
            raise ConfigurationError(
                f"Unknown placeholder(s) {['{' + u + '}' for u in unknown]} in the command or "
                f"env; known: parameters {names} and {list(_RESERVED)}. Write {{{{ and }}}} for "
                "literal braces."
            )
        if "params_file" in used and self.params_file is None:
            raise ConfigurationError(
                "{params_file} is set only with params_via='json' or 'toml'."
            )
        if "constants_file" in used and self.constants_file is None:
            raise ConfigurationError("{constants_file} is set only with params_via='constants'.")
        if "device" in used and self.devices is None:
            raise ConfigurationError("{device} is set only when devices are given.")
        if "template" in used and self.template is None:
            raise ConfigurationError("{template} is set only when a template is given.")

        if self.template is not None:
            if not self.template.is_dir():
                raise ConfigurationError(
                    f"template {str(self.template)!r} is not a folder; give the folder copied "
                    "to make each trial's working folder."
                )
            if self.workdir_root.is_relative_to(self.template):
                raise ConfigurationError(
                    f"workdir_root {str(self.workdir_root)!r} is inside the template; each "
                    "trial's copy would copy the others. Choose a folder outside it."
                )
        self._check_executable()

        # Without parameter placeholders, "args" appends "--name value" for every parameter.
        self._auto_args = self.params_via == "args" and not used & set(names)
        if self.params_via == "args" and not self._auto_args:
            missing = [name for name in names if name not in used]
            if missing:
                raise ConfigurationError(
                    f"Parameter(s) {missing} are not passed to the script: the command names "
                    f"some parameters as placeholders but not these. Add "
                    f"{' '.join('{' + m + '}' for m in missing)} to it."
                )
        elif self.params_via == "env":
            # Without a prefix a parameter could silently replace PATH or HOME.
            inherited = set(os.environ) | set(self.env) if not self.env_prefix else set(self.env)
            for name in names:
                var = self._env_name(name)
                if not _ENV_NAME.match(var):
                    raise ConfigurationError(
                        f"Parameter {name!r} gives {var!r}, not a valid environment variable "
                        "name; rename it or change env_prefix."
                    )
                if var in inherited:
                    raise ConfigurationError(
                        f"Parameter {name!r} would overwrite the environment variable {var!r}; "
                        "set env_prefix (e.g. 'HP_')."
                    )
        elif self.params_via == "toml":
            for name, dist in self.search_space.items():
                if isinstance(dist, CategoricalDistribution) and None in dist.choices:
                    raise ConfigurationError(
                        f"Parameter {name!r} has the choice None, which TOML cannot hold; use "
                        "params_via='json'."
                    )
        elif self.params_via == "constants":
            self._check_constants()

    def _check_executable(self) -> None:
        program = _substitute(self.command[0], self._static_values(), partial=True)
        if _placeholders(program):
            return  # Known only per trial.
        if os.sep in program or (os.altsep and os.altsep in program):
            path = Path(os.path.expanduser(program))
            if not path.is_absolute():
                if self.template is None:
                    raise ConfigurationError(
                        f"The command {program!r} is a relative path, but without a template "
                        "each trial runs in a fresh empty folder; give an absolute path or a "
                        "template."
                    )
                path = self.template / path
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise ConfigurationError(
                    f"The command {program!r} does not exist or is not executable "
                    f"(looked for {str(path)!r})."
                )
        elif shutil.which(program, path=self._search_path()) is None:
            raise ConfigurationError(
                f"The command {program!r} was not found on PATH; install it or give its full path."
            )
        if self.template is None:
            for arg in self.command[1:]:
                if _placeholders(arg) or arg.startswith("-") or os.path.isabs(arg):
                    continue
                if self._constants_rel is not None and Path(arg) == self._constants_rel:
                    continue
                if Path(arg).suffix in (".py", ".sh") and Path(arg).is_file():
                    raise ConfigurationError(
                        f"The command names {arg!r}, a relative path, but without a template "
                        f"each trial runs in a fresh empty folder. Give "
                        f"{str(Path(arg).resolve())!r} or set template to its folder."
                    )

    def _search_path(self) -> str | None:
        return self.env.get("PATH", os.environ.get("PATH"))

    def _check_constants(self) -> None:
        assert self.constants_file is not None
        path = self.constants_file
        if not path.is_file():
            raise ConfigurationError(f"constants_file {str(path)!r} does not exist.")
        source = path.read_text(encoding="utf-8")
        for name in self.search_space:
            if not name.isidentifier():
                raise ConfigurationError(
                    f"Parameter {name!r} is not a Python name, so it cannot be a constant of "
                    f"{path.name}."
                )
        rewrite_constants(source, dict.fromkeys(self.search_space), filename=str(path))

    def _env_name(self, name: str) -> str:
        return f"{self.env_prefix}{name.upper()}"

    def _static_values(self) -> dict[str, str]:
        values = {"python": sys.executable}
        if self.template is not None:
            values["template"] = str(self.template)
        return values

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, base_dir: str | os.PathLike[str] | None = None
    ) -> ScriptObjective:
        """Build from the table form of a study spec's ``[objective]`` section.

        Keys are the constructor's arguments (``kind = "script"`` is accepted and ignored).
        ``template``, ``workdir_root`` and, without a template, ``constants_file`` are taken
        relative to ``base_dir`` (the spec file's folder) and may start with ``~``.

        Raises:
            ConfigurationError: An unknown key (the valid ones are listed) or a bad value.
        """
        valid = sorted(_CONFIG_KEYS | {"kind"})
        unknown = sorted(set(config) - set(valid))
        if unknown:
            raise ConfigurationError(
                f"Unknown key(s) {unknown} in the script objective; valid keys are {valid}."
            )
        kind = config.get("kind", "script")
        if kind != "script":
            raise ConfigurationError(f"kind must be 'script' here but got {kind!r}.")
        for key in ("command", "search_space"):
            if key not in config:
                raise ConfigurationError(f"The script objective needs `{key}`.")
        kwargs = {key: value for key, value in config.items() if key != "kind"}
        base = Path.cwd() if base_dir is None else Path(base_dir)
        for key in ("template", "workdir_root"):
            if kwargs.get(key) is not None:
                kwargs[key] = _resolve(kwargs[key], base)
        if kwargs.get("constants_file") is not None and kwargs.get("template") is None:
            kwargs["constants_file"] = _resolve(kwargs["constants_file"], base)
        if "template_ignore" in kwargs:
            kwargs["template_ignore"] = tuple(kwargs["template_ignore"])
        return cls(**kwargs)

    # --- pickling: the device pool is per process --------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pool = None if self.devices is None else _DevicePool(self.devices)

    # --- one trial -----------------------------------------------------------------------

    def evaluate(
        self, params: dict[str, Any], trial: optuna.trial.BaseTrial | None = None
    ) -> float:
        """Run the script on ``params``; ``nan`` (or :class:`ScriptFailedError`) on failure."""
        missing = [name for name in self.search_space if name not in params]
        if missing:
            raise ValueError(f"params lacks {missing}; every searched parameter needs a value.")
        params = {name: params[name] for name in self.search_space}
        number = getattr(trial, "number", None) if trial is not None else None
        device = self._pool.acquire() if self._pool is not None else None
        workdir: Path | None = None
        outcome: _Outcome | None = None
        try:
            if device is not None and trial is not None:
                trial.set_user_attr(DEVICE_ATTR, device)
            workdir = self._make_workdir(number)
            try:
                command, env = self._prepare(workdir, params, number, device)
            except (ConfigurationError, OSError) as err:
                outcome = _Outcome(reason=f"could not prepare the trial: {err}")
            else:
                outcome = self._run(command, env, workdir, trial)
        finally:
            if self._pool is not None and device is not None:
                self._pool.release(device)
            if workdir is not None:
                failed = outcome is not None and outcome.reason is not None
                keep = self.keep_workdirs == "always" or (
                    self.keep_workdirs == "failed" and failed
                )
                if keep and trial is not None:
                    trial.set_user_attr(WORKDIR_ATTR, str(workdir))
                if not keep:
                    shutil.rmtree(workdir, ignore_errors=True)
        if outcome.reason is None:
            assert outcome.value is not None
            return outcome.value
        return self._fail(outcome, trial, number)

    def _fail(self, outcome: _Outcome, trial: optuna.trial.BaseTrial | None, number: Any) -> float:
        assert outcome.reason is not None
        reason = _shorten(redact(outcome.reason))
        tail = redact(outcome.tail)
        if trial is not None:
            trial.set_user_attr(_attrs.FAILURE_REASON, reason)
            trial.set_user_attr(EXIT_CODE_ATTR, outcome.exit_code)
            trial.set_user_attr(OUTPUT_TAIL_ATTR, tail)
        _logger.warning(f"Trial {number} of {self.name!r} failed: {reason}")
        if self.on_failure == "raise":
            raise ScriptFailedError(reason, exit_code=outcome.exit_code, output_tail=tail)
        return math.nan

    def _make_workdir(self, number: int | None) -> Path:
        self.workdir_root.mkdir(parents=True, exist_ok=True)
        label = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name)
        prefix = f"{label}-trial{number}-" if number is not None else f"{label}-"
        workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=self.workdir_root))
        if self.template is not None:
            try:
                shutil.copytree(
                    self.template,
                    workdir,
                    symlinks=True,
                    dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(*self.template_ignore),
                )
            except BaseException:
                # A full disk or an unreadable template stops the study, not just this trial.
                shutil.rmtree(workdir, ignore_errors=True)
                raise
        return workdir

    def _prepare(
        self, workdir: Path, params: dict[str, Any], number: int | None, device: str | None
    ) -> tuple[list[str], dict[str, str]]:
        """Deliver the parameters; return the command and environment of this trial."""
        values = self._static_values()
        values["workdir"] = str(workdir)
        values["trial_number"] = "" if number is None else str(number)
        if device is not None:
            values["device"] = device
        values.update({name: _format_value(value) for name, value in params.items()})

        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")  # So that Python scripts stream their output.
        if self.params_via == "json" or self.params_via == "toml":
            assert self.params_file is not None
            path = workdir / self.params_file
            path.parent.mkdir(parents=True, exist_ok=True)
            if self.params_via == "json":
                path.write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
            else:
                path.write_text(_toml_dumps(params), encoding="utf-8")
            values["params_file"] = str(path)
            env[PARAMS_FILE_ENV] = str(path)
        elif self.params_via == "env":
            for name, value in params.items():
                env[self._env_name(name)] = _format_value(value)
        elif self.params_via == "constants":
            assert self.constants_file is not None and self._constants_rel is not None
            target = workdir / self._constants_rel
            source_path = target if target.is_file() else self.constants_file
            source = source_path.read_text(encoding="utf-8")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(
                rewrite_constants(source, params, filename=self.constants_file.name),
                encoding="utf-8",
            )
            values["constants_file"] = str(target)

        command = [_substitute(arg, values) for arg in self.command]
        if self._auto_args:
            for name, value in params.items():
                command += [f"--{name}", _format_value(value)]
        env.update({key: _substitute(value, values) for key, value in self.env.items()})
        if device is not None:
            env[self.device_env] = device
        return command, env

    def _run(
        self,
        command: list[str],
        env: dict[str, str],
        workdir: Path,
        trial: optuna.trial.BaseTrial | None,
    ) -> _Outcome:
        _logger.debug(f"Running {shlex.join(command)} in {workdir}")
        start = time.monotonic()
        deadline = None if self.timeout is None else start + self.timeout
        try:
            proc = subprocess.Popen(
                command,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as err:
            return _Outcome(reason=f"could not start {command[0]!r}: {err.strerror or err}")
        assert proc.stdout is not None
        lines: queue.Queue[list[str] | None] = queue.Queue()
        reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
        reader.start()

        tail = _Tail(_TAIL_CHARS)
        log = (workdir / OUTPUT_LOG_NAME).open("w") if self.keep_workdirs != "never" else None
        watch: tuple[str | None, bool] = (None, False)
        try:
            watch = self._watch(proc, lines, deadline, tail, log, trial)
        finally:
            # On every path (the end, a timeout, pruning, Ctrl-C): the script and whatever it
            # started are stopped, the reader ends, the pipe is closed.
            if log is not None:
                log.close()
            self._stop(proc)
            reader.join(timeout=_DRAIN_S)
            if reader.is_alive():
                # A process that left the group still holds the pipe; closing it under the
                # reader could hand its file number to another file, so leave both be.
                _logger.warning(
                    "A process the script started outside its process group still holds its "
                    "output open; it was not stopped."
                )
            else:
                proc.stdout.close()
        metric_text, timed_out = watch
        exit_code = proc.returncode
        _logger.debug(f"Exit code {exit_code} after {time.monotonic() - start:.2f} s")

        text = tail.text()
        if timed_out:
            return _Outcome(
                reason=f"timeout after {self.timeout:g} s", exit_code=None, tail=text
            )
        if exit_code != 0:
            if exit_code < 0:
                how = f"killed by {_signal_name(-exit_code)}"
                if exit_code == -signal.SIGKILL:
                    how += " (out of memory?)"
            else:
                how = f"exit code {exit_code}"
            return _Outcome(
                reason=f"{how}: {_error_line(tail.lines())}", exit_code=exit_code, tail=text
            )
        if self.metric_file is not None:
            return self._read_metric_file(workdir, text)
        if metric_text is None:
            _logger.warning(
                f"The metric pattern {self.metric!r} matched no line of a script that exited "
                "with 0; check the pattern against the output (user attribute "
                f"{OUTPUT_TAIL_ATTR!r})."
            )
            return _Outcome(
                reason=f"no metric: the pattern {self.metric!r} matched no line of the output",
                exit_code=0,
                tail=text,
            )
        return self._to_value(metric_text, f"pattern {self.metric!r}", text)

    def _watch(
        self,
        proc: subprocess.Popen[bytes],
        lines: queue.Queue[list[str] | None],
        deadline: float | None,
        tail: _Tail,
        log: IO[str] | None,
        trial: optuna.trial.BaseTrial | None,
    ) -> tuple[str | None, bool]:
        """Follow the output until the script ends; return the metric text and whether it
        timed out. Raises :class:`optuna.TrialPruned` when the trial is pruned."""
        metric_text: str | None = None
        reported: set[int] = set()
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                return metric_text, True
            wait = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
            try:
                batch = lines.get(timeout=max(wait, 0.0))
            except queue.Empty:
                if proc.poll() is not None:
                    # The script is gone but something it started holds the pipe open.
                    _kill_group(proc, signal.SIGKILL)
                continue
            if batch is None:
                break
            if log is not None:
                log.writelines(line + "\n" for line in batch)
            tail.extend(batch)
            for line in batch:
                if self._metric_re is not None:
                    match = self._metric_re.search(line)
                    if match:
                        metric_text = self._group(match)
                if self._intermediate_re is not None and trial is not None:
                    self._report(line, trial, reported)
        # End of output; the script may still be finishing.
        try:
            proc.wait(timeout=None if deadline is None else max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            return metric_text, True
        return metric_text, False

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the process group, SIGKILL it after the grace period."""
        if proc.poll() is None:
            _kill_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=self.kill_grace)
            except subprocess.TimeoutExpired:
                pass
        _kill_group(proc, signal.SIGKILL)
        proc.wait()

    @staticmethod
    def _group(match: re.Match[str]) -> str:
        if "value" in match.re.groupindex:
            return match.group("value")
        return match.group(1) if match.re.groups else match.group(0)

    def _report(
        self,
        line: str,
        trial: optuna.trial.BaseTrial,
        reported: set[int],
    ) -> None:
        assert self._intermediate_re is not None
        match = self._intermediate_re.search(line)
        if match is None:
            return
        pattern = match.re
        if "value" in pattern.groupindex:
            value_text = match.group("value")
            step_text = match.group("step") if "step" in pattern.groupindex else None
        elif pattern.groups == 2:
            step_text, value_text = match.group(1), match.group(2)
        else:
            step_text, value_text = None, match.group(1)
        try:
            value = float(value_text)
            step = len(reported) if step_text is None else int(float(step_text))
        except (TypeError, ValueError):
            _logger.debug(f"Skipping an intermediate line with no number: {line!r}")
            return
        if step in reported:
            return
        reported.add(step)
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"Pruned at step {step} with value {value}.")

    def _read_metric_file(self, workdir: Path, tail: str) -> _Outcome:
        assert self.metric_file is not None
        path = workdir / self.metric_file
        if not path.is_file():
            return _Outcome(
                reason=f"no metric: the script did not write {self.metric_file!r}",
                exit_code=0,
                tail=tail,
            )
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        if self.metric_key is None:
            return self._to_value(text, repr(self.metric_file), tail)
        try:
            data = json.loads(text)
            number = data[self.metric_key]
        except (ValueError, KeyError, TypeError):
            return _Outcome(
                reason=(
                    f"no metric: {self.metric_file!r} is not a JSON object with the key "
                    f"{self.metric_key!r}"
                ),
                exit_code=0,
                tail=tail,
            )
        return self._to_value(str(number), f"{self.metric_file!r}[{self.metric_key!r}]", tail)

    @staticmethod
    def _to_value(text: str, source: str, tail: str) -> _Outcome:
        try:
            value = float(text)
        except ValueError:
            return _Outcome(
                reason=f"the metric {_shorten(text, 40)!r} from {source} is not a number",
                exit_code=0,
                tail=tail,
            )
        if math.isnan(value):
            return _Outcome(reason=f"the metric from {source} is NaN", exit_code=0, tail=tail)
        return _Outcome(value=value, exit_code=0, tail=tail)

    def __repr__(self) -> str:
        return f"ScriptObjective(name={self.name!r}, command={shlex.join(self.command)!r})"


_CONFIG_KEYS = frozenset(
    name
    for name, parameter in inspect.signature(ScriptObjective.__init__).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
)
