from __future__ import annotations

import json
from pathlib import Path

import _grids
import _results
import tables


def _row(benchmark: str, arm: str, objective: str, seed: int, wall: float) -> dict[str, object]:
    return {
        "benchmark": benchmark, "arm": arm, "objective": objective, "seed": seed,
        "n_trials": 30, "best_value": 1.0, "regret": 1.0, "wall_s": wall, "commit": "abc1234",
        "date": "2026-12-01", "machine": "test machine",
    }  # fmt: skip


def test_the_grids_have_the_sizes_the_issue_names() -> None:
    grids = _grids.planned_cells()
    assert {arm: len(cells) for arm, cells in grids["heldout"].items()} == {
        arm: 120 for arm in _grids.HELDOUT_ARMS
    }
    assert sum(len(c) for c in grids["mechanisms"].values()) == 4 * 10 * len(grids["mechanisms"])
    assert "level0" in grids["mechanisms"] and "llm" not in grids["mechanisms"]
    # Each tuned group judges every held-out cell once, a third with each outer seed's choice.
    b = grids["ablation"]["B"]
    assert len(b) == 120
    assert sorted(sum(1 for k in b if k[-1] == str(o)) for o in range(3)) == [40, 40, 40]
    assert {len(c) for c in grids["lm"].values()} == {10}


def test_progress_counts_the_rows_and_times_what_is_left(tmp_path: Path) -> None:
    table = "hpobench/vehicle"
    rows = [_row("heldout", "tpe", table, seed, wall) for seed, wall in ((0, 10.0), (1, 30.0))]
    rows.append(_row("heldout", "tpe", table, 0, 99.0))  # the same cell twice counts once
    rows.append(_row("heldout", "tpe", table, 0, 5.0) | {"n_trials": 10})  # another grid's
    kept = [
        {"size": "full", "group": "B", "outer_seed": 1, "choice": {"tuning_s": 7200}},
        {"size": "quick", "group": "B", "outer_seed": 0, "choice": {"tuning_s": 5}},  # not full
    ]
    by_arm = {(r.benchmark, r.arm): r for r in _grids.progress({"heldout": rows}, kept)}
    tpe = by_arm[("heldout", "tpe")]
    assert (tpe.done, tpe.planned, tpe.left) == (2, 120, 118)
    assert tpe.seconds_each == 30.0  # the median of 10, 30 and 99
    assert abs(tpe.hours_left - 118 * 30 / 3600) < 1e-9  # type: ignore[operator]
    assert by_arm[("heldout", "gp")].hours_left is None  # nothing to time it by
    tuning = by_arm[("ablation", "B tuning")]
    assert (tuning.done, tuning.planned, tuning.hours_left) == (1, 3, 4.0)  # 2 left, 2 h each

    md = tmp_path / "BENCHMARKS.md"
    md.write_text(
        "".join(f"<!-- tables:begin {n} -->\n<!-- tables:end {n} -->\n"
                for n in ("headline", "progress", "heldout", "mechanisms", "ablation", "lm"))
    )  # fmt: skip
    results = tmp_path / "results"
    _results.append_rows(results / "heldout.csv", rows)
    (results / "ablation_tuning.jsonl").write_text("".join(json.dumps(k) + "\n" for k in kept))
    argv = ["--results-dir", str(results), "--benchmarks-md", str(md),
            "--readme", str(tmp_path / "none.md")]  # fmt: skip
    assert tables.main(argv) == 0
    block = md.read_text().split("<!-- tables:begin progress -->")[1]
    assert "| heldout | tpe | 2 / 120 | 118 | 30 | 1.0 |" in block
    assert "| heldout | gp | 0 / 120 | 120 | - | unknown (no cell done) |" in block
    assert "| ablation | B tuning | 1 / 3 | 2 | 7200 | 4.0 |" in block
    assert "which have no finished cell to time" in block


def test_a_complete_grid_is_one_line() -> None:
    grids = _grids.planned_cells()
    rows = [
        dict(zip(_results.KEY, key)) | {"wall_s": "2.0"}
        for key in grids["lm"]["tpe"] | grids["lm"]["random"]
    ]
    lines = _grids.render_progress({"lm": rows}, Path("/nonexistent.jsonl"))
    assert "| lm | complete: tpe, random | 20 / 20 | 0 | - | 0 |" in lines
    assert not any(line.startswith("| lm | tpe |") for line in lines)
