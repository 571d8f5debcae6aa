from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
import shutil
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution
from optuna.trial import FixedTrial
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives._script import EXIT_CODE_ATTR
from bilevel_optuna.objectives._script import OUTPUT_LOG_NAME
from bilevel_optuna.objectives._script import OUTPUT_TAIL_ATTR
from bilevel_optuna.objectives._script import WORKDIR_ATTR
from bilevel_optuna.objectives._script import ScriptFailedError
from bilevel_optuna.objectives._script import ScriptMetric
from bilevel_optuna.objectives._script import ScriptObjective
from bilevel_optuna.objectives._script import ScriptParams
from bilevel_optuna.objectives._script import ScriptRun
from bilevel_optuna.objectives._script import rewrite_constants
from bilevel_optuna.objectives._space_config import distributions_from_config

SCRIPTS = Path(__file__).parent / "scripts"
REPO = Path(__file__).parents[2]
METRIC = r"^objective:\s*(\S+)"
QUAD_SPACE = {
    "x": {"type": "float", "low": -3.0, "high": 3.0},
    "y": {"type": "int", "low": 0, "high": 4},
    "kind": ["plain", "shifted"],
}

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _quadratic(x: float, y: int, kind: str) -> float:
    return (x - 1.0) ** 2 + (y - 2) ** 2 + (10.0 if kind == "shifted" else 0.0)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; waits up to 5 s for a killed process to be gone (or a zombie)."""
    deadline = time.monotonic() + 5.0
    while True:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            running = state != "Z"
        except (ProcessLookupError, FileNotFoundError):
            running = False
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.05)


def _run_one(objective: ScriptObjective, params: dict[str, Any], **kwargs: Any) -> Any:
    """Run one trial of ``objective`` on ``params`` in a fresh study; return the frozen trial."""
    study = optuna.create_study(direction=objective.direction, **kwargs)
    study.enqueue_trial(params)
    study.optimize(objective, n_trials=1)
    return study.trials[0]


# --- parameters reach the script -----------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {
            "command": ["{python}", str(SCRIPTS / "quadratic.py")],
            "params": ScriptParams(via="args"),
        },
        {
            # One string, split like a shell would; "--x={x}" is a placeholder inside an argument.
            "command": f"{{python}} '{SCRIPTS / 'quadratic.py'}' "
            "--x={x} --y {y} --kind {kind}",
            "params": ScriptParams(via="args"),
        },
        {
            "command": ["{python}", str(SCRIPTS / "quadratic.py")],
            "params": ScriptParams(via="env", env_prefix="HP_"),
        },
        {
            "command": ["{python}", str(SCRIPTS / "quadratic.py")],
            "params": ScriptParams(via="json"),
        },
        {
            "command": ["{python}", str(SCRIPTS / "quadratic.py")],
            "params": ScriptParams(via="toml", file="conf/hp.toml"),
        },
    ],
    ids=["args-auto", "args-template", "env", "json", "toml"],
)
def test_parameters_reach_the_script(options: dict[str, Any]) -> None:
    objective = ScriptObjective(search_space=QUAD_SPACE, metric=METRIC, **options)
    for params in ({"x": 2.5, "y": 1, "kind": "shifted"}, {"x": -0.125, "y": 4, "kind": "plain"}):
        assert objective(FixedTrial(params)) == pytest.approx(_quadratic(**params), abs=1e-6)


def test_params_file_placeholder_names_the_file(tmp_path: Path) -> None:
    script = tmp_path / "read.py"
    script.write_text(
        "import json, sys\nprint('value:', json.load(open(sys.argv[1]))['lr'] * 2)\n"
    )
    objective = ScriptObjective(
        command=["{python}", str(script), "{params_file}"],
        search_space={"lr": {"type": "float", "low": 0.0, "high": 1.0}},
        metric=r"^value: (\S+)",
        params=ScriptParams(via="json"),
    )
    assert objective(FixedTrial({"lr": 0.25})) == 0.5


def test_constants_rewritten_in_a_copy_and_the_original_left_unchanged(tmp_path: Path) -> None:
    original = SCRIPTS / "quadratic.py"
    before = _sha(original)
    objective = ScriptObjective(
        command=["{python}", "quadratic.py"],
        search_space={"X": QUAD_SPACE["x"], "Y": QUAD_SPACE["y"], "KIND": QUAD_SPACE["kind"]},
        metric=METRIC,
        params=ScriptParams(via="constants", constants_file=original),
        run=ScriptRun(workdir_root=tmp_path, keep_workdirs="always"),
    )
    trial = _run_one(objective, {"X": 2.5, "Y": 1, "KIND": "shifted"})
    assert trial.value == pytest.approx(_quadratic(2.5, 1, "shifted"))
    assert _sha(original) == before
    copy = Path(trial.user_attrs[WORKDIR_ATTR]) / "quadratic.py"
    text = copy.read_text()
    assert "X = 2.5  # rewritten by the constants tests\n" in text
    assert "Y = 1  # an int constant\n" in text
    assert "KIND = 'shifted'  # a categorical constant\n" in text


def test_constants_in_a_template_copy(tmp_path: Path) -> None:
    template = tmp_path / "project"
    (template / "pkg").mkdir(parents=True)
    (template / "pkg" / "config.py").write_text("LR = 0.1  # learning rate\nSTEPS = 3\n")
    (template / "train.py").write_text(
        "from pkg.config import LR, STEPS\nprint(f'val_bpb: {LR * STEPS}')\n"
    )
    (template / ".git").mkdir()
    (template / ".git" / "big").write_text("not copied")
    before = {path: _sha(path) for path in template.rglob("*") if path.is_file()}
    objective = ScriptObjective(
        command="{python} train.py",
        template=template,
        search_space={"LR": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
        metric=r"^val_bpb:\s*(\S+)",
        params=ScriptParams(via="constants", constants_file="pkg/config.py"),
        run=ScriptRun(workdir_root=tmp_path / "trials", keep_workdirs="always"),
    )
    trial = _run_one(objective, {"LR": 0.5})
    assert trial.value == pytest.approx(1.5)
    assert {path: _sha(path) for path in template.rglob("*") if path.is_file()} == before
    workdir = Path(trial.user_attrs[WORKDIR_ATTR])
    assert not (workdir / ".git").exists()
    assert "LR = 0.5  # learning rate" in (workdir / "pkg" / "config.py").read_text()


@pytest.mark.parametrize(
    "source, values, expected",
    [
        ("LR = 0.1  # lr\n", {"LR": 0.02}, "LR = 0.02  # lr\n"),
        ("BATCH = 2**19 # tokens\n", {"BATCH": 2**18}, "BATCH = 262144 # tokens\n"),
        ("A: float = 1.0\n", {"A": 3e-05}, "A: float = 3e-05\n"),
        ('W = "SSSL"\n', {"W": "L"}, "W = 'L'\n"),
        ("F = (\n    1,\n    2,\n)\nG = 1\n", {"F": True}, "F = True\nG = 1\n"),
        ("S = 'é'; T = 1\n", {"T": 2}, "S = 'é'; T = 2\n"),
        ("N = 1\nN = 2\n", {"N": None}, "N = None\nN = None\n"),
        ("X = 0.0\n", {"X": math.inf}, "X = float('inf')\n"),
        (
            "LR = 1\nif __name__ == '__main__':\n    LR = 5\n",
            {"LR": 2},
            "LR = 2\nif __name__ == '__main__':\n    LR = 5\n",
        ),
    ],
    ids=["comment", "expression", "annotated", "string", "multiline", "unicode", "twice", "inf",
         "module-level-only"],
)
def test_rewrite_constants(source: str, values: dict[str, Any], expected: str) -> None:
    assert rewrite_constants(source, values) == expected


@pytest.mark.parametrize(
    "source, values, message",
    [
        ("LR = 1\n", {"lr": 2}, "Did you mean 'LR' for 'lr'?"),
        ("def f():\n    LR = 1\n", {"LR": 2}, "no module-level assignment of ['LR']"),
        ("A = B = 1\n", {"A": 2}, "assigns ['A'] only together with other names"),
        ("A, B = 1, 2\n", {"B": 2}, "assigns ['B'] only together with other names"),
        ("LR = = 1\n", {"LR": 2}, "is not valid Python"),
    ],
)
def test_rewrite_constants_rejects(source: str, values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        rewrite_constants(source, values)


# --- intermediate values and pruning ----------------------------------------------------


def test_intermediate_values_reported_and_pruned_process_stopped(tmp_path: Path) -> None:
    objective = ScriptObjective(
        command=[
            "{python}", str(SCRIPTS / "steps.py"),
            "--lr", "{lr}", "--steps", "{steps}", "--sleep", "0.05",
        ],
        search_space={
            "lr": {"type": "float", "low": 0.001, "high": 0.9, "log": True},
            "steps": {"type": "int", "low": 1, "high": 1000},
        },
        metric=ScriptMetric(
            pattern=r"^final_loss:\s*(\S+)",
            intermediate=r"^step (?P<step>\d+) \| loss: (?P<value>\S+)",
        ),
        run=ScriptRun(workdir_root=tmp_path, keep_workdirs="always"),
    )
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=3.0))
    study.enqueue_trial({"lr": 0.5, "steps": 4})  # loss 2.1, 1.15, ...: never pruned
    study.enqueue_trial({"lr": 0.01, "steps": 1000})  # loss 4.06 > 3: pruned at step 0
    study.optimize(objective, n_trials=2)
    done, pruned = study.trials

    assert done.state == TrialState.COMPLETE
    assert sorted(done.intermediate_values) == [0, 1, 2, 3]
    assert done.intermediate_values[0] == pytest.approx(2.1)
    assert done.value == pytest.approx(done.intermediate_values[3], abs=1e-4)

    assert pruned.state == TrialState.PRUNED
    assert list(pruned.intermediate_values) == [0]
    workdir = Path(pruned.user_attrs[WORKDIR_ATTR])
    assert not _alive(int((workdir / "pid.txt").read_text()))
    log = (workdir / OUTPUT_LOG_NAME).read_text()
    assert "final_loss" not in log  # stopped, not run to its end


@pytest.mark.parametrize(
    "pattern, steps",
    [
        (r"^step (?P<step>\d+) \| loss: (?P<value>\S+)", [0, 1, 2]),
        (r"^step (\d+) \| loss: (\S+)", [0, 1, 2]),
        (r"loss: (\S+)", [0, 1, 2, 3]),  # counts matches, final_loss included
        (r"^step (?P<step>\d*[02]) \| loss: (?P<value>\S+)", [0, 2]),  # only some steps
    ],
)
def test_intermediate_pattern_forms(pattern: str, steps: list[int]) -> None:
    objective = ScriptObjective(
        command=["{python}", str(SCRIPTS / "steps.py"), "--steps", "3", "--sleep", "0"],
        search_space={"lr": {"type": "float", "low": 0.1, "high": 0.9}},
        metric=ScriptMetric(pattern=r"^final_loss:\s*(\S+)", intermediate=pattern),
    )
    trial = _run_one(objective, {"lr": 0.5})
    assert sorted(trial.intermediate_values) == steps


def test_carriage_return_progress_lines_are_lines(tmp_path: Path) -> None:
    # autoresearch's train.py rewrites one progress line with "\r" during training.
    script = tmp_path / "progress.py"
    script.write_text(
        "import sys\n"
        "for step in range(3):\n"
        "    print(f'\\rstep {step:05d} (0.0%) | loss: {5 - step:.6f} | dt: 1ms    ', end='')\n"
        "print()\nprint('---')\nprint('val_bpb:          0.997900')\n"
    )
    objective = ScriptObjective(
        command=["{python}", str(script)],
        search_space={"lr": {"type": "float", "low": 0.1, "high": 0.9}},
        metric=ScriptMetric(
            pattern=r"^val_bpb:\s*(\S+)",
            intermediate=r"^step (?P<step>\d+) .*?\| loss: (?P<value>[0-9.]+)",
        ),
    )
    trial = _run_one(objective, {"lr": 0.5})
    assert trial.value == 0.9979
    assert trial.intermediate_values == {0: 5.0, 1: 4.0, 2: 3.0}


# --- failures -----------------------------------------------------------------------


_BPB = r"^val_bpb:\s*(\S+)"


def _crash_objective(**kwargs: Any) -> ScriptObjective:
    return ScriptObjective(
        command=["{python}", str(SCRIPTS / "crash.py"), "--mode", "{mode}", "--x", "{x}"],
        search_space={
            "mode": ["ok", "raise", "exit3", "segv", "nan", "text", "none", "secret"],
            "x": {"type": "float", "low": 0.0, "high": 1.0},
        },
        metric=_BPB,
        **kwargs,
    )


@pytest.mark.parametrize(
    "mode, reason, exit_code",
    [
        ("raise", "exit code 1: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", 1),
        ("exit3", "exit code 3: loss exploded", 3),
        ("segv", "killed by SIGKILL (out of memory?): training ...", -9),
        ("nan", f"the metric from pattern {_BPB!r} is NaN", 0),
        ("text", f"the metric 'diverged' from pattern {_BPB!r} is not a number", 0),
        ("none", f"no metric: the pattern {_BPB!r} matched no line of the output", 0),
        ("secret", "exit code 2: using key *** for the endpoint", 2),
    ],
)
def test_failure_recorded_with_reason_exit_code_and_tail(
    mode: str, reason: str, exit_code: int
) -> None:
    trial = _run_one(_crash_objective(), {"mode": mode, "x": 0.5})
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs[_attrs.FAILURE_REASON] == reason
    assert trial.user_attrs[EXIT_CODE_ATTR] == exit_code
    tail = trial.user_attrs[OUTPUT_TAIL_ATTR]
    assert tail.startswith("training ...")
    assert "sk-" + "abcdefghijklmnop1234" not in tail


def test_study_goes_on_past_crashes() -> None:
    study = optuna.create_study()
    for mode in ("ok", "raise", "ok", "segv", "ok"):
        study.enqueue_trial({"mode": mode, "x": 0.25})
    study.optimize(_crash_objective(), n_trials=5)
    assert [t.state for t in study.trials] == [
        TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL,
        TrialState.COMPLETE,
    ]
    assert study.best_value == 0.5
    assert _attrs.FAILURE_REASON not in study.trials[0].user_attrs


def test_on_failure_raise() -> None:
    objective = _crash_objective(run=ScriptRun(on_failure="raise"))
    with pytest.raises(ScriptFailedError, match="exit code 3") as info:
        objective(FixedTrial({"mode": "exit3", "x": 0.5}))
    assert info.value.exit_code == 3
    assert "loss exploded" in info.value.output_tail

    study = optuna.create_study()
    for mode in ("exit3", "ok"):
        study.enqueue_trial({"mode": mode, "x": 0.25})
    study.optimize(objective, n_trials=2, catch=(ScriptFailedError,))
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[0].user_attrs[_attrs.FAILURE_REASON] == "exit code 3: loss exploded"


@pytest.mark.parametrize("ignore_term", [False, True])
def test_timeout_stops_the_process_group(tmp_path: Path, ignore_term: bool) -> None:
    objective = ScriptObjective(
        command=["{python}", str(SCRIPTS / "hang.py"), *(["--ignore-term"] * ignore_term)],
        search_space={"lr": {"type": "float", "low": 0.1, "high": 0.9}},
        metric=r"^val_bpb:\s*(\S+)",
        run=ScriptRun(
            timeout=1.5, kill_grace=0.3, workdir_root=tmp_path, keep_workdirs="failed"
        ),
    )
    trial = _run_one(objective, {"lr": 0.5})
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs[_attrs.FAILURE_REASON] == "timeout after 1.5 s"
    assert trial.user_attrs[EXIT_CODE_ATTR] is None
    assert "started; hanging" in trial.user_attrs[OUTPUT_TAIL_ATTR]
    pids_file = Path(trial.user_attrs[WORKDIR_ATTR]) / "pids.txt"
    pids = [int(pid) for pid in pids_file.read_text().split()]
    assert len(pids) == 2
    assert not any(_alive(pid) for pid in pids)


def test_leftover_children_are_stopped_when_the_script_ends(tmp_path: Path) -> None:
    script = tmp_path / "orphan.py"
    script.write_text(
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3600)'])\n"
        "open('child.txt', 'w').write(str(child.pid))\n"
        "print('value: 1.0')\n"
    )
    objective = ScriptObjective(
        command=["{python}", str(script)],
        search_space={"lr": {"type": "float", "low": 0.1, "high": 0.9}},
        metric=r"^value: (\S+)",
        timeout=60,
        run=ScriptRun(workdir_root=tmp_path / "trials", keep_workdirs="always"),
    )
    trial = _run_one(objective, {"lr": 0.5})
    assert trial.value == 1.0
    assert not _alive(int((Path(trial.user_attrs[WORKDIR_ATTR]) / "child.txt").read_text()))


# --- working folders and devices -----------------------------------------------------


def test_parallel_trials_do_not_collide_and_devices_are_exclusive(tmp_path: Path) -> None:
    template = tmp_path / "template"
    template.mkdir()
    shutil.copy(SCRIPTS / "workdir.py", template)
    (template / "data.txt").write_text("shared input\n")
    device_log = tmp_path / "devices.log"
    objective = ScriptObjective(
        command=["{python}", "workdir.py"],
        template=template,
        search_space={"x": {"type": "float", "low": 0.0, "high": 100.0}},
        metric=r"^value: (\S+)",
        run=ScriptRun(
            devices=("0", "1", "2"),
            env={"DEVICE_LOG": str(device_log)},
            workdir_root=tmp_path / "trials",
        ),
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=9, n_jobs=3)

    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert all(t.value == t.params["x"] for t in study.trials)
    assert sorted(p.name for p in template.iterdir()) == ["data.txt", "workdir.py"]
    assert list((tmp_path / "trials").iterdir()) == []  # cleaned up
    runs: dict[str, list[tuple[float, float]]] = {}
    for line in device_log.read_text().splitlines():
        device, begin, end = line.split()
        runs.setdefault(device, []).append((float(begin), float(end)))
    assert set(runs) <= {"0", "1", "2"}
    assert sum(len(spans) for spans in runs.values()) == 9
    for spans in runs.values():
        spans.sort()
        assert all(prev[1] <= nxt[0] for prev, nxt in zip(spans, spans[1:]))
    assert {t.user_attrs["script:device"] for t in study.trials} == set(runs)


@pytest.mark.parametrize(
    "keep, kept",
    [("never", []), ("failed", ["raise"]), ("always", ["ok", "raise"])],
)
def test_keep_workdirs(tmp_path: Path, keep: str, kept: list[str]) -> None:
    objective = _crash_objective(run=ScriptRun(workdir_root=tmp_path, keep_workdirs=keep))
    study = optuna.create_study()
    for mode in ("ok", "raise"):
        study.enqueue_trial({"mode": mode, "x": 0.5})
    study.optimize(objective, n_trials=2)
    assert [t.params["mode"] for t in study.trials if WORKDIR_ATTR in t.user_attrs] == kept
    assert len(list(tmp_path.iterdir())) == len(kept)


# --- metric from a file ------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, key, value, reason",
    [
        ("0.25\n", None, 0.25, None),
        ('{"acc": 0.75, "loss": 1.0}', "acc", 0.75, None),
        ('{"loss": 1.0}', "acc", None, "is not a JSON object with the key 'acc'"),
        ("oops", None, None, "is not a number"),
        (None, None, None, "did not write 'out/metric.txt'"),
    ],
)
def test_metric_file(
    tmp_path: Path, content: str | None, key: str | None, value: float | None, reason: str | None
) -> None:
    script = tmp_path / "write.py"
    write = "" if content is None else f"open('out/metric.txt', 'w').write({content!r})\n"
    script.write_text(f"import os\nos.makedirs('out')\n{write}")
    objective = ScriptObjective(
        command=["{python}", str(script)],
        search_space={"lr": {"type": "float", "low": 0.1, "high": 0.9}},
        metric=ScriptMetric(file="out/metric.txt", key=key),
        direction="maximize",
    )
    trial = _run_one(objective, {"lr": 0.5})
    if reason is None:
        assert trial.value == value
    else:
        assert trial.state == TrialState.FAIL
        assert reason in trial.user_attrs[_attrs.FAILURE_REASON]


# --- bad input, caught before the first trial -------------------------------------------

_SPACE = {"lr": {"type": "float", "low": 0.1, "high": 0.9}}
_PY = ["{python}", str(SCRIPTS / "quadratic.py")]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"command": ["no-such-command-3f9a"]}, "'no-such-command-3f9a' was not found on PATH"),
        ({"command": ["/no/such/trainer"]}, "'/no/such/trainer' does not exist"),
        ({"command": []}, "command must be a non-empty list"),
        ({"metric": "^val_bpb: ("}, "is not a valid regular expression"),
        (
            lambda: {"metric": ScriptMetric(pattern=METRIC, intermediate="loss")},
            "needs groups named 'step' and 'value'",
        ),
        ({"metric": None}, "Give exactly one of metric"),
        (
            lambda: {"metric": ScriptMetric(pattern=METRIC, file="m.txt")},
            "Give exactly one of metric",
        ),
        (lambda: {"metric": ScriptMetric(file="/tmp/m.txt")}, "relative to it"),
        (
            lambda: {"metric": ScriptMetric(pattern=METRIC, key="acc")},
            "metric_key names a field of",
        ),
        ({"command": [*_PY, "--lr", "{lrr}"]}, r"Unknown placeholder\(s\) \['\{lrr\}'\]"),
        ({"command": [*_PY, "{params_file}"]}, "only with params_via='json' or 'toml'"),
        ({"command": [*_PY, "{device}"]}, "only when devices are given"),
        (lambda: {"params": ScriptParams(via="yaml")}, "params_via must be one of"),
        (lambda: {"params": ScriptParams(file="p.json")}, "params_file is used only with"),
        (lambda: {"params": ScriptParams(via="constants")}, "needs constants_file"),
        (
            {"params": ScriptParams(via="constants", constants_file=SCRIPTS / "quadratic.py")},
            "no module-level assignment of \\['lr'\\]",
        ),
        (
            {"params": ScriptParams(via="constants", constants_file="/no/such/train.py")},
            "does not exist",
        ),
        (
            {"params": ScriptParams(via="env"), "search_space": {"path": ["a"]}},
            "overwrite .* 'PATH'",
        ),
        ({"search_space": {"workdir": ["a"]}}, "reserved placeholders"),
        ({"search_space": {"lr": {"type": "float", "low": 1.0}}}, r"needs \['high'\]"),
        (
            {"search_space": {"lr": {"type": "float", "low": 0, "high": 1, "lg": True}}},
            "unknown key",
        ),
        ({"search_space": {"n": {"type": "int", "low": 0.5, "high": 3}}}, "must be an integer"),
        ({"search_space": {"lr": {"type": "float", "low": 2.0, "high": 1.0}}}, "lr"),
        ({"search_space": {}}, "search_space is empty"),
        ({"params": ScriptParams(via="toml"), "search_space": {"a": [None, 1]}}, "TOML cannot"),
        ({"timeout": 0}, "timeout must be positive"),
        ({"template": "/no/such/folder"}, "is not a folder"),
        ({"direction": "down"}, "direction must be one of"),
        (lambda: {"run": ScriptRun(devices=())}, "devices must name at least one device"),
        (lambda: {"run": ScriptRun(keep_workdirs="sometimes")}, "keep_workdirs must be one of"),
    ],
)
def test_bad_input_is_rejected_up_front(kwargs: Any, message: str) -> None:
    """A bad setting fails where it is built: the settings object or the objective."""
    options: dict[str, Any] = {"command": _PY, "search_space": _SPACE, "metric": METRIC}
    with pytest.raises(ConfigurationError, match=message):
        # A lambda builds a settings object that rejects its own values.
        options.update(kwargs() if callable(kwargs) else kwargs)
        ScriptObjective(**options)


def test_relative_script_without_template_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(SCRIPTS)
    with pytest.raises(ConfigurationError, match="relative path, but without a template") as info:
        ScriptObjective(command=["python3", "quadratic.py"], search_space=_SPACE, metric=METRIC)
    assert str(SCRIPTS / "quadratic.py") in str(info.value)
    # With a template, the trial's folder is a copy of it: the same name is right.
    ScriptObjective(
        command=["python3", "quadratic.py"], template=".", search_space=_SPACE, metric=METRIC,
    )


def test_workdir_root_inside_template_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="inside the template"):
        ScriptObjective(
            command=_PY, search_space=_SPACE, metric=METRIC,
            template=tmp_path, run=ScriptRun(workdir_root=tmp_path / "runs"),
        )


def test_command_that_cannot_start_fails_the_trial(tmp_path: Path) -> None:
    objective = ScriptObjective(
        command=["{workdir}/missing"], search_space=_SPACE, metric=METRIC
    )
    trial = _run_one(objective, {"lr": 0.5})
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs[_attrs.FAILURE_REASON].startswith("could not start")


# --- configuration -------------------------------------------------------------------


def test_from_config_toml(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    shutil.copy(SCRIPTS / "quadratic.py", tmp_path / "proj")
    spec = tomllib.loads(
        """
        [objective]
        kind = "script"
        command = ["{python}", "quadratic.py"]
        template = "proj"
        params_via = "constants"
        constants_file = "quadratic.py"
        metric = '^objective:\\s*(\\S+)'
        direction = "minimize"
        timeout = 30
        description = "A quadratic in a script."

        [objective.search_space]
        X = {type = "float", low = -3.0, high = 3.0}
        Y = {type = "int", low = 0, high = 4, step = 2}
        KIND = ["plain", "shifted"]
        """
    )
    objective = ScriptObjective.from_config(spec["objective"], base_dir=tmp_path)
    assert objective.template == (tmp_path / "proj").resolve()
    assert objective.search_space == {
        "X": FloatDistribution(-3.0, 3.0),
        "Y": IntDistribution(0, 4, step=2),
        "KIND": CategoricalDistribution(["plain", "shifted"]),
    }
    assert objective.description == "A quadratic in a script."
    assert objective(FixedTrial({"X": 0.5, "Y": 4, "KIND": "plain"})) == pytest.approx(4.25)


def test_from_config_rejects_unknown_keys() -> None:
    config = {"command": _PY, "search_space": _SPACE, "metric": METRIC, "metrc": "x"}
    with pytest.raises(ConfigurationError, match=r"Unknown key\(s\) \['metrc'\].*'metric'"):
        ScriptObjective.from_config(config)
    with pytest.raises(ConfigurationError, match="kind must be 'script'"):
        ScriptObjective.from_config({"kind": "function", "command": _PY, "search_space": _SPACE})
    with pytest.raises(ConfigurationError, match="needs `search_space`"):
        ScriptObjective.from_config({"command": _PY, "metric": METRIC})


def test_distributions_from_config_table() -> None:
    space = distributions_from_config(
        {
            "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "wd": {"type": "float", "low": 0, "high": 1, "step": 0.25},
            "depth": {"type": "int", "low": 2, "high": 12},
            "batch": {"type": "int", "low": 16, "high": 256, "step": 16},
            "act": {"type": "categorical", "choices": ["relu", "gelu"]},
            "window": ["SSSL", "L"],
            "given": IntDistribution(1, 2),
        }
    )
    assert space == {
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "wd": FloatDistribution(0.0, 1.0, step=0.25),
        "depth": IntDistribution(2, 12),
        "batch": IntDistribution(16, 256, step=16),
        "act": CategoricalDistribution(["relu", "gelu"]),
        "window": CategoricalDistribution(["SSSL", "L"]),
        "given": IntDistribution(1, 2),
    }


def test_pickle_round_trip_keeps_devices() -> None:
    objective = ScriptObjective(
        command=_PY, search_space=QUAD_SPACE, metric=METRIC, run=ScriptRun(devices=["0", "1"])
    )
    copy = pickle.loads(pickle.dumps(objective))
    assert copy.devices == ["0", "1"]
    assert copy(FixedTrial({"x": 1.0, "y": 2, "kind": "plain"})) == 0.0


def test_description_defaults_to_the_command_and_metric() -> None:
    objective = ScriptObjective(command=["python3", "-c", "pass"], search_space=_SPACE,
                                metric=METRIC, direction="maximize")
    assert objective.description == (
        "Runs `python3 -c pass` per trial; maximize the number matched by "
        "'^objective:\\\\s*(\\\\S+)' in its output."
    )


# --- the autoresearch example spec ---------------------------------------------------


def test_autoresearch_spec_runs_on_a_stand_in_checkout(tmp_path: Path) -> None:
    """studies/specs/autoresearch.toml on a folder shaped like karpathy/autoresearch.

    The stand-in train.py has the real file's constants and output format (a "\\r" progress
    line per step, then "val_bpb:" after "---"); its value is a function of the constants.
    """
    spec = tomllib.loads((REPO / "studies" / "specs" / "autoresearch.toml").read_text())
    config = dict(spec["objective"])
    checkout = tmp_path / "autoresearch"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / ".venv" / "bin" / "python").symlink_to(sys.executable)
    (checkout / "prepare.py").write_text("TIME_BUDGET = 300\n")
    constants = "\n".join(f"{name} = {json.dumps(_autoresearch_default(name))}" for name in
                          config["search_space"])
    (checkout / "train.py").write_text(
        "from prepare import TIME_BUDGET\n"
        "ASPECT_RATIO = 64\nHEAD_DIM = 128\n"
        f"{constants}\n"
        "loss = 5.0\n"
        "for step in range(3):\n"
        "    loss *= 0.9\n"
        "    print(f'\\rstep {step:05d} (1.0%) | loss: {loss:.6f} | lrm: 1.00 | dt: 9ms    ',"
        " end='', flush=True)\n"
        "print()\n"
        "print('---')\n"
        "print(f'val_bpb:          {1.0 + abs(MATRIX_LR - 0.04):.6f}')\n"
        "print('training_seconds: 300.1')\n"
    )
    config["template"] = str(checkout)
    objective = ScriptObjective.from_config(config, base_dir=REPO / "studies")
    assert objective.direction == "minimize"
    assert objective.timeout is not None and objective.timeout > 300  # TIME_BUDGET
    params = {name: _autoresearch_default(name) for name in objective.search_space}
    params["MATRIX_LR"] = 0.05
    trial = _run_one(objective, params)
    assert trial.state == TrialState.COMPLETE
    assert trial.value == pytest.approx(1.01)


def _autoresearch_default(name: str) -> Any:
    defaults = {
        "WINDOW_PATTERN": "SSSL", "TOTAL_BATCH_SIZE": 2**19, "EMBEDDING_LR": 0.6,
        "UNEMBEDDING_LR": 0.004, "MATRIX_LR": 0.04, "SCALAR_LR": 0.5, "WEIGHT_DECAY": 0.2,
        "WARMUP_RATIO": 0.0, "WARMDOWN_RATIO": 0.5, "FINAL_LR_FRAC": 0.0, "DEPTH": 8,
        "DEVICE_BATCH_SIZE": 128, "ASPECT_RATIO": 64, "HEAD_DIM": 128,
    }
    return defaults[name]


def test_long_output_keeps_a_bounded_tail(tmp_path: Path) -> None:
    script = tmp_path / "chatty.py"
    script.write_text(
        "import sys\n"
        "sys.stdout.write(''.join(f'step {i} loss: {i}\\n' for i in range(50_000)))\n"
        "sys.stdout.write('x' * 1_500_000 + '\\n')\n"  # a line over 1 MB
        "print('val_bpb: 1.5')\n"
        "sys.exit(int(sys.argv[1]))\n"
    )
    objective = ScriptObjective(
        command=["{python}", str(script), "{code}"],
        search_space={"code": [0, 1]},
        metric=r"^val_bpb:\s*(\S+)",
    )
    done = _run_one(objective, {"code": 0})
    assert done.value == 1.5
    failed = _run_one(objective, {"code": 1})
    tail = failed.user_attrs[OUTPUT_TAIL_ATTR]
    assert len(tail) == 2000 and tail.endswith("xxx\nval_bpb: 1.5")
    assert failed.user_attrs[_attrs.FAILURE_REASON] == "exit code 1: val_bpb: 1.5"


# --- the torch LM task, run as a script ----------------------------------------------


@pytest.mark.slow
def test_lm_task_run_as_a_script_matches_the_in_process_task() -> None:
    from bilevel_optuna.objectives._lm_task import LMObjective

    lm = LMObjective(steps=40, eval_every=20)
    objective = ScriptObjective(
        command=[
            "{python}", "-m", "bilevel_optuna.objectives.lm_train",
            "--steps", "40", "--eval-every", "20", "--seed", "{trial_number}",
            "--lr", "{lr}", "--width", "{width}",
        ],
        search_space={"lr": lm.search_space["lr"], "width": [64, 50]},
        metric=ScriptMetric(
            pattern=r"^val_bpb:\s*(\S+)",
            intermediate=r"^step (?P<step>\d+) val_bpb: (?P<value>\S+)",
        ),
        timeout=300,
        description=lm.description,
    )
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    study.enqueue_trial({"lr": 3e-3, "width": 64})
    study.enqueue_trial({"lr": 3e-3, "width": 50})  # not divisible by the 4 heads
    study.optimize(objective, n_trials=2)
    done, failed = study.trials

    expected = lm.run({"lr": 3e-3, "width": 64}, seed=0)
    assert done.state == TrialState.COMPLETE
    assert done.value == pytest.approx(expected.val_bpb, abs=1e-6)  # printed with 6 decimals
    assert done.intermediate_values == pytest.approx(dict(expected.history), abs=1e-6)
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs[_attrs.FAILURE_REASON] == (
        "exit code 2: error: width (50) must be divisible by heads (4)."
    )
