"""The prompt: objective, search space, a bounded window of history, pending trials, notes.

Its length is bounded however long the study runs: the history is a window of at most
``history_size`` trials, failed and pending trials are capped, and mechanism notes are capped.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from bilevel_optuna import _attrs

#: Caps that keep the prompt bounded.
MAX_FAILED_SHOWN = 5
MAX_PENDING_SHOWN = 8
MAX_NOTES = 8
MAX_NOTE_CHARS = 300
MAX_DESCRIPTION_CHARS = 1200
MAX_FAILURE_REASON_CHARS = 120


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    """A named prompt style: the system message, the sentence that asks for proposals, and the
    shape of the prompt and of the answer.

    Each answer holds one configuration (several candidates are several answers); ``ask`` may
    use ``{k}``, the number of configurations one answer is asked for.

    Attributes:
        rationale: Whether the answer carries a short free-text rationale. Without it the answer
            is the bare configuration object (``{"x": 1.5, "y": 3}``): on the embedded model a
            rationale is about half of the tokens written, and writing is most of a call once
            the prompt is cached.
        history_format: ``"json"`` (one JSON object per trial, names repeated) or ``"table"``
            (the names once in a header, then one row of values per trial: about half the
            prompt tokens for two parameters, and less the more parameters there are).
    """

    name: str
    system: str
    ask: str
    rationale: bool = True
    history_format: str = "json"

    def __post_init__(self) -> None:
        if self.history_format not in HISTORY_FORMATS:
            raise ValueError(
                f"history_format must be one of {HISTORY_FORMATS} but got "
                f"{self.history_format!r}."
            )


HISTORY_FORMATS = ("json", "table")


TEMPLATES: dict[str, PromptTemplate] = {
    "default": PromptTemplate(
        name="default",
        system=(
            "You are an expert in hyperparameter optimization. You propose configurations to "
            "evaluate next. Answer with one JSON object only."
        ),
        ask=(
            "Propose a new configuration. Do not repeat an evaluated or pending "
            "configuration. Give a short rationale."
        ),
    ),
    "explore": PromptTemplate(
        name="explore",
        system=(
            "You are an expert in hyperparameter optimization who balances exploration and "
            "exploitation. Answer with one JSON object only."
        ),
        ask=(
            "Propose a new configuration. Try regions of the space that have not been "
            "evaluated yet, as well as refinements of the best. Never repeat a configuration. "
            "Give a short rationale."
        ),
    ),
    "exploit": PromptTemplate(
        name="exploit",
        system=(
            "You are an expert in hyperparameter optimization. You refine the best "
            "configurations found so far. Answer with one JSON object only."
        ),
        ask=(
            "Propose a new configuration close to the best ones but not equal to any "
            "evaluated configuration. Give a short rationale."
        ),
    ),
    "minimal": PromptTemplate(
        name="minimal",
        system="Propose hyperparameters. Answer with JSON only.",
        ask="Propose a new configuration.",
    ),
    # The fast style: short messages, the history as a table, the answer a bare configuration.
    "compact": PromptTemplate(
        name="compact",
        system="You propose hyperparameters to evaluate next. Answer with one JSON object.",
        ask="Propose a new configuration, different from every evaluated and pending one.",
        rationale=False,
        history_format="table",
    ),
}

HISTORY_ORDERS = ("best", "chronological", "worst", "stable")


#: Significant digits of numbers in the prompt: SmolLM2's tokenizer spends a token per digit,
#: and four digits tell a model as much as seventeen.
SIGNIFICANT_DIGITS = 4


def _format_number(value: float) -> str:
    if value == 0 or (1e-3 <= abs(value) < 1e5):
        return f"{value:.{SIGNIFICANT_DIGITS}g}"
    return f"{value:.{SIGNIFICANT_DIGITS - 1}e}"


def format_value(value: Any) -> str:
    """A parameter or objective value as the model reads it (JSON where it is not a number)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        return _format_number(value) if math.isfinite(value) else json.dumps(str(value))
    return str(value)


def format_params(params: Mapping[str, Any], names: Sequence[str]) -> str:
    inner = ", ".join(f'"{n}": {format_value(params[n])}' for n in names if n in params)
    return "{" + inner + "}"


def describe_parameter(name: str, dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return f"- {name}: one of {json.dumps(list(dist.choices))}"
    kind = "float" if isinstance(dist, FloatDistribution) else "integer"
    text = f"- {name}: {kind} in [{format_value(dist.low)}, {format_value(dist.high)}]"  # type: ignore[attr-defined]
    if getattr(dist, "log", False):
        text += ", log scale"
    step = getattr(dist, "step", None)
    if step is not None and not (kind == "integer" and step == 1):
        text += f", step {format_value(step)}"
    return text


def order_history(
    trials: Sequence[FrozenTrial], *, order: str, size: int, minimize: bool
) -> list[FrozenTrial]:
    """The window of completed trials shown to the model, in the order it reads them.

    ``best``: the best ``size`` trials, best first. ``chronological``: the latest ``size``, oldest
    first. ``worst``: the best ``size`` trials, worst first (the best closest to the question).
    ``stable``: oldest first, like ``chronological``, but the window's start moves in blocks of
    half its size, so for that many trials in a row each prompt only appends to the last one's
    history and a local model reads just the new lines (the other orders change the history's
    first lines whenever a trial enters or leaves the window). It shows between ``size / 2``
    and ``size`` trials, always including the best one.
    Ties are broken by trial number so the prompt, and so replay, is deterministic.
    """
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if order == "chronological":
        return sorted(complete, key=lambda t: t.number)[-size:] if size > 0 else []
    if order == "stable":
        return _stable_window(complete, size=size, minimize=minimize)
    sign = 1.0 if minimize else -1.0
    best = sorted(complete, key=lambda t: (sign * float(t.value), t.number))[:size]  # type: ignore[arg-type]
    return best if order == "best" else best[::-1]


def _stable_window(
    complete: Sequence[FrozenTrial], *, size: int, minimize: bool
) -> list[FrozenTrial]:
    if size <= 0 or not complete:
        return []
    ordered = sorted(complete, key=lambda t: t.number)
    sign = 1.0 if minimize else -1.0
    best = min(ordered, key=lambda t: (sign * float(t.value), t.number))  # type: ignore[arg-type]

    def window(room: int) -> list[FrozenTrial]:
        # The window starts at a multiple of the block: the last such start that leaves room
        # for the newest trials, so it holds between room - block + 1 and room trials.
        block = max(room // 2, 1)
        start = max(0, (len(ordered) - room + block - 1) // block * block)
        return ordered[start:]

    shown = window(size)
    if best in shown or size == 1:
        return shown if best in shown else [best]
    # The incumbent stays visible, first, so the model always sees what to beat; the rest of
    # the window makes room for it, and changes only when a new best is found outside it.
    return [best] + [t for t in window(size - 1) if t is not best][-(size - 1) :]


@dataclasses.dataclass
class PromptInputs:
    description: str
    metric_name: str
    minimize: bool
    search_space: Mapping[str, BaseDistribution]
    history: Sequence[FrozenTrial]
    n_complete: int
    failed: Sequence[FrozenTrial]
    pending: Sequence[Mapping[str, Any]]
    notes: Sequence[str]
    prior_knowledge: str
    n_candidates: int
    history_order: str
    #: Lines of a classical optimizer's state (samplers/_state.py), shown after the history.
    state: Sequence[str] = ()


def build_messages(template: PromptTemplate, inputs: PromptInputs) -> list[dict[str, str]]:
    """The chat messages for one proposal request."""
    names = list(inputs.search_space)
    goal = "minimize" if inputs.minimize else "maximize"
    table = template.history_format == "table"

    def config(params: Mapping[str, Any]) -> str:
        if table:
            return ", ".join(format_value(params[n]) for n in names if n in params)
        return format_params(params, names)

    lines: list[str] = []
    if inputs.description:
        lines.append("Task: " + inputs.description.strip()[:MAX_DESCRIPTION_CHARS])
    lines.append(f"Goal: {goal} {inputs.metric_name}.")
    lines.append("Parameters:")
    lines.extend(describe_parameter(n, d) for n, d in inputs.search_space.items())
    if inputs.prior_knowledge:
        lines.append("Prior knowledge: " + inputs.prior_knowledge.strip()[:MAX_DESCRIPTION_CHARS])
    if inputs.history:
        label = {
            "best": "best first",
            "chronological": "oldest first",
            "worst": "best last",
            "stable": "oldest first",
        }[inputs.history_order]
        # What changes from one trial to the next (counts, pending trials, notes) comes after
        # the history, so consecutive prompts share a long prefix that a local model reuses.
        if table:
            lines.append(f"Evaluated, {label} ({', '.join(names)} -> {inputs.metric_name}):")
        else:
            lines.append(f"Evaluated, {label} (configuration -> {inputs.metric_name}):")
        for t in inputs.history:
            lines.append(f"{config(t.params)} -> {format_value(t.value)}")
        lines.append(f"({len(inputs.history)} of {inputs.n_complete} evaluated shown.)")
    else:
        lines.append("Nothing has been evaluated yet.")
    lines.extend(inputs.state)
    failed = list(inputs.failed)[-MAX_FAILED_SHOWN:]
    if failed:
        lines.append("Failed or pruned (avoid these):")
    for t in failed:
        reason = str(t.user_attrs.get(_attrs.FAILURE_REASON, "")).strip()
        state = "failed" if t.state == TrialState.FAIL else "pruned"
        if reason:
            state += ": " + reason[:MAX_FAILURE_REASON_CHARS]
        lines.append(f"{config(t.params)} -> {state}")
    pending = list(inputs.pending)[:MAX_PENDING_SHOWN]
    if pending:
        lines.append("Pending (being evaluated now, do not repeat):")
        lines.extend(config(p) for p in pending)
    for note in list(inputs.notes)[:MAX_NOTES]:
        lines.append("Note: " + note[:MAX_NOTE_CHARS])
    lines.append(template.ask.format(k=inputs.n_candidates))
    return [
        {"role": "system", "content": template.system},
        {"role": "user", "content": "\n".join(lines)},
    ]
