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

import dataclasses
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
from bilevel_optuna._warnings import warn
from bilevel_optuna.exceptions import BilevelOptunaError
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.objectives._script_checks import check
from bilevel_optuna.objectives._script_metric import Outcome
from bilevel_optuna.objectives._script_metric import MetricReader
from bilevel_optuna.objectives._script_metric import compile_pattern
from bilevel_optuna.objectives._script_metric import error_line
from bilevel_optuna.objectives._script_metric import read_metric_file
from bilevel_optuna.objectives._script_metric import shorten
from bilevel_optuna.objectives._script_metric import to_value
from bilevel_optuna.objectives._script_params import PARAMS_FILE_ENV  # noqa: F401 - public name
from bilevel_optuna.objectives._script_params import prepare
from bilevel_optuna.objectives._script_params import rewrite_constants
from bilevel_optuna.objectives._script_process import DevicePool
from bilevel_optuna.objectives._script_process import run_process
from bilevel_optuna.objectives._script_process import signal_name
from bilevel_optuna.objectives._script_settings import FLAT_KEYS
from bilevel_optuna.objectives._script_settings import ScriptMetric
from bilevel_optuna.objectives._script_settings import ScriptParams
from bilevel_optuna.objectives._script_settings import ScriptRun
from bilevel_optuna.objectives._script_settings import group_kwargs
from bilevel_optuna.objectives._script_settings import merge
from bilevel_optuna.objectives._script_settings import resolve_path
from bilevel_optuna.objectives._script_settings import spelled
from bilevel_optuna.objectives._space_config import distributions_from_config

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

__all__ = [
    "ScriptFailedError",
    "ScriptMetric",
    "ScriptObjective",
    "ScriptParams",
    "ScriptRun",
    "rewrite_constants",
]

_logger = get_logger(__name__)

# Trial user attributes written by this module (besides _attrs.FAILURE_REASON).
EXIT_CODE_ATTR = "script:exit_code"
OUTPUT_TAIL_ATTR = "script:output_tail"
WORKDIR_ATTR = "script:workdir"
DEVICE_ATTR = "script:device"

OUTPUT_LOG_NAME = "bilevel_optuna_output.log"



class ScriptFailedError(BilevelOptunaError):
    """A trial's script crashed, timed out or printed no usable metric.

    Raised only with ``ScriptRun(on_failure="raise")``; by default the trial returns ``nan``.

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


class ScriptObjective(Objective):
    """Run a command once per trial and read the metric it prints.

    Each trial runs in a folder of its own (a copy of the template, or a fresh temporary one),
    as a process group of its own, so that parallel trials never collide and a timeout or a
    pruned trial stops the script and everything it started. The settings come in three
    groups: :class:`ScriptRun` (how the command runs), :class:`ScriptParams` (how the
    parameters reach it) and :class:`ScriptMetric` (how the value is read); the common ones
    have keywords of their own.

    Args:
        command: The command, as a list of arguments or one string split like a shell would
            (no shell runs it). It may name placeholders: ``{python}`` (this interpreter),
            ``{template}``, ``{workdir}`` (the trial's folder, also its working directory),
            ``{params_file}``, ``{constants_file}``, ``{trial_number}``, ``{device}``, and each
            parameter by name. Write ``{{`` and ``}}`` for literal braces.
        search_space: Parameter name to an Optuna distribution, or the table form of
            :func:`~bilevel_optuna.objectives.distributions_from_config`
            (``{"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}}``).
        metric: A regular expression for the metric (``pattern`` of :class:`ScriptMetric`), or
            the whole :class:`ScriptMetric`.
        direction: ``"minimize"`` or ``"maximize"`` (``direction`` of :class:`ScriptMetric`).
        timeout: Seconds a trial may run (``timeout`` of :class:`ScriptRun`); ``None``: no limit.
        template: The folder copied for each trial (``template`` of :class:`ScriptRun`).
        run: How the command runs; see :class:`ScriptRun`.
        params: How the parameters reach the script; ``ScriptParams(via="args")`` by default.
        name: Registry name of the objective.
        description: What is optimized, for the LLM prompt.
        optimum: Best attainable value where known.
        noise: Notes on noise, for the prompt and the reports.
        **deprecated: The flat keywords of earlier releases (``params_via``, ``metric_file``,
            ``keep_workdirs``, ...) still work with a :class:`FutureWarning` naming the settings
            field that replaces each.

    Raises:
        ConfigurationError: A setting is wrong or cannot work (a command that does not exist, a
            pattern that does not compile, a constant absent from the file, ...): checked here,
            before the first trial.

    Example:
        .. code-block:: python

            objective = ScriptObjective(
                command=["{template}/.venv/bin/python", "train.py"],
                search_space={"MATRIX_LR": {"type": "float", "low": 0.01, "high": 0.1,
                                            "log": True}},
                metric=r"^val_bpb:\\s*(\\S+)",
                template="~/autoresearch",
                timeout=600,
                params=ScriptParams(via="constants", constants_file="train.py"),
            )
            study = optuna.create_study(direction=objective.direction)
            study.optimize(objective, n_trials=20)
    """

    def __init__(
        self,
        *,
        command: str | Sequence[str],
        search_space: Mapping[str, Any],
        metric: str | ScriptMetric | None = None,
        direction: str | None = None,
        timeout: float | None = None,
        template: str | os.PathLike[str] | None = None,
        run: ScriptRun | None = None,
        params: ScriptParams | None = None,
        name: str = "script",
        description: str = "",
        optimum: float | None = None,
        noise: str = "",
        **deprecated: Any,
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
        legacy = _take_deprecated(deprecated)
        if isinstance(metric, ScriptMetric):
            metric_settings: ScriptMetric | None = metric
        else:
            metric_settings = None
            legacy["metric"]["metric"] = metric
        self.metric_settings: ScriptMetric = merge(
            "metric", metric_settings, {"direction": direction, **legacy["metric"]}
        )
        self.run_settings: ScriptRun = merge(
            "run", run, {"timeout": timeout, "template": template, **legacy["run"]}
        )
        self.params_settings: ScriptParams = _resolve_constants(
            merge("params", params, legacy["params"]), self.run_settings.template
        )
        self.direction = self.metric_settings.direction
        self._metric_re = (
            None if self.metric is None else compile_pattern("metric", self.metric)
        )
        self._intermediate_re = (
            None
            if self.intermediate is None
            else compile_pattern("intermediate", self.intermediate)
        )
        self._pool = None if self.devices is None else DevicePool(self.devices)
        self.name = name
        self.description = description or self._default_description()
        self.optimum = optimum
        self.noise = noise
        self.check()

    # Read-only views of the settings under the flat names of earlier releases (what
    # _script_params and _script_checks read).
    metric = property(lambda self: self.metric_settings.pattern)
    metric_file = property(lambda self: self.metric_settings.file)
    metric_key = property(lambda self: self.metric_settings.key)
    intermediate = property(lambda self: self.metric_settings.intermediate)
    params_via = property(lambda self: self.params_settings.via)
    params_file = property(lambda self: self.params_settings.file_name)
    env_prefix = property(lambda self: self.params_settings.env_prefix)
    constants_file = property(lambda self: self.params_settings.constants_file)
    timeout = property(lambda self: self.run_settings.timeout)
    kill_grace = property(lambda self: self.run_settings.kill_grace)
    template = property(lambda self: self.run_settings.template)
    template_ignore = property(lambda self: self.run_settings.template_ignore)
    workdir_root = property(lambda self: self.run_settings.workdir_root)
    keep_workdirs = property(lambda self: self.run_settings.keep_workdirs)
    devices = property(
        lambda self: None if self.run_settings.devices is None else list(self.run_settings.devices)
    )
    device_env = property(lambda self: self.run_settings.device_env)
    env = property(lambda self: self.run_settings.env)
    on_failure = property(lambda self: self.run_settings.on_failure)

    @property
    def _constants_rel(self) -> Path | None:
        """Where the constants file lies in a trial's folder."""
        path = self.params_settings.constants_file
        if path is None:
            return None
        assert isinstance(path, Path)
        template = self.run_settings.template
        if template is not None and path.is_relative_to(template):
            return path.relative_to(template)
        return Path(path.name)

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

        Keys are the flat names of the settings (``command``, ``search_space``, ``metric``,
        ``params_via``, ``keep_workdirs``, ...; ``kind = "script"`` is accepted and ignored),
        so that every spec written so far still loads. ``template``, ``workdir_root`` and,
        without a template, ``constants_file`` are taken relative to ``base_dir`` (the spec
        file's folder) and may start with ``~``.

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
        flat = {key: value for key, value in config.items() if key in FLAT_KEYS}
        base = Path.cwd() if base_dir is None else Path(base_dir)
        for key in ("template", "workdir_root"):
            if flat.get(key) is not None:
                flat[key] = resolve_path(flat[key], base)
        if flat.get("constants_file") is not None and flat.get("template") is None:
            flat["constants_file"] = resolve_path(flat["constants_file"], base)
        grouped = group_kwargs(flat)
        return cls(
            **{key: config[key] for key in _OWN_KEYS if key in config},
            metric=ScriptMetric(**grouped["metric"]),
            run=ScriptRun(**grouped["run"]),
            params=ScriptParams(**grouped["params"]),
        )

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


#: The constructor's keywords that are no settings field.
_OWN_KEYS = ("command", "search_space", "name", "description", "optimum", "noise")
#: The keys of a spec's script table: the constructor's own and every settings field, flat.
_CONFIG_KEYS = frozenset(_OWN_KEYS) | frozenset(FLAT_KEYS)
#: The flat keywords that stay shortcuts of the constructor (not deprecated).
_SHORTCUTS = frozenset({"metric", "direction", "timeout", "template"})


def _take_deprecated(kwargs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The deprecated flat keywords, by settings group (still flat: what :func:`merge` takes),
    each with a :class:`FutureWarning`."""
    for key in kwargs:
        if key not in FLAT_KEYS or key in _SHORTCUTS:
            raise TypeError(f"ScriptObjective() got an unexpected keyword argument {key!r}")
        warn(
            f"ScriptObjective({key}=...) is deprecated: pass {spelled(key)} instead; the flat "
            "keyword will be removed in a later release.",
            FutureWarning,
        )
    grouped: dict[str, dict[str, Any]] = {"metric": {}, "run": {}, "params": {}}
    for key, value in kwargs.items():
        grouped[FLAT_KEYS[key][0]][key] = value
    return grouped


def _resolve_constants(params: ScriptParams, template: Path | None) -> ScriptParams:
    """``params`` with its constants file made absolute (relative paths from the template)."""
    if params.constants_file is None:
        return params
    base = template if template is not None else Path.cwd()
    path = resolve_path(params.constants_file, base).resolve()
    return dataclasses.replace(params, constants_file=path)
