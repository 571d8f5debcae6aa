"""Smoke runs of each runner on a tiny slice: rows appear, a rerun adds none."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

import _results
import ablation
import heldout
import lm

from bilevel_optuna import _attrs


def test_heldout_runs_a_slice_and_resumes(tmp_path: Path) -> None:
    csv = tmp_path / "heldout.csv"
    argv = ["--storage", f"sqlite:///{tmp_path / 'h.db'}", "--trials", "3", "--tables",
            "hpobench/vehicle", "--arms", "tpe,random", "--results", str(csv)]  # fmt: skip
    assert heldout.main([*argv, "--seeds", "2-2"]) == 0
    assert heldout.main([*argv, "--seeds", "2-3"]) == 0
    rows = _results.read_rows(csv)
    assert sorted((r["arm"], r["seed"]) for r in rows) == [
        ("random", "2"), ("random", "3"), ("tpe", "2"), ("tpe", "3"),
    ]  # fmt: skip
    assert {r["benchmark"] for r in rows} == {"heldout"}


def test_heldout_runs_the_classical_state_arms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILEVEL_OPTUNA_CHAT_MODEL", "uniform")  # the protocol, not the model
    csv = tmp_path / "heldout.csv"
    url = f"sqlite:///{tmp_path / 'h.db'}"
    argv = ["--storage", url, "--trials", "30", "--tables", "hpobench/vehicle", "--arms",
            "cl-cmaes+state,default+state", "--seeds", "0-0", "--results", str(csv)]  # fmt: skip
    assert heldout.main(argv) == 0
    rows = {r["arm"]: r for r in _results.read_rows(csv)}
    assert sorted(rows) == ["cl-cmaes+state", "default+state"]
    for arm, state in (("cl-cmaes+state", "cmaes"), ("default+state", "tpe")):
        study = optuna.load_study(
            study_name=heldout.study_name("hpobench/vehicle", arm, 0), storage=url
        )
        shown = {t.user_attrs.get(_attrs.STATE) for t in study.trials}
        assert state in shown, (arm, shown)  # the prompt carried the optimizer's state


def test_heldout_rejects_an_unknown_arm(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        heldout.main(["--arms", "tpe,nonsense", "--results", str(tmp_path / "x.csv")])


def test_lm_rows_measure_the_distance_to_the_floor(tmp_path: Path) -> None:
    csv = tmp_path / "lm.csv"
    argv = ["--storage", f"sqlite:///{tmp_path / 'lm.db'}", "--seeds", "0-0", "--arms",
            "random,bilevel", "--steps", "5", "--trials", "2", "--results", str(csv)]  # fmt: skip
    assert lm.main(argv) == 0  # no --config: the bilevel arm is left out
    (row,) = _results.read_rows(csv)
    from bilevel_optuna.objectives import LMObjective

    floor = LMObjective(steps=5).optimum
    assert row["objective"] == "lm/5steps" and row["arm"] == "random"
    assert float(row["regret"]) == pytest.approx(float(row["best_value"]) - floor)
    assert lm.main(argv) == 0
    assert len(_results.read_rows(csv)) == 1


def test_lm_runs_cells_in_parallel_processes_and_skips_them_after(tmp_path: Path) -> None:
    csv = tmp_path / "lm.csv"
    argv = ["--storage", f"sqlite:///{tmp_path / 'lm.db'}", "--seeds", "0-1", "--arms", "random",
            "--steps", "5", "--trials", "2", "--jobs", "2", "--results", str(csv)]  # fmt: skip
    assert lm.main(argv) == 0
    rows = _results.read_rows(csv)
    assert sorted(int(r["seed"]) for r in rows) == [0, 1]
    assert lm.main(argv) == 0
    assert len(_results.read_rows(csv)) == 2


def test_lm_rejects_zero_jobs(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        lm.main(["--jobs", "0", "--results", str(tmp_path / "x.csv")])


def test_ablation_quick_groups_a_and_b_on_the_null_model(tmp_path: Path) -> None:
    csv = tmp_path / "ablation.csv"
    argv = ["--quick", "--model", "uniform", "--storage", f"sqlite:///{tmp_path / 'a.db'}",
            "--seeds", "100-100", "--groups", "A,B,tpe", "--results", str(csv)]  # fmt: skip
    assert ablation.main(argv) == 0
    rows = {r["arm"]: r for r in _results.read_rows(csv)}
    assert sorted(rows) == ["A", "B", "tpe"]
    assert rows["A"]["tuning_evals"] == "0" and rows["A"]["outer_seed"] == ""
    assert rows["B"]["outer_seed"] == "0" and int(rows["B"]["tuning_evals"]) > 0
    extra = json.loads(rows["B"]["extra"])
    # Every offered mechanism had an outer trial of its own, and its records show it ran.
    assert sorted(extra["mechanisms"]) == sorted(ablation.B_MECHANISMS)
    assert all(status != "never_ran" for status in extra["mechanisms"].values())
    assert ablation.main(argv) == 0
    assert len(_results.read_rows(csv)) == 3


@pytest.mark.slow
def test_ablation_quick_level2_groups_on_the_null_model(tmp_path: Path) -> None:
    csv = tmp_path / "ablation.csv"
    argv = ["--quick", "--model", "uniform", "--storage", f"sqlite:///{tmp_path / 'a.db'}",
            "--seeds", "100-100", "--groups", "C,D", "--results", str(csv)]  # fmt: skip
    assert ablation.main(argv) == 0
    rows = {r["arm"]: r for r in _results.read_rows(csv)}
    assert sorted(rows) == ["C", "D"]
    for group in "CD":
        research = json.loads(rows[group]["extra"])["research"]
        assert research["written"] >= 1
