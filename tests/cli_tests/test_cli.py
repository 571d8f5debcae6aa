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
