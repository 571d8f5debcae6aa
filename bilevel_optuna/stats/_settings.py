"""The settings of :func:`~bilevel_optuna.stats.compare`: which studies, and how they are tested.

:class:`StudySelection` says which studies are compared and at which budget;
:class:`CompareSettings` how (the per-study metric, pairing, the significance level, the noise
floor, the bootstrap). Both are frozen dataclasses that check their values where they are
built, so that a wrong setting fails before the storage is read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import numpy as np

from bilevel_optuna._checks import check_int
from bilevel_optuna._warnings import warn
from bilevel_optuna.stats._load import ArmsSpec
from bilevel_optuna.stats._noise import NoiseFloorResult

__all__ = ["CompareSettings", "StudySelection"]

METRICS = ("auto", "best", "regret", "auc")
PAIRED = ("auto", True, False)
NoiseFloorSpec = NoiseFloorResult | float | Sequence[float] | np.ndarray | str | None


@dataclasses.dataclass(frozen=True)
class StudySelection:
    """Which studies of a storage :func:`~bilevel_optuna.stats.compare` reads, as which arms.

    Args:
        run: Compare the studies of this bilevel run, grouped by their ``bilevel:arm``
            attribute.
        arms: With ``run``: a list of arm names or glob patterns to keep (one string is one
            pattern). Without: a mapping ``{label: "glob-pattern-of-study-names"}`` or
            ``{label: ["study", ...]}``.
        kind: Keep only studies whose ``bilevel:kind`` is this (or one of these); by default
            every kind but ``"outer"``.
        objective: Keep only studies of this objective (``bilevel:objective``), or of these.
        n_trials: Count only trials numbered below this (failed and pruned trials use the
            budget too), so arms of unequal length are compared at equal budgets. None: all.

    Raises:
        ValueError: ``n_trials`` is not a positive integer.
    """

    run: str | None = None
    arms: ArmsSpec = dataclasses.field(default=None, hash=False)
    kind: str | Sequence[str] | None = dataclasses.field(default=None, hash=False)
    objective: str | Sequence[str] | None = dataclasses.field(default=None, hash=False)
    n_trials: int | None = None

    def __post_init__(self) -> None:
        check_int("n_trials", self.n_trials, minimum=1, allow_none=True)
        if isinstance(self.arms, str):
            object.__setattr__(self, "arms", [self.arms])


@dataclasses.dataclass(frozen=True)
class CompareSettings:
    """How :func:`~bilevel_optuna.stats.compare` tests the arms it read.

    Args:
        metric: ``"best"``, ``"regret"`` (needs ``bilevel:optimum`` on every study),
            ``"auc"`` (of regret where every study knows its optimum, else of values), or
            ``"auto"``: regret where every study knows its optimum, else best.
        paired: ``"auto"`` pairs two arms when every study has a seed, keys are unique and one
            arm's keys include the other's; True requires that; False never pairs.
        control: Compare every arm with this one only (fewer comparisons, more power), instead
            of every pair.
        alpha: Significance level, applied to Holm-adjusted p-values.
        noise_floor: Repeated evaluations of one configuration: a list of values, the name of a
            study in the storage whose complete trials all evaluate one configuration, a
            standard deviation, or a :class:`~bilevel_optuna.stats.NoiseFloorResult`.
        noise_factor: A difference of medians below ``noise_factor * sd`` of the noise floor is
            labelled "inside noise floor" and never claimed as an improvement.
        confidence_level: Level of the bootstrap intervals.
        n_resamples: Bootstrap resamples.
        seed: Seed of the bootstraps, so a report is reproducible.

    Raises:
        ValueError: A value out of range; the message names the field.
    """

    metric: str = "auto"
    paired: str | bool = "auto"
    control: str | None = None
    alpha: float = 0.05
    noise_floor: NoiseFloorSpec = dataclasses.field(default=None, hash=False)
    noise_factor: float = 2.0
    confidence_level: float = 0.95
    n_resamples: int = 2000
    seed: int | None = 0

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"`metric` must be one of {set(METRICS)} but got {self.metric!r}.")
        if self.paired not in PAIRED:
            raise ValueError(
                f"`paired` must be one of {set(map(str, PAIRED))} but got {self.paired!r}."
            )
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be between 0 and 1 (exclusive) but got {self.alpha}.")
        if not self.noise_factor > 0:
            raise ValueError(f"noise_factor must be positive but got {self.noise_factor}.")


#: The keywords of earlier releases that are now fields of the settings only.
DEPRECATED = ("paired", "alpha", "noise_floor", "noise_factor", "confidence_level",
              "n_resamples", "seed", "kind", "objective")  # fmt: skip
_SELECTION_FIELDS = frozenset(f.name for f in dataclasses.fields(StudySelection))


def build(
    selection: StudySelection | None,
    settings: CompareSettings | None,
    shortcuts: Mapping[str, Any],
    deprecated: Mapping[str, Any],
) -> tuple[StudySelection, CompareSettings]:
    """The selection and settings of one call: the objects given, with the keywords set in them.

    A shortcut that is ``None`` was not given; a keyword that contradicts the object it belongs
    to is an error, since either could be the intended value. Each deprecated keyword warns with
    the field that replaces it.
    """
    for key in deprecated:
        if key not in DEPRECATED:
            raise TypeError(f"compare() got an unexpected keyword argument {key!r}")
        where = "selection=StudySelection"
        if key not in _SELECTION_FIELDS:
            where = "settings=CompareSettings"
        warn(
            f"compare({key}=...) is deprecated: pass {where}({key}=...) instead; the keyword "
            "will be removed in a later release.",
            FutureWarning,
        )
    # A deprecated keyword was written out, so even its None counts (seed=None: unseeded).
    given = {key: value for key, value in shortcuts.items() if value is not None}
    given.update(deprecated)
    parts = []
    for cls, obj, name in (
        (StudySelection, selection, "selection"),
        (CompareSettings, settings, "settings"),
    ):
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        values = {key: value for key, value in given.items() if key in fields}
        if obj is None:
            parts.append(cls(**values))
            continue
        if not isinstance(obj, cls):
            raise TypeError(f"{name} must be a {cls.__name__} but got {type(obj).__name__}.")
        for key, value in values.items():
            current = getattr(obj, key)
            if current is not fields[key] and not _same(current, value):
                raise ValueError(
                    f"{key} is given twice, as a keyword ({value!r}) and in {name}= "
                    f"({current!r}); give it once."
                )
        parts.append(dataclasses.replace(obj, **values) if values else obj)
    selection_out, settings_out = parts
    return selection_out, settings_out


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except ValueError:  # arrays
        return a is b
