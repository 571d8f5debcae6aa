"""Plain data that crosses the boundary to a guarded mechanism's process, and back.

Only JSON goes over the pipe: trial numbers, states, parameters, values, user attributes, the
search space as Optuna's distribution JSON and the random generator's state. The Study, the
storage and every other live object stay in the sampler's process; the child rebuilds
:class:`~optuna.trial.FrozenTrial` objects and a :class:`ProposalContext` (with ``study=None``)
from this data, so generated code reads what built-in mechanisms read and nothing more.

Messages are length-prefixed JSON (4 bytes, big endian), so a hook's stray output cannot be
mistaken for a reply (the child sends its replies on a file descriptor of its own).
"""

from __future__ import annotations

import datetime
import json
import struct
from collections.abc import Mapping
from collections.abc import Sequence
from typing import IO
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.distributions import distribution_to_json
from optuna.distributions import json_to_distribution
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from bilevel_optuna.exceptions import BilevelOptunaError

#: Largest message either side accepts (a study's trials for one hook call).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_HEADER = struct.Struct(">I")


class WireError(BilevelOptunaError):
    """The other side sent something that is not a valid message, or closed the pipe."""


def send(stream: IO[bytes], message: Mapping[str, Any]) -> None:
    data = json.dumps(message, separators=(",", ":"), default=_default).encode("utf-8")
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(data)} bytes is over the {MAX_MESSAGE_BYTES} limit")
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def receive(stream: IO[bytes]) -> dict[str, Any]:
    header = _read_exactly(stream, _HEADER.size)
    (size,) = _HEADER.unpack(header)
    if size > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {size} bytes is over the {MAX_MESSAGE_BYTES} limit")
    message = json.loads(_read_exactly(stream, size).decode("utf-8"))
    if not isinstance(message, dict):
        raise WireError(f"a message must be a JSON object but got {type(message).__name__}")
    return message


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    chunks = []
    left = size
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise WireError("the other side closed the pipe")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _default(value: Any) -> Any:
    """numpy scalars and arrays, tuples and sets become plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not plain data and cannot cross the boundary")


# ----------------------------------------------------------------- search space and trials
def space_to_wire(space: Mapping[str, BaseDistribution]) -> dict[str, str]:
    return {name: distribution_to_json(dist) for name, dist in space.items()}


def space_from_wire(data: Mapping[str, str]) -> dict[str, BaseDistribution]:
    return {name: json_to_distribution(text) for name, text in data.items()}


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, default=_default)
    except (TypeError, ValueError):
        return False
    return True


def trial_to_wire(trial: FrozenTrial, table: dict[str, int]) -> dict[str, Any]:
    """One trial as plain data; distributions go into ``table`` (JSON -> index), shared by all
    trials of a message so each distinct distribution crosses once."""
    dists = {}
    for name, dist in trial.distributions.items():
        text = distribution_to_json(dist)
        dists[name] = table.setdefault(text, len(table))
    return {
        "number": trial.number,
        "state": trial.state.name,
        "values": list(trial.values) if trial.values is not None else None,
        "params": {k: trial.params[k] for k in trial.distributions if k in trial.params},
        "dists": dists,
        "user_attrs": {k: v for k, v in trial.user_attrs.items() if _jsonable(v)},
        "intermediate": {str(k): v for k, v in trial.intermediate_values.items()},
    }


def trials_to_wire(trials: Sequence[FrozenTrial]) -> dict[str, Any]:
    table: dict[str, int] = {}
    items = [trial_to_wire(t, table) for t in trials]
    return {"dists": [t for t, _ in sorted(table.items(), key=lambda kv: kv[1])], "trials": items}


def trials_from_wire(data: Mapping[str, Any]) -> list[FrozenTrial]:
    table = [json_to_distribution(text) for text in data["dists"]]
    return [trial_from_wire(item, table) for item in data["trials"]]


def trial_from_wire(item: Mapping[str, Any], table: Sequence[BaseDistribution]) -> FrozenTrial:
    state = TrialState[item["state"]]
    values = item["values"]
    now = datetime.datetime.now()
    finished = state.is_finished()
    return FrozenTrial(
        number=int(item["number"]),
        state=state,
        value=None,
        values=values,
        datetime_start=now,
        datetime_complete=now if finished else None,
        params=dict(item["params"]),
        distributions={name: table[i] for name, i in item["dists"].items()},
        user_attrs=dict(item["user_attrs"]),
        system_attrs={},
        intermediate_values={int(k): v for k, v in item["intermediate"].items()},
        trial_id=int(item["number"]),
    )


# ---------------------------------------------------------------------- random generator
def rng_to_wire(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def rng_from_wire(state: Mapping[str, Any]) -> np.random.Generator:
    name = state["bit_generator"]
    bit_generator = getattr(np.random, name)()
    bit_generator.state = dict(state)
    return np.random.Generator(bit_generator)
