"""compare()'s settings objects, its shortcuts and the deprecated keywords."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import pytest
from stats_tests.conftest import Db

from bilevel_optuna.stats import CompareSettings
from bilevel_optuna.stats import StudySelection
from bilevel_optuna.stats import compare


def _seeded(db: Db) -> None:
    for seed in range(4):
        db.add(f"a-{seed}", [1.0 + seed, 0.5 + seed], arm="a", seed=seed, objective="f")
        db.add(f"b-{seed}", [2.0 + seed], arm="b", seed=seed, objective="f")
        db.add(f"c-{seed}", [3.0 + seed], arm="c", seed=seed, objective="g")


def test_settings_are_frozen_and_checked_where_built() -> None:
    settings = CompareSettings(alpha=0.01)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.alpha = 0.5  # type: ignore[misc]
    assert StudySelection(run="r", arms="tpe*").arms == ["tpe*"]
    with pytest.raises(ValueError, match="n_trials"):
        StudySelection(n_trials=0)
    with pytest.raises(ValueError, match="alpha"):
        CompareSettings(alpha=0.0)


def test_settings_objects_give_the_same_result_as_the_keywords(db: Db) -> None:
    _seeded(db)
    with pytest.warns(FutureWarning):
        old = compare(db.url, run="run", kind="baseline", alpha=0.2, seed=3, n_resamples=200)
    new = compare(
        db.url,
        run="run",
        selection=StudySelection(kind="baseline"),
        settings=CompareSettings(alpha=0.2, seed=3, n_resamples=200),
    )
    assert new.settings == old.settings
    assert new.settings["alpha"] == 0.2 and new.settings["kind"] == "baseline"
    assert [c.pvalue_holm for c in new.comparisons] == [c.pvalue_holm for c in old.comparisons]
    assert [c.a12.ci_low for c in new.comparisons] == [c.a12.ci_low for c in old.comparisons]


def test_shortcuts_fill_the_settings_objects(db: Db) -> None:
    _seeded(db)
    result = compare(
        db.url,
        run="run",
        arms=["a", "b"],
        n_trials=1,
        metric="best",
        control="a",
        selection=StudySelection(objective="f"),
        settings=CompareSettings(alpha=0.2),
    )
    assert list(result.arms) == ["a", "b"]
    assert result.n_trials == 1 and result.alpha == 0.2 and result.metric == "best"
    assert result.arms["a"].median == pytest.approx(2.5)  # the first trial only
    assert result.settings["control"] == "a" and result.settings["objective"] == "f"


def test_a_shortcut_that_contradicts_its_object_is_an_error(db: Db) -> None:
    _seeded(db)
    with pytest.raises(ValueError, match="run is given twice"):
        compare(db.url, run="run", selection=StudySelection(run="other"))
    with pytest.raises(ValueError, match="metric is given twice"):
        compare(db.url, run="run", metric="best", settings=CompareSettings(metric="auc"))
    with pytest.raises(TypeError, match="settings must be a CompareSettings"):
        compare(db.url, run="run", settings={"alpha": 0.1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword argument 'alpah'"):
        compare(db.url, run="run", alpah=0.1)


@pytest.mark.parametrize(
    "key, value, where",
    [
        ("kind", "baseline", "selection=StudySelection"),
        ("objective", ["f", "g"], "selection=StudySelection"),
        ("paired", False, "settings=CompareSettings"),
        ("alpha", 0.1, "settings=CompareSettings"),
        ("noise_floor", 0.5, "settings=CompareSettings"),
        ("noise_factor", 3.0, "settings=CompareSettings"),
        ("confidence_level", 0.9, "settings=CompareSettings"),
        ("n_resamples", 100, "settings=CompareSettings"),
        ("seed", None, "settings=CompareSettings"),
    ],
)
def test_deprecated_keyword_warns_and_still_works(
    db: Db, key: str, value: Any, where: str
) -> None:
    _seeded(db)
    with pytest.warns(FutureWarning, match=rf"compare\({key}=\.\.\.\).*{where}\({key}=\.\.\.\)"):
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            result = compare(db.url, run="run", **{key: value})
    if key == "noise_floor":  # the result keeps the floor itself
        assert result.noise_floor is not None and result.noise_floor.sd == 0.5
    else:
        assert result.settings[key] == value
