"""`bilevel-optuna research check|list|show|export|run`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "research_tests"))

import sources as S  # noqa: E402
from guard import needs_boundary  # noqa: E402

from bilevel_optuna.cli import main  # noqa: E402
from bilevel_optuna.research import MechanismStore  # noqa: E402
from bilevel_optuna.research import check_source  # noqa: E402

pytestmark = needs_boundary


def test_check_accepts_good_code_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "good.py"
    path.write_text(S.GOOD)
    assert main(["research", "check", str(path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("accepted far_from_history")


def test_check_rejects_bad_code_naming_the_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.py"
    path.write_text(S.fill(S.FORBIDDEN_IMPORT))
    assert main(["research", "check", str(path)]) == 1
    assert "rejected at policy: line 2: import of 'os' is not allowed" in capsys.readouterr().out


def test_check_of_a_missing_file_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["research", "check", "/nonexistent/x.py"]) == 1
    assert "No such file" in capsys.readouterr().err


def test_list_show_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = MechanismStore(url, "run-c")
    good = store.add(S.GOOD, check_source(S.GOOD), round=1, idea="keep away", mode="code")
    bad = S.fill(S.FORBIDDEN_IMPORT)
    store.add(bad, check_source(bad), round=1, idea="leak", mode="code", attempt=1)
    assert main(["research", "list", "--storage", url, "--run", "run-c"]) == 0
    out = capsys.readouterr().out
    assert good.name in out and "(policy)" in out
    assert main(["research", "show", "--storage", url, "--run", "run-c", good.name]) == 0
    out = capsys.readouterr().out
    assert "class FarFromHistory(Mechanism)" in out and good.sha256 in out
    assert (
        main(["research", "export", "--storage", url, "--run", "run-c", str(tmp_path / "out")])
        == 0
    )
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == [f"{good.name}.py"]
    exported = (tmp_path / "out" / files[0]).read_text()
    assert check_source(exported).accepted  # the exported file passes the gate as it is
    assert main(["research", "list", "--storage", url, "--run", "other"]) == 1
    assert "no generated mechanisms" in capsys.readouterr().err
