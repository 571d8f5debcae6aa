"""A run's stored settings (studies/_settings.py): what ``bilevel:settings`` holds, and the
runs stored by the previous release (version 1, flat) still joined and read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from bilevel_optuna import _attrs
from bilevel_optuna import BilevelSettings
from bilevel_optuna import InnerSettings
from bilevel_optuna import ModelSettings
from bilevel_optuna import OuterSettings
from bilevel_optuna import OuterSpace
from bilevel_optuna import get_objective
from bilevel_optuna import run_bilevel_study
from bilevel_optuna import run_worker
from bilevel_optuna._storage import open_storage
from bilevel_optuna.cli import main
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.studies._settings import RunSettings
from bilevel_optuna.studies._settings import load_settings
from bilevel_optuna.studies._spend import stored_policy
from bilevel_optuna.studies._spend import spend_markdown

SPACE = OuterSpace(
    temperature=0.5,
    history_size=10,
    history_order="best",
    template="minimal",
    n_candidates=1,
    optimizer_state="none",
    state_mode="beside",
    mechanisms=[],
)
SETTINGS = BilevelSettings(
    inner=InnerSettings(n_trials=2, n_repeats=1),
    outer=OuterSettings(n_trials=1, space=SPACE, prune=False, baselines=["random"]),
    model=ModelSettings("uniform", max_tokens_total=10_000),
)


def _version_1_row(base_dir: str) -> dict[str, Any]:
    """``bilevel:settings`` as version 1 (the release before the settings objects) wrote it
    for SETTINGS on branin: a literal copy of its layout, frozen here."""
    return {
        "objectives": ["branin"],
        "objective_names": ["branin"],
        "heldout": [],
        "heldout_names": [],
        "base_dir": base_dir,
        "n_outer_trials": 1,
        "n_inner_trials": 2,
        "seeds": [0],
        "heldout_seeds": [0],
        "aggregate": "regret",
        "baselines": ["random"],
        "outer_sampler": "tpe",
        "space": {
            "settings": {
                "temperature": 0.5,
                "history_size": 10,
                "history_order": "best",
                "template": "minimal",
                "n_candidates": 1,
                "optimizer_state": "none",
                "state_mode": "beside",
            },
            "mechanisms": [],
            "max_mechanisms": 3,
        },
        "prune": False,
        "cost_objective": False,
        "seed": 0,
        "model": "uniform",
        "stale_after": 45.0,
        "version": 1,
        "on_model_error": "raise",
        "max_tokens_total": 10000,
        "max_cost": None,
        "token_prices": None,
    }


def test_a_run_stores_its_settings_objects_to_dict_beside_its_objectives(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/v2.db"
    result = run_bilevel_study("branin", storage=url, run_name="v2", settings=SETTINGS)
    stored = result.outer_study.user_attrs[_attrs.SETTINGS]
    assert stored["version"] == 2
    assert stored["objectives"] == ["branin"] and stored["objective_names"] == ["branin"]
    resolved = SETTINGS.resolved([get_objective("branin")])
    assert {k: stored[k] for k in ("inner", "outer", "model", "seed")} == resolved.to_dict()
    assert BilevelSettings.from_dict(stored) == resolved  # the run's settings, read back
    _, read = load_settings(open_storage(url), "v2")
    assert read == RunSettings.from_dict(stored)
    assert (read.seeds, read.heldout_seeds, read.n_outer_trials) == ([0], [0], 1)
    assert read.policy().max_tokens_total == 10_000 and read.model == "uniform"


def test_a_run_stored_by_version_1_is_joined_and_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/v1.db"
    run_bilevel_study("branin", storage=url, run_name="old", settings=SETTINGS)
    storage = open_storage(url)
    outer = optuna.load_study(study_name="old", storage=storage)
    row = _version_1_row(str(tmp_path))
    outer.set_user_attr(_attrs.SETTINGS, row)  # as the previous release left it
    # Read: the values a worker uses, by their flat names.
    _, settings = load_settings(storage, "old")
    assert settings.objective_names == ["branin"] and settings.seeds == [0]
    assert settings.n_inner_trials == 2 and settings.n_outer_trials == 1
    assert settings.aggregate == "regret" and settings.baselines == ["random"]
    assert settings.outer_sampler == "tpe" and settings.space == row["space"]
    assert OuterSpace.from_config(settings.space) == SPACE
    assert settings.stale_after == 45.0 and settings.policy().max_tokens_total == 10_000
    assert settings.to_dict()["version"] == 2  # what a resumed run writes instead
    # Joined: a worker rebuilds the run from it (its work is done, so it does none).
    assert run_worker(storage=url, run_name="old") == 0
    # status, the report's spend section and compare read it.
    capsys.readouterr()
    assert main(["status", url]) == 0
    out = capsys.readouterr().out
    assert "progress:" in out and "claims stale after 45 s" in out
    for stored in (row, settings.to_dict()):
        assert stored_policy(stored)["max_tokens_total"] == 10_000
        assert "## Model spend" in spend_markdown(storage, "old", stored)
    assert main(["compare", "--storage", url, "--run", "old", "--objective", "branin"]) == 0
    # A resumed run stores the version-2 layout in its place.
    run_bilevel_study("branin", storage=url, run_name="old", settings=SETTINGS)
    again = optuna.load_study(study_name="old", storage=storage).user_attrs[_attrs.SETTINGS]
    assert again["version"] == 2 and again["inner"]["seeds"] == [0]


def test_settings_of_a_newer_release_say_to_upgrade() -> None:
    with pytest.raises(ConfigurationError, match="newer bilevel-optuna"):
        RunSettings.from_dict({"version": 3})
