from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from bilevel_optuna import _attrs
from bilevel_optuna.cli import main


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("run", "status", "compare", "serve", "dashboard"):
        assert command in out


def test_bad_spec_is_an_error_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text('[run]\nname = "x"\n[inner]\nobjectives = ["brannin"]\n[outer]\n')
    assert main(["run", str(spec)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bilevel-optuna run: error:")
    assert "branin" in err and "Traceback" not in err


def test_status_reports_runs_and_the_best_so_far(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    outer = optuna.create_study(storage=url, study_name="demo")
    outer.set_user_attr(_attrs.KIND, "outer")
    outer.set_user_attr(_attrs.RUN, "demo")
    for value in (0.9, 0.4):
        trial = outer.ask()
        trial.suggest_float("temperature", 0.0, 1.2)
        trial.set_user_attr(_attrs.CONFIG, {"temperature": value})
        outer.tell(trial, value)
    inner = optuna.create_study(storage=url, study_name="demo/tpe/branin/seed-0")
    inner.set_user_attr(_attrs.KIND, "baseline")
    inner.set_user_attr(_attrs.RUN, "demo")
    assert main(["status", url]) == 0
    out = capsys.readouterr().out
    assert "demo (outer): 2 complete; 1 inner studies" in out
    assert "best so far: trial 1, value 0.4" in out


def test_status_without_a_storage_says_what_to_give(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"]) == 1
    assert "Name a storage" in capsys.readouterr().err


RUN_SPEC = """
[run]
name = "terminal"
storage = "sqlite:///{db}"
model = "local"

[inner]
objectives = ["branin"]
n_trials = 2
n_repeats = 1

[outer]
n_trials = 1
baselines = ["random"]

[outer.space]
temperature = {{type = "float", low = 0.2, high = 0.3}}
history_size = 15
history_order = "best"
template = "minimal"
n_candidates = 1
mechanisms = []
"""


def test_run_prints_numbers_and_arm_labels_without_experimental_warnings(
    tmp_path: Path,
) -> None:
    import re
    import subprocess
    import sys

    spec = tmp_path / "terminal.toml"
    spec.write_text(RUN_SPEC.format(db=tmp_path / "terminal.db"))
    done = subprocess.run(
        [sys.executable, "-W", "default", "-m", "bilevel_optuna", "run", str(spec)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ExperimentalWarning" not in done.stderr, done.stderr
    line = next(l for l in done.stdout.splitlines() if "outer trial 0 complete" in l)
    # The arm says what its configuration is; the value is a number, not a list.
    assert re.search(r"cfg-[0-9a-f]{10} \(t=0\.2\d* h=15 minimal\) value -?[\d.e+-]+$", line), line
    config = next(l for l in done.stdout.splitlines() if l.strip().startswith("temperature:"))
    assert len(config.split(":")[1].strip().replace("0.", "", 1)) <= 4, config
    assert "artifacts of the outer study terminal" in done.stdout
