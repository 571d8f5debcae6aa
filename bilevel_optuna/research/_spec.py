"""The settings of a research run: what ``bilevel-optuna research run SPEC.toml`` reads."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from bilevel_optuna.exceptions import ConfigurationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODES = ("compose", "code", "both")


@dataclasses.dataclass
class ResearchSpec:
    """What ``bilevel-optuna research run SPEC.toml`` does (the ``[research]`` and
    ``[evaluate]`` tables).

    Args:
        storage: The storage URL of the bilevel run.
        run: The bilevel run's name (its outer study).
        rounds: Research rounds in all (rounds already stored are skipped).
        mode: ``"compose"``, ``"code"`` or ``"both"`` (each round writes one of each).
        model: Chat model spec (``"local"``, ``"openai:MODEL@URL"``) or a ChatModel.
        max_repairs: Repairs after a rejection, per source.
        seed: Seed of every request (replay needs the same).
        n_outer_trials: Outer trials of each round's evaluation study; 0 skips the evaluation.
        objectives: Objectives of the evaluation (default: the run's training objectives).
        n_inner_trials, n_repeats: Size of the evaluation's inner studies.
        baselines: Baseline arms of the evaluation.
    """

    storage: str
    run: str
    rounds: int = 1
    mode: str = "compose"
    model: Any = "local"
    max_repairs: int = 2
    seed: int = 0
    n_outer_trials: int = 2
    objectives: list[str] = dataclasses.field(default_factory=list)
    n_inner_trials: int = 6
    n_repeats: int = 2
    baselines: list[str] = dataclasses.field(default_factory=lambda: ["random", "tpe"])

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigurationError(f"mode must be one of {MODES} but got {self.mode!r}.")
        for key, low in (("rounds", 1), ("max_repairs", 0), ("n_outer_trials", 0),
                         ("n_inner_trials", 1), ("n_repeats", 1)):  # fmt: skip
            if int(getattr(self, key)) < low:
                raise ConfigurationError(f"{key} must be >= {low} but got {getattr(self, key)}.")

    @classmethod
    def from_toml(cls, path: str | Path) -> ResearchSpec:
        """Read a research spec file (its ``[research]`` and ``[evaluate]`` tables).

        Raises:
            ConfigurationError: No such file, an unknown table or setting, or no storage or run.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigurationError(f"No such research spec {str(path)!r}.")
        with path.open("rb") as f:
            data = tomllib.load(f)
        research = dict(data.pop("research", {}))
        evaluate = dict(data.pop("evaluate", {}))
        if data:
            raise ConfigurationError(
                f"Unknown tables {sorted(data)} in {path}; a research spec has [research] and "
                "[evaluate]."
            )
        if "n_trials" in evaluate:
            evaluate["n_outer_trials"] = evaluate.pop("n_trials")
        values = {**research, **evaluate}
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ConfigurationError(
                f"Unknown settings {unknown} in {path}; valid ones are {sorted(fields)}."
            )
        for key in ("storage", "run"):
            if key not in values:
                raise ConfigurationError(f"{path} must set `{key}` in [research].")
        return cls(**values)
