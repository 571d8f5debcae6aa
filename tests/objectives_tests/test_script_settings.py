"""The settings groups of ScriptObjective, the shortcuts and the deprecated flat keywords."""

from __future__ import annotations

import dataclasses
import pickle
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import FixedTrial

from bilevel_optuna import ScriptObjective as TopLevelScriptObjective
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives import ScriptMetric
from bilevel_optuna.objectives import ScriptObjective
from bilevel_optuna.objectives import ScriptParams
from bilevel_optuna.objectives import ScriptRun
from bilevel_optuna.studies.specs._toml import build_objective

SCRIPTS = Path(__file__).parent / "scripts"
METRIC = r"^objective:\s*(\S+)"
PY = ["{python}", str(SCRIPTS / "quadratic.py")]
SPACE = {
    "x": {"type": "float", "low": -3.0, "high": 3.0},
    "y": {"type": "int", "low": 0, "high": 4},
    "kind": ["plain", "shifted"],
}
PARAMS = {"x": 2.5, "y": 1, "kind": "shifted"}
VALUE = (2.5 - 1.0) ** 2 + (1 - 2) ** 2 + 10.0  # scripts/quadratic.py on PARAMS


def test_settings_are_frozen_and_normalized() -> None:
    run = ScriptRun(timeout=5, devices=["0", 1], template=".", env={"A": 1})
    assert run.timeout == 5.0 and isinstance(run.timeout, float)
    assert run.devices == ("0", "1")
    assert run.template == Path.cwd().resolve()
    assert run.workdir_root == Path(tempfile.gettempdir())
    assert run.env == {"A": "1"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.timeout = 1.0  # type: ignore[misc]
    assert ScriptParams(via="json").file_name == "params.json"
    assert ScriptParams(via="toml", file="conf/p.toml").file_name == "conf/p.toml"
    assert ScriptParams(via="env").file_name is None
    assert pickle.loads(pickle.dumps(run)) == run
    assert hash(run) == hash(dataclasses.replace(run))


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: ScriptRun(timeout=-1), "timeout must be positive"),
        (lambda: ScriptRun(kill_grace=-0.1), "kill_grace must be >= 0"),
        (lambda: ScriptRun(device_env="NOT A NAME"), "device_env must be"),
        (lambda: ScriptRun(on_failure="ignore"), "on_failure must be one of"),
        (lambda: ScriptParams(via="json", file="../p.json"), "params_file must be relative"),
        (lambda: ScriptParams(via="args", constants_file="c.py"), "constants_file is used only"),
        (lambda: ScriptMetric(), "Give exactly one of metric"),
        (lambda: ScriptMetric(pattern=METRIC, direction="up"), "direction must be one of"),
        (lambda: ScriptMetric(file="../m.txt"), "inside the trial's folder"),
    ],
)
def test_settings_reject_bad_values_where_built(build: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build()


def test_settings_objects_and_shortcuts_run_a_trial(tmp_path: Path) -> None:
    objective = ScriptObjective(
        command=PY,
        search_space=SPACE,
        metric=ScriptMetric(pattern=METRIC, direction="maximize"),
        timeout=30,
        run=ScriptRun(workdir_root=tmp_path, keep_workdirs="never"),
        params=ScriptParams(via="env", env_prefix="HP_"),
    )
    assert objective.direction == "maximize"
    assert objective.run_settings.timeout == 30.0  # the shortcut, set in the group
    assert objective.run_settings.workdir_root == tmp_path.resolve()
    assert objective.params_settings.via == "env"
    assert objective.metric == METRIC  # the flat attribute of earlier releases, read-only
    assert objective(FixedTrial(PARAMS)) == pytest.approx(VALUE)
    assert TopLevelScriptObjective is ScriptObjective


def test_a_shortcut_that_contradicts_its_settings_object_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="timeout is given twice"):
        ScriptObjective(
            command=PY, search_space=SPACE, metric=METRIC, timeout=5, run=ScriptRun(timeout=9)
        )
    with pytest.raises(ConfigurationError, match="direction is given twice"):
        ScriptObjective(
            command=PY,
            search_space=SPACE,
            metric=ScriptMetric(pattern=METRIC, direction="maximize"),
            direction="minimize",
        )
    with pytest.raises(ConfigurationError, match="run must be a ScriptRun"):
        ScriptObjective(command=PY, search_space=SPACE, metric=METRIC, run={"timeout": 5})


def test_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'metrc'"):
        ScriptObjective(command=PY, search_space=SPACE, metric=METRIC, metrc="x")


def test_constants_file_is_taken_from_the_template(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "config.py").write_text("LR = 0.1\n")
    objective = ScriptObjective(
        command=["{python}", "-c", "pass"],
        search_space={"LR": {"type": "float", "low": 0.01, "high": 1.0}},
        metric=METRIC,
        template=tmp_path,
        params=ScriptParams(via="constants", constants_file="pkg/config.py"),
    )
    assert objective.params_settings.constants_file == (tmp_path / "pkg" / "config.py").resolve()
    assert objective._constants_rel == Path("pkg/config.py")


# Each deprecated flat keyword, a value that works with the others given, and the settings
# field that replaces it (named by the warning).
DEPRECATED = [
    ("metric_file", "m.txt", "metric=ScriptMetric(file=...)", "file"),
    ("metric_key", "acc", "metric=ScriptMetric(key=...)", "key"),
    ("intermediate", r"loss: (\S+)", "metric=ScriptMetric(intermediate=...)", "intermediate"),
    ("params_via", "json", "params=ScriptParams(via=...)", "via"),
    ("params_file", "p.toml", "params=ScriptParams(file=...)", "file"),
    ("env_prefix", "HP_", "params=ScriptParams(env_prefix=...)", "env_prefix"),
    ("constants_file", str(SCRIPTS / "quadratic.py"),
     "params=ScriptParams(constants_file=...)", "constants_file"),
    ("kill_grace", 0.5, "run=ScriptRun(kill_grace=...)", "kill_grace"),
    ("template_ignore", (".git",), "run=ScriptRun(template_ignore=...)", "template_ignore"),
    ("workdir_root", "WORKDIR", "run=ScriptRun(workdir_root=...)", "workdir_root"),
    ("keep_workdirs", "failed", "run=ScriptRun(keep_workdirs=...)", "keep_workdirs"),
    ("devices", ["0", "1"], "run=ScriptRun(devices=...)", "devices"),
    ("device_env", "GPU", "run=ScriptRun(device_env=...)", "device_env"),
    ("env", {"A": "1"}, "run=ScriptRun(env=...)", "env"),
    ("on_failure", "raise", "run=ScriptRun(on_failure=...)", "on_failure"),
]
# What each needs besides to make a working objective.
_WITH = {
    "metric_file": {"metric": None},
    "metric_key": {"metric": ScriptMetric(file="m.json")},
    "params_file": {"params": ScriptParams(via="toml")},
    "env_prefix": {"params": ScriptParams(via="env")},
    # The one group that cannot be built without the deprecated field: both flat keywords.
    "constants_file": {"params_via": "constants", "search_space": {"X": [1.0, 2.0]}},
}


@pytest.mark.parametrize("key, value, spelling, field", DEPRECATED, ids=[d[0] for d in DEPRECATED])
def test_deprecated_flat_keyword_warns_and_still_works(
    tmp_path: Path, key: str, value: Any, spelling: str, field: str
) -> None:
    value = str(tmp_path) if value == "WORKDIR" else value
    options: dict[str, Any] = {"command": PY, "search_space": SPACE, "metric": METRIC}
    options.update(_WITH.get(key, {}))
    options[key] = value
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        objective = ScriptObjective(**options)
    messages = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    match = re.escape(f"ScriptObjective({key}=...)") + ".*" + re.escape(spelling)
    assert any(re.search(match, message) for message in messages), messages
    assert all(w.filename == __file__ for w in caught)  # at the caller's line
    group = {"metric": "metric_settings", "params": "params_settings", "run": "run_settings"}
    settings = getattr(objective, group[spelling.split("=")[0]])
    got = getattr(settings, field)
    if key == "workdir_root":
        assert got == tmp_path.resolve()
    elif key == "constants_file":
        assert got == Path(value).resolve()
    elif key == "devices":
        assert got == tuple(value)
    else:
        assert got == value
    assert getattr(objective, key) == (list(got) if key == "devices" else got)


def test_deprecated_keywords_run_a_trial_as_before() -> None:
    with pytest.warns(FutureWarning):
        objective = ScriptObjective(
            command=PY, search_space=SPACE, metric=METRIC, params_via="env", env_prefix="HP_"
        )
    assert objective(FixedTrial(PARAMS)) == pytest.approx(VALUE)


def test_an_old_spec_entry_still_loads_without_warnings(tmp_path: Path) -> None:
    """A script table written for the flat constructor (as ``spec_entry`` stores it)."""
    entry = {
        "kind": "script",
        "command": ["{python}", "quadratic.py"],
        "template": str(SCRIPTS),
        "params_via": "env",
        "env_prefix": "HP_",
        "metric": METRIC,
        "direction": "minimize",
        "timeout": 30,
        "kill_grace": 1,
        "keep_workdirs": "failed",
        "workdir_root": str(tmp_path),
        "template_ignore": ["*.pyc"],
        "devices": ["0"],
        "device_env": "CUDA_VISIBLE_DEVICES",
        "env": {"X": "1"},
        "on_failure": "nan",
        "search_space": SPACE,
        "name": "quad",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        objective = build_objective(entry, base_dir=tmp_path, where="objectives")
    assert objective.spec_entry == entry
    assert isinstance(objective, ScriptObjective)
    assert objective.name == "quad"
    assert objective.run_settings == ScriptRun(
        timeout=30,
        kill_grace=1,
        template=SCRIPTS,
        template_ignore=("*.pyc",),
        workdir_root=tmp_path,
        keep_workdirs="failed",
        devices=("0",),
        env={"X": "1"},
    )
    assert objective.params_settings == ScriptParams(via="env", env_prefix="HP_")
    assert objective(FixedTrial(PARAMS)) == pytest.approx(VALUE)
