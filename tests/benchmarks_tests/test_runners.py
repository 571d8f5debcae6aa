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


def test_ablation_shares_the_heldout_cells_among_the_outer_seeds() -> None:
    from collections import Counter

    tables = heldout.HELDOUT_TABLES
    owner = {(t, s): ablation.outer_seed_for(t, s, (0, 1, 2)) for t in tables for s in range(10)}
    assert Counter(owner.values()) == {0: 40, 1: 40, 2: 40}
    for table in tables:  # every table is judged by every outer seed's choice, 3 or 4 times
        per_table = Counter(o for (t, _), o in owner.items() if t == table)
        assert sorted(per_table) == [0, 1, 2] and min(per_table.values()) >= 3
    # One process per outer seed (--judge-with 0-2) agrees with one process for all three.
    assert ablation.outer_seed_for(tables[4], 7, (0, 1, 2)) == (4 + 7) % 3


def test_ablation_kept_tuning_is_judged_again_without_tuning(tmp_path: Path) -> None:
    csv = tmp_path / "ablation.csv"
    argv = ["--quick", "--model", "uniform", "--groups", "B", "--results", str(csv)]
    assert ablation.main([*argv, "--storage", f"sqlite:///{tmp_path / 'a.db'}",
                          "--seeds", "100-100"]) == 0  # fmt: skip
    kept = ablation.kept_choices(ablation.tuning_path(csv))
    assert list(kept) == [("quick", "B", 0)]
    # A fresh storage (a new machine): the kept choice judges the next cell, nothing is tuned.
    fresh = f"sqlite:///{tmp_path / 'b.db'}"
    assert ablation.main([*argv, "--storage", fresh, "--seeds", "100-101"]) == 0
    names = {s.study_name for s in optuna.get_all_study_summaries(fresh)}
    assert names == {"ablation/heldout/B/o0/hpobench/vehicle/seed101"}
    rows = _results.read_rows(csv)
    assert [r["seed"] for r in rows] == ["100", "101"]
    assert len({json.dumps(json.loads(r["extra"])["config"], sort_keys=True) for r in rows}) == 1
    assert len(ablation.kept_choices(ablation.tuning_path(csv))) == 1


def test_ablation_names_a_broken_tuning_line(tmp_path: Path) -> None:
    path = tmp_path / "ablation_tuning.jsonl"
    path.write_text('{"size": "full", "group": "B", "outer_seed": 0, "choice": {}}\n{oops\n')
    with pytest.raises(ValueError, match="line 2"):
        ablation.kept_choices(path)


def test_ablation_judge_with_must_include_the_outer_seeds(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        ablation.main(["--outer-seeds", "3-3", "--judge-with", "0-2",
                       "--results", str(tmp_path / "x.csv")])  # fmt: skip


def test_lm_takes_the_configuration_the_ablation_kept(tmp_path: Path) -> None:
    kept = tmp_path / "ablation_tuning.jsonl"
    record = {"commit": "abc1234", "machine": "test machine"}
    config = {"temperature": 0.5, "history_size": 12}
    ablation.keep_choice(kept, "full", "B", 0, {"config": config, "research": {}}, record)
    ablation.keep_choice(kept, "quick", "B", 1, {"config": {}, "research": {}}, record)
    ablation.keep_choice(
        kept, "full", "C", 0, {"config": config, "research": {"accepted": ["gen_1"]}}, record
    )
    research = {"accepted": ["gen_2"], "sources": {"gen_2": "class X: ..."}}
    ablation.keep_choice(kept, "full", "D", 0, {"config": config, "research": research}, record)
    assert lm.ablation_choice("B/o0", kept)["config"] == config
    # D's sources were kept: its choice comes whole, for each cell's process to register.
    assert lm.ablation_choice("D/o0", kept)["research"] == research
    with pytest.raises(SystemExit, match="keeps no tuning of B/o1 .*has: B/o0, C/o0, D/o0"):
        lm.ablation_choice("B/o1", kept)  # the quick size's tuning is not the full one's
    with pytest.raises(SystemExit, match=r"generated mechanisms \['gen_1'\] whose sources"):
        lm.ablation_choice("C/o0", kept)
    with pytest.raises(SystemExit, match="GROUP/oSEED"):
        lm.ablation_choice("B0", kept)


@pytest.mark.slow
def test_ablation_quick_level2_groups_on_the_null_model(tmp_path: Path) -> None:
    csv = tmp_path / "ablation.csv"
    argv = ["--quick", "--model", "uniform", "--storage", f"sqlite:///{tmp_path / 'a.db'}",
            "--seeds", "100-100", "--groups", "C,D", "--results", str(csv)]  # fmt: skip
    assert ablation.main(argv) == 0
    rows = {r["arm"]: r for r in _results.read_rows(csv)}
    assert sorted(rows) == ["C", "D"]
    kept = ablation.kept_choices(ablation.tuning_path(csv))
    for group in "CD":
        research = json.loads(rows[group]["extra"])["research"]
        assert research["written"] >= 1
        # The kept tuning carries the accepted sources (a new storage can judge it); rows don't.
        sources = kept[("quick", group, 0)]["research"]["sources"]
        assert sorted(sources) == sorted(research["accepted"]) and "sources" not in research
    assert json.loads(rows["C"]["extra"])["research"]["accepted"]  # compose rules pass the gate


def test_ablation_judges_a_kept_generated_mechanism_in_a_new_storage(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "research_tests"))
    import sources as S
    from guard import needs_boundary

    if needs_boundary.args[0]:
        pytest.skip(needs_boundary.kwargs["reason"])
    from bilevel_optuna.objectives import get_objective
    from bilevel_optuna.research import MechanismStore
    from bilevel_optuna.research import check_source

    checked = check_source(S.GOOD)
    name = f"{checked.name}_{checked.sha256[:8]}"
    config = {"temperature": 0.5, "history_size": 8, "mechanisms": [[name, {"radius": 0.01}]]}
    research = {"written": 1, "accepted": [name], "sources": {name: S.GOOD}}
    choice = {"run": "ablation/C/o0", "config": config, "research": research}
    # A new storage holds no research study: the kept source is gated again, stored, registered.
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert ablation.register_kept_mechanisms(url, choice) == [name]
    stored = MechanismStore(url, "ablation/C/o0", create=False).list()
    assert [(m.name, m.mode, m.accepted) for m in stored] == [(name, "kept", True)]
    assert ablation.register_kept_mechanisms(url, choice) == [name]  # from the storage now
    objective = get_objective("branin", seed=0)
    sampler = ablation.make_sampler("C", choice, objective, 0, "uniform", url, 0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=3)
    records = [t.user_attrs[_attrs.MECHANISMS][name] for t in study.trials]
    assert all(r["errors"] == [] for r in records) and records[-1]["hooks"]["prepare"] == 1
    for mechanism in sampler.mechanisms:
        mechanism.close()

    def judged(sources: dict[str, str]) -> None:
        other = f"sqlite:///{tmp_path / 'other.db'}"
        kept = {**choice, "research": {**research, "sources": sources}}
        ablation.register_kept_mechanisms(other, kept)

    with pytest.raises(SystemExit, match="does not pass the gate under that name"):
        judged({name: S.GOOD + "\n# edited after the tuning\n"})  # another hash, another name
    with pytest.raises(SystemExit, match="rejected at policy"):
        judged({name: S.fill(S.FORBIDDEN_IMPORT)})
    with pytest.raises(SystemExit, match="neither this storage nor the kept record"):
        judged({})


def test_lm_runs_a_kept_choice_with_a_generated_mechanism(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "research_tests"))
    from guard import needs_boundary

    if needs_boundary.args[0]:
        pytest.skip(needs_boundary.kwargs["reason"])
    kept = ablation.kept_choices(ablation.tuning_path(_results.results_path("ablation")))
    generated = [
        (group, outer) for (size, group, outer), choice in sorted(kept.items())
        if size == "full" and choice["research"].get("accepted")
    ]  # fmt: skip
    if not generated:
        pytest.skip("no kept tuning with a generated mechanism in benchmarks/results")
    group, outer = generated[0]
    csv = tmp_path / "lm.csv"
    argv = ["--storage", f"sqlite:///{tmp_path / 'lm.db'}", "--seeds", "0-0", "--arms",
            "bilevel", "--from-ablation", f"{group}/o{outer}", "--model", "uniform",
            "--steps", "5", "--trials", "2", "--results", str(csv)]  # fmt: skip
    assert lm.main(argv) == 0
    (row,) = _results.read_rows(csv)
    names = [m[0] for m in json.loads(row["extra"])["config"]["mechanisms"]]
    assert set(kept[("full", group, outer)]["research"]["accepted"]) <= set(names)
    study = optuna.load_study(study_name="lm-bench/5steps/bilevel/seed000",
                              storage=f"sqlite:///{tmp_path / 'lm.db'}")  # fmt: skip
    for name in kept[("full", group, outer)]["research"]["accepted"]:
        assert all(t.user_attrs[_attrs.MECHANISMS][name]["errors"] == [] for t in study.trials)
