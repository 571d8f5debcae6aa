from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import _results
import tables

ROOT = Path(__file__).resolve().parents[2]


def test_the_repository_tables_agree_with_the_committed_rows() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "tables.py"), "--check"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def _rows(arm: str, regrets: list[float], wall: float) -> list[dict[str, object]]:
    return [
        {
            "benchmark": "heldout", "arm": arm, "objective": "branin", "seed": seed,
            "n_trials": 30, "best_value": r, "regret": r, "wall_s": wall, "commit": "abc1234",
            "date": f"2026-12-0{1 + seed % 5}", "machine": "test machine",
            "curve": f"0:{wall / 2}:{r + 1};29:{wall}:{r}",
        }  # fmt: skip
        for seed, r in enumerate(regrets)
    ]


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    results = tmp_path / "results"
    md = tmp_path / "BENCHMARKS.md"
    readme = tmp_path / "README.md"
    md.write_text(
        "# B\n\n"
        + "".join(
            f"<!-- tables:begin {name} -->\nold\n<!-- tables:end {name} -->\n\nnotes\n\n"
            for name in ("headline", "progress", "heldout", "mechanisms", "ablation", "lm")
        )
    )
    readme.write_text("# R\n\n<!-- tables:begin headline -->\n<!-- tables:end headline -->\n")
    return results, md, readme


def test_check_fails_on_stale_tables_and_passes_once_written(tmp_path: Path) -> None:
    results, md, readme = _setup(tmp_path)
    argv = ["--results-dir", str(results), "--benchmarks-md", str(md), "--readme", str(readme)]
    # The default beats TPE on every seed at equal trials but is 100 times slower.
    csv = results / "heldout.csv"
    _results.append_rows(csv, _rows("default", [0.1 * i for i in range(10)], 100.0))
    _results.append_rows(csv, _rows("tpe", [0.1 * i + 0.5 for i in range(10)], 1.0))
    _results.append_rows(csv, _rows("random", [0.1 * i + 1 for i in range(10)], 1.0))
    assert tables.main([*argv, "--check"]) == 1
    assert tables.main(argv) == 0
    assert tables.main([*argv, "--check"]) == 0
    text = md.read_text()
    assert "old" not in text and text.count("notes") == 6
    assert "30 trials per study), 2026-12-01 to 2026-12-05, commit abc1234" in text
    assert (
        "| equal trials | default | tpe | branin | 10 | 0.00195 | 0.00195 | 0.86 [0.79, 0.98] "
        "| default better |" in text
    )
    # Within TPE's median wall time (1 s) the default finished no trial.
    none_yet = "none yet [none yet, none yet] (0/10)"
    assert f"| branin | default | 10 | 0.45 [0.225, 0.675] | {none_yet}" in text
    assert (
        "| equal wall | default | tpe | branin | 10 | 0.00195 | 0.00195 | 0.00 [0.00, 0.00] "
        "| default worse |" in text
    )
    assert "The shipped default against TPE" in readme.read_text()
    # A row more: the check fails again.
    _results.append_rows(csv, _rows("level0", [1.0, 2.0], 50.0))
    assert tables.main([*argv, "--check"]) == 1


def test_the_classical_state_arms_get_their_own_tests_where_they_have_rows(
    tmp_path: Path,
) -> None:
    results, md, readme = _setup(tmp_path)
    argv = ["--results-dir", str(results), "--benchmarks-md", str(md), "--readme", str(readme)]
    csv = results / "heldout.csv"
    _results.append_rows(csv, _rows("default", [0.1 * i + 0.2 for i in range(10)], 100.0))
    _results.append_rows(csv, _rows("tpe", [0.1 * i + 0.5 for i in range(10)], 1.0))
    _results.append_rows(csv, _rows("random", [0.1 * i + 1 for i in range(10)], 1.0))
    assert tables.main(argv) == 0
    heldout = md.read_text().split("<!-- tables:begin heldout -->")[1]
    assert "| cl-cmaes+state |" not in heldout  # no rows, no lines
    # Worse than TPE on every seed.
    _results.append_rows(csv, _rows("cl-cmaes+state", [0.1 * i + 0.9 for i in range(10)], 90.0))
    assert tables.main(argv) == 0
    text = md.read_text()
    lines = [line for line in text.splitlines() if line.startswith("| equal trials | cl-cmaes")]
    assert lines[0].startswith("| equal trials | cl-cmaes+state | tpe | branin | 10 | 0.00195 |")
    assert lines[0].endswith("| cl-cmaes+state worse |")
    assert "| equal trials | cl-cmaes+state | default | branin | 10 |" in text
    assert "| cl-cmaes+state | tpe | 10 |" in text  # pooled
    assert "Centaur's setup" in readme.read_text()  # and a headline line


def test_the_kept_tunings_get_a_table_and_a_stale_one_fails_the_check(tmp_path: Path) -> None:
    import json

    results, md, readme = _setup(tmp_path)
    argv = ["--results-dir", str(results), "--benchmarks-md", str(md), "--readme", str(readme)]
    results.mkdir()
    choice = {
        "config": {"temperature": 0.5, "history_size": 12, "mechanisms": [["tabu", {}]]},
        "tuning_evals": 720, "tuning_s": 3982.8, "research": {},
        "mechanisms": {"tabu": "ok", "restart": "never_ran", "classical": "never_changed"},
    }  # fmt: skip
    line = {"size": "full", "group": "B", "outer_seed": 0, "choice": choice, "commit": "abc1234"}
    kept = results / "ablation_tuning.jsonl"
    kept.write_text(json.dumps(line) + "\n")
    assert tables.main(argv) == 0
    block = md.read_text().split("<!-- tables:begin ablation -->")[1]
    assert "| B | 0 | full | 720 | 3982.8 |" in block
    assert "temperature 0.50, history_size 12; mechanisms: tabu" in block
    assert "| 2 of 3 (never: restart) |" in block
    assert tables.main([*argv, "--check"]) == 0
    kept.write_text(kept.read_text() + json.dumps({**line, "outer_seed": 1}) + "\n")
    assert tables.main([*argv, "--check"]) == 1


def test_the_ablation_tests_the_default_against_tpe_before_any_group_is_tuned(
    tmp_path: Path,
) -> None:
    results, md, readme = _setup(tmp_path)
    argv = ["--results-dir", str(results), "--benchmarks-md", str(md), "--readme", str(readme)]
    # A (the default) behind TPE on every one of 10 seeds; no tuned group has a cell yet.
    for arm, base in (("A", 0.5), ("tpe", 0.0), ("random", 1.0)):
        rows = _rows(arm, [base + 0.1 * i for i in range(10)], 1.0)
        rows = [{**r, "benchmark": "ablation"} for r in rows]
        _results.append_rows(results / "ablation.csv", rows)
    assert tables.main(argv) == 0
    block = md.read_text().split("<!-- tables:begin ablation -->")[1]
    assert "No pair of arms shares two seeds yet." not in block
    assert "| equal trials | A | tpe | branin | 10 | 0.00195 |" in block
    assert "| A worse |" in block
    assert "| A | tpe | 10 | 0.00195 |" in block  # pooled over the objectives


def test_a_results_file_without_its_block_is_an_error(tmp_path: Path) -> None:
    results, md, readme = _setup(tmp_path)
    readme.unlink()  # no README: its headline is skipped, not an error
    _results.append_rows(results / "workers.csv", _rows("tpe", [1.0, 2.0], 1.0))
    argv = ["--results-dir", str(results), "--benchmarks-md", str(md), "--readme", str(readme)]
    assert tables.main(argv) == 1
    assert "tables:begin heldout" in md.read_text()


def test_the_repository_files_keep_their_markers() -> None:
    text = (ROOT / "BENCHMARKS.md").read_text()
    for name in ("headline", "progress", "heldout", "mechanisms", "ablation", "lm"):
        assert f"<!-- tables:begin {name} -->" in text and f"<!-- tables:end {name} -->" in text
