"""Metric parsing for :class:`~bilevel_optuna.objectives.ScriptObjective`.

The final metric from a line of the output (a pattern) or from a file the script writes; the
intermediate values (step, value) reported to the trial as they are printed, so pruners work;
and, when a script fails, the one line that best says why.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import optuna

from bilevel_optuna._logging import get_logger
from bilevel_optuna.exceptions import ConfigurationError

_logger = get_logger(__name__)

_ERROR_LINE = re.compile(r"^\s*[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Fault)\b")
_REASON_CHARS = 200


@dataclasses.dataclass
class Outcome:
    """A trial's result: a value, or the reason it has none."""

    value: float | None = None
    reason: str | None = None
    exit_code: int | None = None
    tail: str = ""


def compile_pattern(option: str, pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled, or an error naming the option it came from."""
    try:
        return re.compile(pattern)
    except re.error as err:
        raise ConfigurationError(
            f"{option} pattern {pattern!r} is not a valid regular expression: {err}."
        ) from err


def _group(match: re.Match[str]) -> str:
    if "value" in match.re.groupindex:
        return match.group("value")
    return match.group(1) if match.re.groups else match.group(0)


class MetricReader:
    """Reads the output as it streams: keeps the last metric match, reports intermediates."""

    def __init__(
        self,
        metric: re.Pattern[str] | None,
        intermediate: re.Pattern[str] | None,
        trial: optuna.trial.BaseTrial | None,
    ) -> None:
        self._metric = metric
        self._intermediate = intermediate if trial is not None else None
        self._trial = trial
        self._reported: set[int] = set()
        self.metric_text: str | None = None

    def __call__(self, batch: list[str]) -> None:
        for line in batch:
            if self._metric is not None:
                match = self._metric.search(line)
                if match:
                    self.metric_text = _group(match)
            if self._intermediate is not None:
                self._report(line)

    def _report(self, line: str) -> None:
        assert self._intermediate is not None and self._trial is not None
        match = self._intermediate.search(line)
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
            step = len(self._reported) if step_text is None else int(float(step_text))
        except (TypeError, ValueError):
            _logger.debug(f"Skipping an intermediate line with no number: {line!r}")
            return
        if step in self._reported:
            return
        self._reported.add(step)
        self._trial.report(value, step)
        if self._trial.should_prune():
            raise optuna.TrialPruned(f"Pruned at step {step} with value {value}.")


def read_metric_file(
    workdir: Path, metric_file: str, metric_key: str | None, tail: str
) -> Outcome:
    """The metric from the file the script wrote (a number, or a JSON object's key)."""
    path = workdir / metric_file
    if not path.is_file():
        return Outcome(
            reason=f"no metric: the script did not write {metric_file!r}",
            exit_code=0,
            tail=tail,
        )
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    if metric_key is None:
        return to_value(text, repr(metric_file), tail)
    try:
        data = json.loads(text)
        number = data[metric_key]
    except (ValueError, KeyError, TypeError):
        return Outcome(
            reason=(
                f"no metric: {metric_file!r} is not a JSON object with the key {metric_key!r}"
            ),
            exit_code=0,
            tail=tail,
        )
    return to_value(str(number), f"{metric_file!r}[{metric_key!r}]", tail)


def to_value(text: str, source: str, tail: str) -> Outcome:
    """The metric text as a number; NaN and text that is no number are failures."""
    try:
        value = float(text)
    except ValueError:
        return Outcome(
            reason=f"the metric {shorten(text, 40)!r} from {source} is not a number",
            exit_code=0,
            tail=tail,
        )
    if math.isnan(value):
        return Outcome(reason=f"the metric from {source} is NaN", exit_code=0, tail=tail)
    return Outcome(value=value, exit_code=0, tail=tail)


def error_line(lines: Sequence[str]) -> str:
    """The line that best says why a script failed: its last exception, else its last line."""
    stripped = [line.strip() for line in lines if line.strip()]
    for line in reversed(stripped):
        if _ERROR_LINE.match(line):
            return line
    return stripped[-1] if stripped else "no output"


def shorten(text: str, limit: int = _REASON_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
