from __future__ import annotations

import multiprocessing
from pathlib import Path

import optuna
import pytest

import _results
import mechanisms


def _row(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "benchmark": "heldout", "arm": "tpe", "objective": "branin", "seed": 0,
        "n_trials": 30, "best_value": 0.5, "regret": 0.1, "wall_s": 1.5, "commit": "abc1234",
        "date": "2026-12-06", "machine": "test machine", "curve": "0:0.1:0.5;3:0.4:0.1",
    }  # fmt: skip
    row.update(overrides)
    return row


def test_append_writes_the_header_once_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "results" / "heldout.csv"
    assert _results.append_rows(path, [_row(seed=0)]) == 1
    assert _results.append_rows(path, [_row(seed=1), _row(seed=2, extra={"a": [1, 2]})]) == 2
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(_results.FIELDS)
    assert len(lines) == 4
    rows = _results.read_rows(path)
    assert [r["seed"] for r in rows] == ["0", "1", "2"]
    assert rows[2]["extra"] == '{"a":[1,2]}'
    assert rows[0]["outer_seed"] == "" and rows[0]["regret"] == "0.1"


def test_append_refuses_unknown_columns_and_a_foreign_header(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    with pytest.raises(ValueError, match="unknown result columns"):
        _results.append_rows(path, [_row(colour="blue")])
    path.write_text("benchmark,arm\n")
    with pytest.raises(ValueError, match="move it aside"):
        _results.append_rows(path, [_row()])


def test_a_cut_line_is_skipped_not_misread(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    _results.append_rows(path, [_row(seed=0), _row(seed=1)])
    with path.open("a") as f:
        f.write("heldout,tpe,branin,2\n")
    assert [r["seed"] for r in _results.read_rows(path)] == ["0", "1"]


def _append_many(path: str, worker: int) -> None:
    for i in range(50):
        _results.append_rows(path, [_row(seed=worker * 1000 + i, machine="m" * 2000)])


def test_two_processes_appending_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_append_many, args=(str(path), w)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    rows = _results.read_rows(path)
    assert len(rows) == 100
    assert path.read_text().count("benchmark,arm,") == 1
    assert sorted(int(r["seed"]) for r in rows) == sorted(
        w * 1000 + i for w in range(2) for i in range(50)
    )


def test_done_cells_key_on_the_cell_not_the_result(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    _results.append_rows(path, [_row(seed=3, regret=0.9), _row(arm="B", outer_seed=1)])
    done = _results.done_cells(path)
    assert _results.cell_key(_row(seed=3, regret=0.1)) in done
    assert _results.cell_key(_row(seed=4)) not in done
    assert _results.cell_key(_row(arm="B", outer_seed=1)) in done
    assert _results.cell_key(_row(arm="B", outer_seed=2)) not in done


def test_parse_seeds() -> None:
    assert _results.parse_seeds("3") == [0, 1, 2]
    assert _results.parse_seeds("3-5") == [3, 4, 5]
    assert _results.parse_seeds("0,4-6,4") == [0, 4, 5, 6]
    assert _results.parse_seeds("7-7") == [7]
    with pytest.raises(ValueError, match="seeds must look like"):
        _results.parse_seeds("a-b")
    with pytest.raises(ValueError, match="'0-0'"):
        _results.parse_seeds("0")  # a count of none would run nothing, silently


def test_regret_at_trials_and_seconds() -> None:
    curve = _results.parse_curve("0:0.5:9;2:1.5:4;7:6:1")
    assert _results.regret_at(curve, trials=1) == 9
    assert _results.regret_at(curve, trials=8) == 1
    assert _results.regret_at(curve, seconds=2.0) == 4
    assert _results.regret_at(curve, seconds=0.1) == float("inf")


def test_the_runner_writes_rows_skips_done_cells_and_export_agrees(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    csv = tmp_path / "mechanisms.csv"
    argv = ["--storage", url, "--trials", "4", "--objectives", "branin", "--arms", "random",
            "--results", str(csv), "--commit", "abc1234"]  # fmt: skip
    assert mechanisms.main([*argv, "--seeds", "0-1", "--jobs", "1"]) == 0
    rows = _results.read_rows(csv)
    assert [(r["arm"], r["seed"], r["n_trials"]) for r in rows] == [
        ("random", "0", "4"), ("random", "1", "4"),
    ]  # fmt: skip
    assert all(float(r["regret"]) >= 0 and float(r["wall_s"]) > 0 for r in rows)
    assert all(r["commit"] == "abc1234" and r["curve"] for r in rows)
    # A slice that overlaps: the two finished cells are skipped, seed 2 is added.
    assert mechanisms.main([*argv, "--seeds", "1-2", "--jobs", "1"]) == 0
    assert [r["seed"] for r in _results.read_rows(csv)] == ["0", "1", "2"]
    # The storage alone gives the same rows (what the export of an older runner's run does).
    exported = tmp_path / "exported.csv"
    appended, seen = _results.export_storage(
        url, benchmark="mechanisms", commit="abc1234", n_trials=4, path=exported
    )
    assert (appended, seen) == (3, 3)
    assert _results.export_storage(
        url, benchmark="mechanisms", commit="abc1234", n_trials=4, path=exported
    ) == (0, 3)
    columns = [c for c in _results.FIELDS if c != "machine"]
    mine = sorted(tuple(r[c] for c in columns) for r in _results.read_rows(csv))
    assert sorted(tuple(r[c] for c in columns) for r in _results.read_rows(exported)) == mine


def test_export_maps_the_old_llm_arm_and_skips_unfinished_studies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    storage = optuna.storages.RDBStorage(url)
    for arm, n in (("llm", 3), ("tpe", 2)):
        study = optuna.create_study(
            storage=storage, study_name=mechanisms.study_name("branin", arm, 5),
            sampler=optuna.samplers.RandomSampler(seed=0),
        )  # fmt: skip
        study.optimize(lambda t: t.suggest_float("x0", -5, 10) + t.suggest_float("x1", 0, 15), n)
    path = tmp_path / "out.csv"
    appended, _ = _results.export_storage(
        url, benchmark="heldout", commit="521615f", n_trials=3, path=path
    )
    assert appended == 1
    (row,) = _results.read_rows(path)
    assert (row["arm"], row["objective"], row["seed"], row["commit"]) == (
        "level0", "branin", "5", "521615f",
    )  # fmt: skip
