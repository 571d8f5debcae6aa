"""The arms of a bilevel run: the one sampler factory, arm names and labels, the GP baseline."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from bilevel_optuna import _attrs
from bilevel_optuna._storage import open_storage
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives import get_objective
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.studies._arms import ArmRunner
from bilevel_optuna.studies._arms import arm_label
from bilevel_optuna.studies._arms import arm_of
from bilevel_optuna.studies._arms import check_baselines
from bilevel_optuna.studies._arms import make_sampler
from bilevel_optuna.studies._config import LEVEL0
from bilevel_optuna.studies._config import ProposerConfig


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("random", optuna.samplers.RandomSampler),
        ("tpe", optuna.samplers.TPESampler),
        ("cmaes", optuna.samplers.CmaEsSampler),
        ("gp", optuna.samplers.GPSampler),
        ("llm", LLMSampler),
    ],
)
def test_every_sampler_is_built_by_name(name: str, cls: type) -> None:
    assert isinstance(make_sampler(name, seed=0, model="local"), cls)


def test_an_unknown_sampler_or_baseline_names_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError, match="'random', 'tpe', 'cmaes', 'gp', 'llm'"):
        make_sampler("smac", seed=0)
    with pytest.raises(ConfigurationError, match=r"\['smac'\].*'gp'"):
        check_baselines(["tpe", "smac"])


def test_arm_names_and_labels() -> None:
    config = ProposerConfig(
        temperature=0.02,
        history_size=24,
        mechanisms=(("tabu", {}), ("orthogonal", {})),
    )
    arm = arm_of(config)
    assert arm_of(LEVEL0) == "llm-level0" and arm == f"cfg-{config.key()}"
    assert arm_label(arm, config) == f"{arm} (t=0.02 h=24 tabu+orth)"
    assert arm_label("tpe") == "tpe" and arm_label("llm-level0", LEVEL0) == "llm-level0"
    other = ProposerConfig(history_order="chronological", template="minimal", n_candidates=3)
    assert other.describe() == "t=0.7 h=15 chronological minimal k=3"
    state = ProposerConfig(optimizer_state="cmaes", state_mode="instead")
    assert state.describe() == "t=0.7 h=15 state=cmaes(instead)"


def test_the_cmaes_baseline_is_seeded_and_pins_its_settings(tmp_path: Path) -> None:
    runner = ArmRunner(
        storage=open_storage(f"sqlite:///{tmp_path}/cmaes.db"),
        run_name="cmaes",
        n_inner_trials=12,
        seeds=[0],
        model=None,
    )
    first = runner.run("cmaes", get_objective("branin"), 0, kind="baseline")
    study = optuna.load_study(study_name=first.study_name, storage=runner.storage)
    assert study.user_attrs[_attrs.SAMPLER].startswith("CmaEsSampler(seed=0) with optuna ")
    # CMA-ES proposed from the second trial on: each is one of its population.
    assert all("cma:generation" in t.system_attrs for t in study.trials[1:])
    again = optuna.create_study(sampler=make_sampler("cmaes", seed=0))
    again.optimize(lambda t: get_objective("branin")(t), n_trials=12)
    assert [t.params for t in again.trials] == [t.params for t in study.trials]


def test_the_gp_baseline_runs_past_its_random_start_and_pins_its_settings(
    tmp_path: Path,
) -> None:
    # GPSampler draws its first 10 trials at random; the 12 here include two GP proposals.
    runner = ArmRunner(
        storage=open_storage(f"sqlite:///{tmp_path}/gp.db"),
        run_name="gp",
        n_inner_trials=12,
        seeds=[0],
        model=None,
    )
    result = runner.run("gp", get_objective("branin"), 0, kind="baseline")
    assert result.n_complete == 12
    study = optuna.load_study(study_name=result.study_name, storage=runner.storage)
    assert study.user_attrs[_attrs.SAMPLER].startswith("GPSampler(seed=0) with optuna ")
    assert study.user_attrs[_attrs.ARM] == "gp"
