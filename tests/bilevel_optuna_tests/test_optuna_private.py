"""The adapter to Optuna's private names, run against the installed Optuna: a release that renames
one of them fails here, in one place, rather than inside a worker."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from bilevel_optuna import _optuna_private as private
from bilevel_optuna._storage import open_storage
from bilevel_optuna.exceptions import OptunaCompatibilityError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["memory", "sqlite"])
def study(request: pytest.FixtureRequest, tmp_path: Path) -> optuna.Study:
    storage = None if request.param == "memory" else open_storage(f"sqlite:///{tmp_path}/p.db", heartbeat=False)
    study = optuna.create_study(storage=storage, study_name="adapter")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    return study


def test_ids_and_storage_agree_with_the_public_lookups(study: optuna.Study) -> None:
    storage = private.storage_of(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    study_id = private.study_id_of(study)
    assert study_id == storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials():
        trial_id = private.trial_id_of(trial)
        assert trial_id == storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        assert storage.get_trial(trial_id).number == trial.number
    (frozen,) = storage.get_all_studies()
    assert private.study_id_of(frozen) == study_id


def test_a_live_trial_writes_to_the_stored_running_trial(study: optuna.Study) -> None:
    asked = study.ask()
    frozen = study.get_trials(states=(TrialState.RUNNING,))[0]
    assert private.trial_id_of(asked) == private.trial_id_of(frozen)
    live = private.live_trial(study, frozen)
    assert live.suggest_float("x", 0, 1) >= 0
    study.tell(live, 0.5)
    assert study.trials[-1].state == TrialState.COMPLETE


def test_contains_follows_the_distribution() -> None:
    assert private.contains(FloatDistribution(0, 1), 0.5)
    assert not private.contains(FloatDistribution(0, 1), 2.0)
    assert private.contains(IntDistribution(1, 9, step=2), 3)
    assert not private.contains(IntDistribution(1, 9, step=2), 4)
    assert private.contains(CategoricalDistribution(["a", "b"]), "b")
    assert not private.contains(CategoricalDistribution(["a", "b"]), "c")
    assert not private.contains(FloatDistribution(0, 1), "not a number")


def test_the_heartbeat_interface_is_found_on_plain_and_cached_storages(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/h.db"
    rdb = optuna.storages.RDBStorage(url, heartbeat_interval=7, grace_period=20)
    assert private.heartbeat_of(rdb) is rdb
    assert private.heartbeat_of(rdb).get_heartbeat_interval() == 7  # type: ignore[union-attr]
    cached = optuna.storages.get_storage(rdb)  # may wrap it in _CachedStorage
    beats = private.heartbeat_of(cached)
    assert beats is not None and beats.get_heartbeat_interval() == 7
    assert private.heartbeat_of(optuna.storages.InMemoryStorage()) is None


def test_the_rdb_private_transactions_exist() -> None:
    for name in private.RDB_PRIVATE_TRANSACTIONS:
        assert callable(getattr(optuna.storages.RDBStorage, name, None)), name


def test_the_type_only_names_import() -> None:
    from optuna.artifacts._protocol import ArtifactStore
    from optuna.study._frozen import FrozenStudy

    assert ArtifactStore and FrozenStudy


def test_a_missing_private_name_fails_loudly_naming_the_adapter() -> None:
    with pytest.raises(OptunaCompatibilityError, match="_optuna_private.py"):
        private.trial_id_of(object())  # type: ignore[arg-type]


def _two_param_study(sampler: optuna.samplers.BaseSampler, n_trials: int) -> optuna.Study:
    study = optuna.create_study(sampler=sampler)
    study.optimize(
        lambda t: (t.suggest_float("x", -5, 5) - 1) ** 2 + t.suggest_float("y", 0, 10) ** 2,
        n_trials=n_trials,
    )
    return study


SPACE = {"x": FloatDistribution(-5, 5), "y": FloatDistribution(0, 10)}


def test_the_cmaes_optimizer_its_step_size_and_covariance_are_read() -> None:
    sampler = optuna.samplers.CmaEsSampler(seed=0, n_startup_trials=0)
    study = _two_param_study(sampler, 20)
    optimizer = private.restore_cmaes_optimizer(sampler, study.get_trials(deepcopy=False))
    assert optimizer is not None and optimizer.dim == 2 and optimizer.generation >= 1
    sigma, cov = private.cmaes_step_size_and_covariance(optimizer)
    assert sigma > 0 and cov.shape == (2, 2)
    assert np.allclose(cov, cov.T) and (np.diag(cov) > 0).all()
    assert private.restore_cmaes_optimizer(sampler, []) is None


def test_the_search_space_transform_maps_to_the_unit_cube_and_back() -> None:
    trans = private.search_space_transform(SPACE)
    assert trans.bounds.shape == (2, 2)
    assert np.allclose(trans.bounds, [[0, 1], [0, 1]])
    point = trans.transform({"x": 0.0, "y": 2.5})
    assert np.allclose(point, [0.5, 0.25])
    assert trans.untransform(point) == pytest.approx({"x": 0.0, "y": 2.5})


def test_tpe_splits_and_ranks_as_the_sampler_would() -> None:
    study = _two_param_study(optuna.samplers.RandomSampler(seed=0), 20)
    trials = study.get_trials(deepcopy=False)
    n_good = private.tpe_default_gamma(len(trials))
    assert 1 <= n_good < len(trials)
    good, bad = private.tpe_split_trials(study, trials, n_good)
    assert len(good) == n_good and len(good) + len(bad) == len(trials)
    assert max(t.values[0] for t in good) <= min(t.values[0] for t in bad)
    sampler = optuna.samplers.TPESampler(seed=0)
    l_x = private.tpe_parzen_estimator(sampler, study, SPACE, good, handle_below=True)
    g_x = private.tpe_parzen_estimator(sampler, study, SPACE, bad, handle_below=False)
    draws = l_x.sample(np.random.RandomState(0), 8)
    score = private.tpe_acquisition(sampler, draws, l_x, g_x)
    assert score.shape == (8,) and np.isfinite(score).all()


def test_a_missing_private_module_name_fails_loudly_naming_the_adapter() -> None:
    with pytest.raises(OptunaCompatibilityError, match="_optuna_private.py"):
        private._module_attr("optuna._transform", "_NoSuchTransform")
    with pytest.raises(OptunaCompatibilityError, match="_optuna_private.py"):
        private.cmaes_step_size_and_covariance(object())


def test_no_other_module_reads_an_optuna_private_name() -> None:
    """Outside the adapter: no ``optuna.<x>._private`` import and no ``._storage``,
    ``._study_id``, ``._trial_id``, ``._backend``, ``._contains`` or ``._is_multi_objective``
    on any object but ``self``."""
    names = {"_storage", "_study_id", "_trial_id", "_backend", "_contains", "_is_multi_objective"}
    found = []
    for folder in ("bilevel_optuna", "samplers", "studies", "objectives"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "_optuna_private.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("optuna"):
                    if any(part.startswith("_") for part in node.module.split(".")):  # type: ignore[union-attr]
                        found.append(f"{where} from {node.module}")
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr in names
                    and not (isinstance(node.value, ast.Name) and node.value.id == "self")
                ):
                    found.append(f"{where} .{node.attr}")
    assert found == []
