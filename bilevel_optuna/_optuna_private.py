"""Optuna's private names, read in this module only.

The package needs a few things Optuna keeps private: a study's storage and ids, a trial's id,
whether a value lies in a distribution, the heartbeat interface, the RDB storage's private
transactions (retried by ``_transient.RetryingRDBStorage``), and CMA-ES's and TPE's internal
state (shown to the model by ``samplers/_state.py``). Each is read here, once, with the
public alternative named or the reason there is none, so a new Optuna release that renames one
breaks this module (and ``tests/bilevel_optuna_tests/test_optuna_private.py``) with an error that
says so, instead of an ``AttributeError`` deep inside a worker.

Type-only names (``ArtifactStore``, ``FrozenStudy``) are imported from here under
``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import TPESampler
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial

from bilevel_optuna.exceptions import OptunaCompatibilityError

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore  # noqa: F401 (re-exported)
    from optuna.study._frozen import FrozenStudy

#: RDBStorage's private methods that are each one transaction and are called by Optuna's own
#: public methods (``get_all_trials`` calls ``_get_trials``; ``set_trial_param``,
#: ``_set_trial_param``; ``get_best_trial``, ``_get_best_trial_id``; ``fail_stale_trials``,
#: ``_get_stale_trial_ids``). Public alternative: none; retrying the public callers instead
#: would run a whole sequence of transactions again, not the one the server aborted.
RDB_PRIVATE_TRANSACTIONS = (
    "_set_trial_param",
    "_get_trials",
    "_get_best_trial_id",
    "_get_stale_trial_ids",
)


def _read(obj: object, name: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise OptunaCompatibilityError(
            f"optuna {optuna.__version__} has no {type(obj).__name__}.{name}, which "
            "bilevel-optuna reads (bilevel_optuna/_optuna_private.py): install the Optuna "
            "release this bilevel-optuna was tested with, or upgrade bilevel-optuna."
        ) from None


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage a study reads and writes (``Study._storage``).

    Public alternative: none on ``Study``; callers that opened the storage themselves pass it
    on instead. Needed where only the study is at hand (a sampler, a callback, a pruner) and
    trial attributes must be written to a trial that is not the running one, or read without
    copying every trial.
    """
    storage: BaseStorage = _read(study, "_storage")
    return storage


def study_id_of(study: optuna.Study | FrozenStudy) -> int:
    """The study's id in its storage (``Study._study_id``, ``FrozenStudy._study_id``).

    Public alternative: ``storage.get_study_id_from_name(study.study_name)``, one query per
    call; this saves it where a study's trials are read often.
    """
    return int(_read(study, "_study_id"))


def trial_id_of(trial: FrozenTrial | optuna.trial.Trial) -> int:
    """The trial's id in its storage (``FrozenTrial._trial_id``, ``Trial._trial_id``).

    Public alternative: ``storage.get_trial_id_from_study_id_trial_number(study_id,
    trial.number)``, one query per call; every storage method on a trial takes this id.
    """
    return int(_read(trial, "_trial_id"))


def live_trial(study: optuna.Study, trial: FrozenTrial) -> optuna.trial.Trial:
    """A ``Trial`` on a stored running trial (to tell it, or suggest into it, from another
    process than the one that asked it). Public alternative: none; ``Study.ask`` makes a new
    trial, and ``Trial(study, trial_id)`` needs the private id."""
    return optuna.trial.Trial(study, trial_id_of(trial))


def contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` (external representation) lies in ``dist``
    (``BaseDistribution._contains``). Public alternative: none; Optuna checks it only inside
    ``enqueue_trial`` and ``Trial.suggest_*``. A value that cannot be converted is outside."""
    try:
        return bool(_read(dist, "_contains")(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def heartbeat_of(storage: BaseStorage) -> BaseHeartbeat | None:
    """The storage's heartbeat interface, or None where it has none.

    Optuna's ``get_storage`` wraps an ``RDBStorage`` in ``_CachedStorage`` (its ``_backend``),
    and the interface, ``optuna.storages._heartbeat.BaseHeartbeat``, is not exported. Public
    alternative: none for the interval and grace period (``fail_stale_trials`` uses them
    privately).
    """
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, BaseHeartbeat) else None


def _module_attr(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise OptunaCompatibilityError(
            f"optuna {optuna.__version__} has no {module}.{name}, which bilevel-optuna reads "
            "(bilevel_optuna/_optuna_private.py): install the Optuna release this "
            "bilevel-optuna was tested with, or upgrade bilevel-optuna."
        ) from None


# ----------------------------------------------------------------------------- CMA-ES state
# (samplers/_state.py: CMA-ES's search distribution in the prompt)


def restore_cmaes_optimizer(
    sampler: optuna.samplers.CmaEsSampler, trials: list[FrozenTrial]
) -> Any:
    """The ``cmaes`` optimizer ``sampler`` stored on ``trials`` (its newest), or None
    (``CmaEsSampler._restore_optimizer``: unpickles it from the trials' system attributes,
    in chunks ``cma:optimizer:i``).

    Public alternative: none; CmaEsSampler keeps its optimizer private, and reading the
    pickled chunks ourselves would depend on the same private format.
    """
    return _read(sampler, "_restore_optimizer")(trials)


def search_space_transform(search_space: Mapping[str, BaseDistribution]) -> Any:
    """CmaEsSampler's map of ``search_space`` to the unit cube
    (``optuna._transform._SearchSpaceTransform`` with ``transform_step`` and
    ``transform_0_1``): ``bounds``, ``transform``, ``untransform``.

    Public alternative: none; re-implementing it could drift from what CmaEsSampler uses.
    """
    transform = _module_attr("optuna._transform", "_SearchSpaceTransform")
    return transform(search_space, transform_step=True, transform_0_1=True)


def cmaes_step_size_and_covariance(optimizer: Any) -> tuple[float, np.ndarray]:
    """A ``cmaes.CMA`` optimizer's step size sigma and covariance matrix C (``CMA._sigma``,
    ``CMA._C``; the cmaes package, which Optuna's CmaEsSampler drives).

    Public alternative: none; ``cmaes`` exposes ``mean``, ``generation`` and
    ``population_size`` but not these two.
    """
    return float(_read(optimizer, "_sigma")), np.asarray(_read(optimizer, "_C"), dtype=float)


# ----------------------------------------------------------------------------- TPE state


def tpe_default_gamma(n: int) -> int:
    """TPE's good-group size for ``n`` trials (``optuna.samplers._tpe.sampler.default_gamma``).

    Public alternative: none exported; ``TPESampler(gamma=...)`` takes such a function but the
    default is not exported.
    """
    return int(_module_attr("optuna.samplers._tpe.sampler", "default_gamma")(n))


def tpe_split_trials(
    study: optuna.Study, trials: list[FrozenTrial], n_good: int
) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """TPE's split of ``trials`` into the good ``n_good`` and the others
    (``optuna.samplers._tpe.sampler._split_trials``: handles pruned, infeasible and
    multi-objective trials as TPESampler does).

    Public alternative: none; sorting by value ourselves would differ from TPE's split for
    pruned and constrained trials.
    """
    split = _module_attr("optuna.samplers._tpe.sampler", "_split_trials")
    good, bad = split(study, trials, n_good)
    return list(good), list(bad)


def tpe_parzen_estimator(
    sampler: TPESampler,
    study: optuna.Study,
    search_space: Mapping[str, BaseDistribution],
    trials: list[FrozenTrial],
    *,
    handle_below: bool,
) -> Any:
    """The Parzen estimator ``sampler`` builds over ``trials`` (l(x) for the good group with
    ``handle_below=True``, g(x) for the others; ``TPESampler._build_parzen_estimator``).

    Public alternative: none; TPESampler builds its estimators only inside ``sample_relative``.
    """
    build = _read(sampler, "_build_parzen_estimator")
    return build(study, dict(search_space), trials, handle_below=handle_below)


def tpe_acquisition(sampler: TPESampler, samples: Any, below: Any, above: Any) -> np.ndarray:
    """TPE's acquisition, log l(x) - log g(x), on ``samples``
    (``TPESampler._compute_acquisition_func``).

    Public alternative: none; it is computed only inside ``sample_relative``.
    """
    return np.asarray(_read(sampler, "_compute_acquisition_func")(samples, below, above))
