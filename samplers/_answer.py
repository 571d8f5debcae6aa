"""The answer the model must give: its JSON schema, parsing, validation and repair.

The schema encodes each parameter's type and bounds, but llama.cpp's grammar does not enforce a
number's minimum and maximum, so every value is checked and repaired here: clamped into range,
snapped to the step, rounded to an integer, a near-miss categorical matched. Each repair is
recorded, so a trial shows how far the model's answer was from what was evaluated.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution

#: Longest rationale kept; the embedded model can repeat a free-text field until the token cap.
RATIONALE_MAX_CHARS = 80


class AnswerError(ValueError):
    """The answer cannot be used; the message is fed back to the model."""


@dataclasses.dataclass
class ParsedAnswer:
    candidates: list[dict[str, Any]]
    rationale: str
    repairs: list[list[str]]  # per candidate


def check_search_space(search_space: Mapping[str, BaseDistribution]) -> None:
    """Raise ``ValueError`` for a distribution the sampler cannot express in a prompt."""
    for name, dist in search_space.items():
        if not isinstance(dist, (FloatDistribution, IntDistribution, CategoricalDistribution)):
            raise ValueError(
                f"LLMSampler cannot express parameter {name!r} of type {type(dist).__name__}; "
                "use FloatDistribution, IntDistribution or CategoricalDistribution."
            )


def _param_schema(dist: BaseDistribution) -> dict[str, Any]:
    if isinstance(dist, CategoricalDistribution):
        return {"enum": list(dist.choices)}
    if isinstance(dist, IntDistribution):
        return {"type": "integer", "minimum": dist.low, "maximum": dist.high}
    assert isinstance(dist, FloatDistribution)
    return {"type": "number", "minimum": dist.low, "maximum": dist.high}


def answer_schema(
    search_space: Mapping[str, BaseDistribution], n_candidates: int, *, rationale: bool = True
) -> dict[str, Any]:
    """JSON schema of an answer holding ``n_candidates`` configurations and a short rationale.

    With ``rationale=False`` and one candidate, the answer is the bare configuration object:
    the fewest tokens a model can write for it.
    """
    candidate = {
        "type": "object",
        "properties": {name: _param_schema(d) for name, d in search_space.items()},
        "required": list(search_space),
        "additionalProperties": False,
    }
    if not rationale and n_candidates == 1:
        return candidate
    properties: dict[str, Any] = {
        # Candidates first: a small model that rambles in the rationale has then already
        # answered what matters before it reaches the token cap.
        "candidates": {
            "type": "array",
            "items": candidate,
            "minItems": n_candidates,
            "maxItems": n_candidates,
        }
    }
    if rationale:
        properties["rationale"] = {"type": "string", "maxLength": RATIONALE_MAX_CHARS}
    return {
        "type": "object",
        "properties": properties,
        # Every property required and none other: OpenAI's strict structured output takes the
        # schema only so (chat/_openai.py strict_qualifies). The rationale's maxLength keeps
        # it short, and it comes last, after what matters.
        "required": list(properties),
        "additionalProperties": False,
    }


def _repair_float(name: str, value: Any, dist: FloatDistribution, repairs: list[str]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(str(value).strip())
        except ValueError:
            raise AnswerError(f"{name} must be a number but got {value!r}.") from None
        repairs.append(f"{name}: parsed from text")
    value = float(value)
    if not math.isfinite(value):
        raise AnswerError(f"{name} must be a finite number but got {value}.")
    if value < dist.low or value > dist.high:
        clamped = min(max(value, dist.low), dist.high)
        repairs.append(f"{name}: clamped {value:g} to {clamped:g}")
        value = clamped
    if dist.step is not None:
        snapped = dist.low + round((value - dist.low) / dist.step) * dist.step
        snapped = min(max(snapped, dist.low), dist.high)
        if not math.isclose(snapped, value, rel_tol=0, abs_tol=1e-12):
            repairs.append(f"{name}: snapped {value:g} to step {dist.step:g}")
        value = float(snapped)
    return value


def _repair_int(name: str, value: Any, dist: IntDistribution, repairs: list[str]) -> int:
    number = _repair_float(name, value, FloatDistribution(dist.low, dist.high), repairs)
    rounded = int(round(number))
    if rounded != number:
        repairs.append(f"{name}: rounded {number:g} to {rounded}")
    if dist.step != 1:
        snapped = dist.low + round((rounded - dist.low) / dist.step) * dist.step
        snapped = min(snapped, dist.high - (dist.high - dist.low) % dist.step)
        if snapped != rounded:
            repairs.append(f"{name}: snapped {rounded} to step {dist.step}")
        rounded = int(snapped)
    return rounded


def _repair_categorical(
    name: str, value: Any, dist: CategoricalDistribution, repairs: list[str]
) -> Any:
    for choice in dist.choices:
        if value == choice and type(value) is type(choice):
            return choice
    # Near misses: same text ignoring case, equal numbers of another type, close spellings.
    text = str(value).strip().lower()
    for choice in dist.choices:
        if str(choice).lower() == text:
            repairs.append(f"{name}: matched {value!r} to {choice!r}")
            return choice
    close = difflib.get_close_matches(
        text, [str(c).lower() for c in dist.choices], n=1, cutoff=0.75
    )
    if close:
        choice = next(c for c in dist.choices if str(c).lower() == close[0])
        repairs.append(f"{name}: matched {value!r} to {choice!r}")
        return choice
    raise AnswerError(f"{name} must be one of {list(dist.choices)} but got {value!r}.")


def repair_params(
    raw: Mapping[str, Any], search_space: Mapping[str, BaseDistribution]
) -> tuple[dict[str, Any], list[str]]:
    """Return the configuration inside ``search_space`` closest to ``raw``, and the repairs."""
    if not isinstance(raw, Mapping):
        raise AnswerError(f"Each candidate must be a JSON object but got {raw!r}.")
    missing = [name for name in search_space if name not in raw]
    if missing:
        raise AnswerError(f"The candidate lacks {missing}; give a value for every parameter.")
    repairs: list[str] = []
    unknown = sorted(set(raw) - set(search_space))
    if unknown:
        repairs.append(f"dropped unknown {unknown}")
    params: dict[str, Any] = {}
    for name, dist in search_space.items():
        if isinstance(dist, CategoricalDistribution):
            params[name] = _repair_categorical(name, raw[name], dist, repairs)
        elif isinstance(dist, IntDistribution):
            params[name] = _repair_int(name, raw[name], dist, repairs)
        else:
            assert isinstance(dist, FloatDistribution)
            params[name] = _repair_float(name, raw[name], dist, repairs)
    return params, repairs


def _extract_json(text: str) -> Any:
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    # Plain-text endpoints wrap JSON in prose or code fences: take the outermost object.
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        try:
            return json.loads(text[start : end + 1])
        except json.JSONDecodeError:
            pass
    # An answer cut off at the token cap (in the rationale, which comes last) still holds a
    # complete candidates list.
    key = text.find('"candidates"')
    open_at = text.find("[", key) if key != -1 else -1
    if open_at != -1:
        depth = 0
        for i in range(open_at, len(text)):
            depth += {"[": 1, "]": -1}.get(text[i], 0)
            if depth == 0:
                try:
                    return {"candidates": json.loads(text[open_at : i + 1])}
                except json.JSONDecodeError:
                    break
    raise AnswerError("The answer is not valid JSON; answer with one JSON object only.")


#: The rationale stored when the answer gives no reason (a template without one, or filler).
NO_REASON = "none given"
# Filler a small model writes where a reason goes: the schema's, the prompt's or the
# template's own words ("short rationale", "minimizing objective value", "minimal").
_FILLER_WORDS = frozenset(
    "a an the no none null n na nothing string text reason rationale short give explanation "
    "minimal minimize minimizing minimized minimum maximize maximizing maximized maximum "
    "objective value values new configuration config compact default json".split()
)


def stated_reason(text: str) -> str:
    """The model's reason as it stated it, or :data:`NO_REASON` where it gave none: nothing,
    no letters, or only filler that echoes the schema, the prompt or the template's name.
    Leftover JSON punctuation in front (``}} ...``) is dropped."""
    text = " ".join(text.split()).lstrip("{}[]#:;,. ")
    words = re.findall(r"[a-z]+", text.lower())
    if not words or all(w in _FILLER_WORDS for w in words):
        return NO_REASON
    return text


def parse_answer(
    text: str, search_space: Mapping[str, BaseDistribution], n_candidates: int
) -> tuple[ParsedAnswer, list[str]]:
    """Parse the model's text into repaired candidates; return also the per-candidate errors.

    Raises:
        AnswerError: If nothing usable is in the answer.
    """
    data = _extract_json(text)
    if isinstance(data, Mapping) and "candidates" not in data and set(search_space) <= set(data):
        data = {"rationale": "", "candidates": [data]}  # a bare configuration
    if not isinstance(data, Mapping) or not isinstance(data.get("candidates"), list):
        raise AnswerError('The answer must be an object with a "candidates" list.')
    rationale = stated_reason(str(data.get("rationale", "")))
    if len(rationale) > RATIONALE_MAX_CHARS:
        rationale = rationale[: RATIONALE_MAX_CHARS - 1] + "…"
    candidates, all_repairs, errors = [], [], []
    for raw in data["candidates"][:n_candidates]:
        try:
            params, repairs = repair_params(raw, search_space)
        except AnswerError as err:
            errors.append(str(err))
            continue
        candidates.append(params)
        all_repairs.append(repairs)
    if not candidates:
        raise AnswerError(" ".join(errors) or "The answer holds no candidate configuration.")
    return ParsedAnswer(candidates=candidates, rationale=rationale, repairs=all_repairs), errors


def parse_answers(
    texts: Sequence[str], search_space: Mapping[str, BaseDistribution], n_candidates: int
) -> tuple[ParsedAnswer, list[str]]:
    """Parse several answers to one request (``ChatRequest.n``) into up to ``n_candidates``.

    An answer may hold one configuration or a list of them (a server that ignores ``n``, or a
    model asked for a list); candidates are taken in order. The rationale is the first
    one that states a reason (else :data:`NO_REASON`). Answers that cannot be used add their
    error to the returned list.

    Raises:
        AnswerError: If no answer holds a usable candidate.
    """
    candidates: list[dict[str, Any]] = []
    repairs: list[list[str]] = []
    errors: list[str] = []
    rationale = ""
    for text in texts:
        if len(candidates) >= n_candidates:
            break
        try:
            parsed, more = parse_answer(text, search_space, n_candidates - len(candidates))
        except AnswerError as err:
            errors.append(str(err))
            continue
        candidates.extend(parsed.candidates)
        repairs.extend(parsed.repairs)
        errors.extend(more)
        if not rationale or rationale == NO_REASON:
            rationale = parsed.rationale
    if not candidates:
        raise AnswerError(" ".join(dict.fromkeys(errors)) or "No answer holds a configuration.")
    return ParsedAnswer(candidates=candidates, rationale=rationale, repairs=repairs), errors
