from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bilevel_optuna.objectives import lm_train

FINAL = re.compile(r"^val_bpb: (\d+\.\d{6})$", re.MULTILINE)
STEP = re.compile(r"^step (\d+) val_bpb: (\d+\.\d{6})$", re.MULTILINE)


def test_prints_grep_able_lines(capsys: pytest.CaptureFixture[str]) -> None:
    code = lm_train.main(["--steps", "20", "--eval-every", "5", "--lr", "0.01", "--depth", "1"])
    out = capsys.readouterr().out
    assert code == 0
    steps = [(int(s), float(v)) for s, v in STEP.findall(out)]
    assert [s for s, _ in steps] == [5, 10, 15, 20]
    final = FINAL.findall(out)
    assert len(final) == 1
    assert float(final[0]) == steps[-1][1]
    match = re.search(r"^floor_bpb: (\S+)$", out, re.MULTILINE)
    assert match is not None
    floor = float(match.group(1))
    assert floor < float(final[0])
    assert "num_steps: 20" in out


def test_same_arguments_same_output(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--steps", "6", "--eval-every", "3", "--seed", "5"]
    lm_train.main(argv)
    first = FINAL.findall(capsys.readouterr().out)
    lm_train.main(argv)
    assert FINAL.findall(capsys.readouterr().out) == first


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--steps", "0"], "too small to train one step"),
        (["--seconds", "0"], "too small to train one step"),
        (["--width", "64", "--heads", "3"], "divisible"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    argv: list[str], match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lm_train.main(argv) == 2
    assert match in capsys.readouterr().err


def test_user_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "text.txt"
    corpus.write_text("a stitch in time saves nine. " * 80, encoding="utf-8")
    assert lm_train.main(["--corpus", str(corpus), "--steps", "5"]) == 0
    out = capsys.readouterr().out
    assert FINAL.search(out)
    assert "floor_bpb" not in out
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert lm_train.main(["--corpus", str(empty)]) == 2
    assert "is empty" in capsys.readouterr().err


def test_runs_as_a_module() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bilevel_optuna.objectives.lm_train",
            "--steps",
            "4",
            "--eval-every",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert STEP.search(out.stdout)
    assert FINAL.search(out.stdout)
