"""A training script as an objective: one subprocess per trial, the metric read from its output.

Researchers already have a script that prints a metric (autoresearch's ``train.py`` prints
``val_bpb: 0.997900``). :class:`ScriptObjective` runs it once per trial, in a folder of its own,
passes the trial's parameters the way the script expects them, streams the output for
intermediate values (so Optuna's pruners work) and reads the final metric from it.

A trial whose script crashes (non-zero exit, timeout, no metric, NaN) returns ``nan``, which
Optuna records as a FAILED trial while the study goes on; the reason is stored in the trial's
user attribute :data:`bilevel_optuna._attrs.FAILURE_REASON`, where the LLM proposer's prompt
shows it, so that the model stops proposing configurations that crash.

The class is assembled from four modules along the seams of its job: parameter delivery
(``_script_params``), process supervision (``_script_process``), metric parsing
(``_script_metric``) and configuration checks (``_script_checks``).
"""

from __future__ import annotations

import inspect
import math
import os
import re
import shlex
import shutil
import signal
import tempfile
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import optuna

from bilevel_optuna import _attrs
from bilevel_optuna._logging import get_logger
from bilevel_optuna._logging import redact
from bilevel_optuna.exceptions import BilevelOptunaError
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.objectives._script_checks import ENV_NAME
from bilevel_optuna.objectives._script_checks import check
from bilevel_optuna.objectives._script_metric import Outcome
from bilevel_optuna.objectives._script_metric import MetricReader
from bilevel_optuna.objectives._script_metric import compile_pattern
from bilevel_optuna.objectives._script_metric import error_line
from bilevel_optuna.objectives._script_metric import read_metric_file
from bilevel_optuna.objectives._script_metric import shorten
from bilevel_optuna.objectives._script_metric import to_value
from bilevel_optuna.objectives._script_params import PARAMS_FILE_ENV  # noqa: F401 - public name
from bilevel_optuna.objectives._script_params import PARAMS_VIA
from bilevel_optuna.objectives._script_params import prepare
from bilevel_optuna.objectives._script_params import rewrite_constants
from bilevel_optuna.objectives._script_process import DevicePool
from bilevel_optuna.objectives._script_process import run_process
from bilevel_optuna.objectives._script_process import signal_name
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

OUTPUT_LOG_NAME = "bilevel_optuna_output.log"

_KEEP_WORKDIRS = ("never", "failed", "always")
_ON_FAILURE = ("nan", "raise")
_DIRECTIONS = ("minimize", "maximize")
_DEFAULT_IGNORE = (".git", ".venv", "venv", "__pycache__", "*.pyc", ".ipynb_checkpoints")


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
            ("params_via", params_via, PARAMS_VIA),
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
        self._metric_re = None if metric is None else compile_pattern("metric", metric)
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
            self._intermediate_re = compile_pattern("intermediate", intermediate)
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
        if not ENV_NAME.match(device_env):
            raise ConfigurationError(
                f"device_env must be an environment variable name but got {device_env!r}."
            )
        self.device_env = device_env
        self._pool = None if self.devices is None else DevicePool(self.devices)

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

    def _default_description(self) -> str:
        goal = "minimize" if self.direction == "minimize" else "maximize"
        source = (
            f"the number matched by {self.metric!r} in its output"
            if self.metric is not None
            else f"the number in {self.metric_file!r}"
        )
        return f"Runs `{shlex.join(self.command)}` per trial; {goal} {source}."

    def check(self) -> None:
        """Check up front what can be checked before the first trial.

        Called by the constructor; call it again after changing the files it names.

        Raises:
            ConfigurationError: The message names the problem and what to do about it.
        """
        check(self)

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
        self._pool = None if self.devices is None else DevicePool(self.devices)

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
        outcome: Outcome | None = None
        try:
            if device is not None and trial is not None:
                trial.set_user_attr(DEVICE_ATTR, device)
            workdir = self._make_workdir(number)
            try:
                command, env = prepare(self, workdir, params, number, device)
            except (ConfigurationError, OSError) as err:
                outcome = Outcome(reason=f"could not prepare the trial: {err}")
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

    def _fail(self, outcome: Outcome, trial: optuna.trial.BaseTrial | None, number: Any) -> float:
        assert outcome.reason is not None
        reason = shorten(redact(outcome.reason))
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

    def _run(
        self,
        command: list[str],
        env: dict[str, str],
        workdir: Path,
        trial: optuna.trial.BaseTrial | None,
    ) -> Outcome:
        reader = MetricReader(self._metric_re, self._intermediate_re, trial)
        ended = run_process(
            command,
            env=env,
            workdir=workdir,
            timeout=self.timeout,
            kill_grace=self.kill_grace,
            log_path=workdir / OUTPUT_LOG_NAME if self.keep_workdirs != "never" else None,
            on_lines=reader,
        )
        if ended.start_error is not None:
            return Outcome(reason=f"could not start {command[0]!r}: {ended.start_error}")
        text = ended.tail.text()
        if ended.timed_out:
            return Outcome(reason=f"timeout after {self.timeout:g} s", exit_code=None, tail=text)
        exit_code = ended.exit_code
        assert exit_code is not None
        if exit_code != 0:
            if exit_code < 0:
                how = f"killed by {signal_name(-exit_code)}"
                if exit_code == -signal.SIGKILL:
                    how += " (out of memory?)"
            else:
                how = f"exit code {exit_code}"
            return Outcome(
                reason=f"{how}: {error_line(ended.tail.lines())}", exit_code=exit_code, tail=text
            )
        if self.metric_file is not None:
            return read_metric_file(workdir, self.metric_file, self.metric_key, text)
        if reader.metric_text is None:
            _logger.warning(
                f"The metric pattern {self.metric!r} matched no line of a script that exited "
                "with 0; check the pattern against the output (user attribute "
                f"{OUTPUT_TAIL_ATTR!r})."
            )
            return Outcome(
                reason=f"no metric: the pattern {self.metric!r} matched no line of the output",
                exit_code=0,
                tail=text,
            )
        return to_value(reader.metric_text, f"pattern {self.metric!r}", text)

    def __repr__(self) -> str:
        return f"ScriptObjective(name={self.name!r}, command={shlex.join(self.command)!r})"


_CONFIG_KEYS = frozenset(
    name
    for name, parameter in inspect.signature(ScriptObjective.__init__).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
)
