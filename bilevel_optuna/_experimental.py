"""Optuna's experimental features the package itself uses, without their warnings.

Optuna warns (``ExperimentalWarning``) each time an experimental feature is used. The features
below are the package's choice, not the user's, so their warnings would only be noise on the
terminal of ``bilevel-optuna run``: they are silenced here, one feature at a time, and only
around the package's own call. A user's own use of the same feature still warns.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from collections.abc import Sequence
from typing import TYPE_CHECKING

from optuna.exceptions import ExperimentalWarning

if TYPE_CHECKING:
    import optuna

# The experimental features used, as Optuna names them in its warning.
WILCOXON_PRUNER = "WilcoxonPruner"
SET_METRIC_NAMES = "optuna.study.study.Study.set_metric_names"
HEARTBEAT = ("RetryHeartbeatStaleTrialCallback", "Argument ``heartbeat_interval``")
QMC_SAMPLER = "QMCSampler"


@contextlib.contextmanager
def experimental(*features: str) -> Iterator[None]:
    """Use ``features`` (names above) without their ``ExperimentalWarning``."""
    with warnings.catch_warnings():
        for feature in features:
            warnings.filterwarnings(
                "ignore",
                message=re.escape(feature) + " is (an )?experimental",
                category=ExperimentalWarning,
            )
        yield


def set_metric_names(study: optuna.Study, names: Sequence[str]) -> None:
    """Name the study's objective values (the dashboard shows them), once per study."""
    if study.metric_names != list(names):
        with experimental(SET_METRIC_NAMES):
            study.set_metric_names(list(names))


def wilcoxon_pruner(p_threshold: float) -> optuna.pruners.BasePruner:
    """Optuna's ``WilcoxonPruner``: repeats as instances, the outer loop's racing rule."""
    import optuna

    with experimental(WILCOXON_PRUNER):
        return optuna.pruners.WilcoxonPruner(p_threshold=p_threshold)
