"""The unit cube: configurations as points in [0, 1]^d, distances, and the way back.

Every mechanism that measures or moves configurations goes through these functions, so that
"close", "far" and "inside the box" mean the same thing everywhere: each parameter maps to
[0, 1] over its range (log scale where it has one), a categorical to its choice's index, and
distances count a categorical as 0 if equal and 1 if not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution


def covers(params: Mapping[str, Any], search_space: Mapping[str, BaseDistribution]) -> bool:
    """Whether ``params`` hold a value for every parameter of ``search_space``."""
    return all(name in params for name in search_space)


def normalize(
    params: Mapping[str, Any], search_space: Mapping[str, BaseDistribution]
) -> np.ndarray:
    """Map a configuration to [0, 1] per parameter (log scale where the parameter has one).

    Categorical parameters map to the choice's index over the number of choices; use
    :func:`distance`, which treats them as equal or not, to compare configurations.
    """
    out = np.empty(len(search_space))
    for i, (name, dist) in enumerate(search_space.items()):
        value = params[name]
        if isinstance(dist, CategoricalDistribution):
            out[i] = dist.choices.index(value) / max(len(dist.choices) - 1, 1)
            continue
        low, high = float(dist.low), float(dist.high)  # type: ignore[attr-defined]
        x = float(value)
        if getattr(dist, "log", False):
            low, high, x = math.log(low), math.log(high), math.log(x)
        out[i] = 0.0 if high == low else (x - low) / (high - low)
    return out


def denormalize(u: float, dist: BaseDistribution) -> Any:
    """The value at position ``u`` in ``[0, 1]`` of ``dist``: the inverse of
    :func:`normalize`, snapped to the parameter's grid.

    ``u`` is clipped into ``[0, 1]``; integers and stepped floats go to the nearest grid point,
    a categorical to the choice whose index is nearest.
    """
    u = min(max(float(u), 0.0), 1.0)
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[int(round(u * (len(dist.choices) - 1)))]
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    low, high = float(dist.low), float(dist.high)
    if dist.log:
        x = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    else:
        x = low + u * (high - low)
    step = dist.step
    if step is not None:
        last = low + math.floor((high - low) / step + 1e-9) * step
        x = min(max(low + round((x - low) / step) * step, low), last)
    x = min(max(x, low), high)
    if isinstance(dist, IntDistribution):
        return int(round(x))
    return float(x)


def from_unit(u: float, dist: BaseDistribution) -> Any:
    """The value of ``dist`` at quantile ``u`` in ``[0, 1)`` of a uniform draw over its range.

    Unlike :func:`denormalize`, every choice of a categorical and every value of a linear integer
    get equal shares of ``[0, 1)``.
    """
    u = min(max(float(u), 0.0), 1.0 - 1e-12)
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[int(u * len(dist.choices))]
    if isinstance(dist, IntDistribution) and not dist.log:
        k = (dist.high - dist.low) // dist.step + 1
        return int(dist.low + int(u * k) * dist.step)
    return denormalize(u, dist)


def encode(
    configs: Sequence[Mapping[str, Any]], search_space: Mapping[str, BaseDistribution]
) -> np.ndarray:
    """Normalized configurations as rows of an ``(n, d)`` array (see :func:`normalize`)."""
    if not configs:
        return np.empty((0, len(search_space)))
    return np.vstack([normalize(c, search_space) for c in configs])


def categorical_mask(search_space: Mapping[str, BaseDistribution]) -> np.ndarray:
    """Which columns of an encoded configuration are categorical."""
    return np.array(
        [isinstance(d, CategoricalDistribution) for d in search_space.values()], dtype=bool
    )


def distance_matrix(
    a: np.ndarray, b: np.ndarray, search_space: Mapping[str, BaseDistribution]
) -> np.ndarray:
    """Pairwise :func:`distance` between encoded rows of ``a`` and ``b``, vectorized: the same
    root mean square, categoricals counting 0 if equal and 1 if not.
    """
    if a.shape[0] == 0 or b.shape[0] == 0 or not search_space:
        return np.zeros((a.shape[0], b.shape[0]))
    diff = a[:, None, :] - b[None, :, :]
    categorical = categorical_mask(search_space)
    if categorical.any():
        diff[..., categorical] = (diff[..., categorical] != 0).astype(float)
    return np.sqrt(np.mean(diff * diff, axis=-1))


def distance(
    a: Mapping[str, Any], b: Mapping[str, Any], search_space: Mapping[str, BaseDistribution]
) -> float:
    """Distance between two configurations in [0, 1]: the root mean square over parameters of
    the normalized difference, where a categorical parameter counts 0 if equal and 1 if not."""
    if not search_space:
        return 0.0
    space = dict(search_space)
    return float(distance_matrix(encode([a], space), encode([b], space), space)[0, 0])


def decode(u: np.ndarray, search_space: Mapping[str, BaseDistribution]) -> dict[str, Any]:
    """The configuration at the encoded point ``u`` (each coordinate through
    :func:`denormalize`, so on the parameters' grids)."""
    return {name: denormalize(x, dist) for x, (name, dist) in zip(u, search_space.items())}
