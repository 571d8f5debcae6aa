"""One regression test per finding of issue 22 (the parent trusted what the child said), each
through the user's real path where there is one, each with a control that shows the attack
worked on the code before the fix (a direct demonstration of what the unvalidated path did).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import sources as S
from guard import needs_boundary
from helpers import context
from helpers import proxy
from hostile import frame
from hostile import hostile

from bilevel_optuna import _attrs
from bilevel_optuna.cli import main as cli_main
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.research._check import check_source
from bilevel_optuna.research._gate import static_check
from bilevel_optuna.research._proxy import guarded_class
from bilevel_optuna.research._proxy import GuardedHookError
from bilevel_optuna.research._sandbox import Layers
from bilevel_optuna.research._sandbox import Limits
from bilevel_optuna.research._store import MechanismStore
from bilevel_optuna.samplers._answer import repair_params
from bilevel_optuna.samplers.mechanisms._loading import load_mechanism_by_name
from bilevel_optuna.samplers.mechanisms._loading import source_hash

SECRET = "sk-test-issue22-secret"


def _evil_name(marker: Path) -> str:
    """A "name" that is Python source: it writes the parent's API key to ``marker``."""
    return (
        "x = 1\nimport os\n"
        f"open({str(marker)!r}, 'w').write(os.environ.get('OPENAI_API_KEY', ''))\n"
        "from bilevel_optuna.samplers import Mechanism\nclass E(Mechanism):\n    name = 'e'\n"
        "#_12345678"
    )


def _renaming_source(name: str) -> str:
    """Passes the static gate with name 'ring', then reports ``name`` when loaded."""
    return (
        "import optuna\nfrom bilevel_optuna.samplers import Mechanism\n"
        "class Ring(Mechanism):\n    name = 'ring'\n"
        "    @classmethod\n    def search_space(cls):\n"
        f"        cls.name = {name!r}\n        return {{}}\n"
        "    def prepare(self, context):\n        context.notes.append('ok')\n"
    )


def _store_by_hand(storage: str, run: str, name: str, source: str = S.GOOD) -> None:
    """A stored mechanism as an older version (or a hand) wrote it, with ``name`` unchecked."""
    store = MechanismStore(storage, run)
    check = check_source(source)
    trial = store.study.ask()
    attrs = {
        _attrs.GEN_NAME: name,
        _attrs.GEN_SOURCE: source,
        _attrs.GEN_SHA: source_hash(source),
        _attrs.GEN_ROUND: 0,
        _attrs.GEN_IDEA: "idea\nimport os",
        _attrs.GEN_MODE: "code",
        _attrs.GEN_STATUS: "accepted",
        _attrs.GEN_CHECK: {**check.to_dict(), "name": name},
    }
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    store.study.tell(trial, 1.0)


# ------------------------------------------------------------ 1. code execution in the parent
def test_control_1_the_old_newline_sniffing_loader_ran_a_name_as_code(tmp_path: Path) -> None:
    marker = tmp_path / "stolen.txt"
    # What load_mechanism did with a string holding a newline: import it as source.
    code = (
        "import sys\n"
        "from bilevel_optuna.samplers.mechanisms._loading import load_mechanism_source\n"
        "load_mechanism_source(sys.argv[1])\n"
    )
    env = dict(os.environ, OPENAI_API_KEY=SECRET)
    subprocess.run(
        [sys.executable, "-c", code, _evil_name(marker)],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert marker.read_text() == SECRET


@needs_boundary
def test_1_a_name_reported_at_run_time_never_becomes_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    marker = tmp_path / "stolen.txt"
    source = _renaming_source(_evil_name(marker))
    assert static_check(source).ok  # the static gate alone cannot see it
    file = tmp_path / "ring.py"
    file.write_text(source)
    assert cli_main(["research", "check", str(file)]) == 1  # the real path: refused at load
    result = check_source(source)
    assert not result.accepted and result.stage == "load" and "must match" in result.reasons[0]
    # A stored name that is code (a storage written before the fix) is never registered ...
    url = f"sqlite:///{tmp_path / 'r.db'}"
    _store_by_hand(url, "demo", _evil_name(marker))
    store = MechanismStore(url, "demo", create=False)
    assert store.register() == []
    # ... and loading by name never reads a name as source.
    with pytest.raises(ConfigurationError, match="Unknown mechanism"):
        load_mechanism_by_name(_evil_name(marker))
    assert not marker.exists()
    assert SECRET not in (tmp_path / "r.db").read_bytes().decode("latin-1")


@needs_boundary
def test_1_a_name_that_changes_between_gate_and_run_is_refused() -> None:
    source = _renaming_source("ring")
    result = check_source(source)
    assert result.accepted
    # A class whose name is another one at run time than at the gate.
    cls = guarded_class(
        source,
        name="ring_00000000",
        hooks=["prepare"],
        space={},
        sha256=result.sha256,
        declared_name="other",
    )
    mechanism = cls()
    try:
        with pytest.raises(GuardedHookError, match="not as the gate accepted it"):
            mechanism.prepare(context())
    finally:
        mechanism.close()


# ----------------------------------------------------------------------- 2. path traversal
def test_control_2_the_old_export_path_left_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    stem = "../../escaped_12345678"
    assert not (folder / f"{stem}.py").resolve().is_relative_to(folder.resolve())


@needs_boundary
def test_2_export_writes_nothing_outside_its_folder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    _store_by_hand(url, "demo", "../../escaped_12345678")
    _store_by_hand(url, "demo", "/tmp/absolute_12345678", source=S.GOOD + "\n# two\n")
    check = check_source(S.GOOD + "\n# three\n")
    MechanismStore(url, "demo").add(
        S.GOOD + "\n# three\n", check, round=1, idea="i\nimport os", mode="code"
    )
    folder = tmp_path / "a" / "b" / "out"
    assert cli_main(["research", "export", "--storage", url, "--run", "demo", str(folder)]) == 0
    written = sorted(p.name for p in tmp_path.rglob("*.py"))
    assert written == [f"far_from_history_{check.sha256[:8]}.py"]
    exported = (folder / written[0]).read_text()
    # A newline in a stored idea cannot start a line of code in the exported file.
    assert "import os" not in exported.splitlines()


# ------------------------------------------------------------ 3. malformed replies crashed it
def test_control_3_the_unvalidated_path_raised_other_errors() -> None:
    with pytest.raises(RecursionError):
        json.loads("[" * 200_000 + "]" * 200_000)
    with pytest.raises(AttributeError):
        [].get("notes")  # type: ignore[attr-defined]  # _apply on `changes` that is a list


@pytest.mark.parametrize(
    "reply",
    [
        frame({"ok": True, "result": None, "changes": []}),
        b"\x00\x06\x1a\x80" + b"[" * 200_000 + b"]" * 200_000,
    ],
    ids=["changes-list", "nested-200000"],
)
def test_3_a_malformed_reply_is_the_mechanisms_failure(reply: bytes) -> None:
    mechanism = hostile([reply])
    try:
        with pytest.raises(GuardedHookError):
            mechanism.prepare(context())
    finally:
        mechanism.close()


# ----------------------------------------------------------------------------- 4. budgets
_HUGE = """
from bilevel_optuna.samplers import Mechanism, Review
class Huge(Mechanism):
    name = "huge"
    def prepare(self, context):
        context.record[self.name] = {"blob": "x" * (8 * 1024 * 1024)}
    def review(self, candidate, context):
        return Review.replace({**candidate, "kind": "b" * (8 * 1024 * 1024)}, "big")
"""


def test_control_4_a_near_miss_categorical_went_to_the_repair() -> None:
    space = context().search_space
    params, repairs = repair_params({"x": 0.0, "lr": 0.01, "layers": 2, "kind": "b "}, space)
    assert params["kind"] == "b" and repairs  # an untrusted string was matched by difflib
    assert len(json.dumps({"blob": "x" * (8 * 1024 * 1024)})) > 8 * 1024 * 1024


@needs_boundary
def test_4_an_8_mb_record_or_categorical_is_refused_and_nothing_grows() -> None:
    cls = guarded_class(
        _HUGE,
        name="huge_00000000",
        hooks=["prepare", "review"],
        space={},
        sha256=source_hash(_HUGE),
        limits=Limits(hook_timeout=20, restart_backoff=0.0),
    )
    mechanism = cls()
    ctx = context()
    try:
        with pytest.raises(GuardedHookError, match="budget"):
            mechanism.prepare(ctx)
        with pytest.raises(GuardedHookError, match="budget"):
            mechanism.review({"x": 0.0, "lr": 0.01, "layers": 2, "kind": "a"}, ctx)
    finally:
        mechanism.close()
    assert "huge_00000000" not in ctx.record
    # Through the gate, the source is rejected at the smoke run.
    result = check_source(_HUGE)
    assert not result.accepted and result.stage == "smoke"
    assert any("budget" in r for r in result.reasons)


# ------------------------------------------------------------ 5. non-finite search spaces
_INFINITE = """
import optuna
from bilevel_optuna.samplers import Mechanism
class Inf(Mechanism):
    name = "inf"
    def __init__(self, *, r: float = 0.1, k: str = "a") -> None:
        self.r = r
    @classmethod
    def search_space(cls):
        return {"r": optuna.distributions.FloatDistribution(0.0, float("inf")),
                "k": optuna.distributions.CategoricalDistribution(["a", float("nan")])}
    def prepare(self, context):
        pass
"""


def test_control_5_optunas_own_reader_takes_an_infinite_bound() -> None:
    from optuna.distributions import json_to_distribution

    dist = json_to_distribution(
        '{"name": "FloatDistribution", "attributes": {"low": 0.0, '
        '"high": Infinity, "log": false, "step": null}}'
    )
    assert dist.high == float("inf")


@needs_boundary
def test_5_a_non_finite_search_space_is_refused_at_load(tmp_path: Path) -> None:
    file = tmp_path / "inf.py"
    file.write_text(_INFINITE)
    assert cli_main(["research", "check", str(file)]) == 1
    result = check_source(_INFINITE)
    assert result.stage == "load" and "non-finite" in result.reasons[0]


# ------------------------------------------------------------- 6. hyperparameter `source`
_SOURCE_PARAM = """
import optuna
from bilevel_optuna.samplers import Mechanism
class S(Mechanism):
    name = "src"
    def __init__(self, *, source: str = "a") -> None:
        self.s = source
    @classmethod
    def search_space(cls):
        return {"source": optuna.distributions.CategoricalDistribution(["a", "b"])}
    def prepare(self, context):
        context.notes.append(self.s)
"""


def test_control_6_setting_hyperparameters_as_attributes_replaced_the_source() -> None:
    cls = guarded_class(
        _SOURCE_PARAM,
        name="src_00000000",
        hooks=["prepare"],
        space={
            "source": '{"name": "CategoricalDistribution", "attributes": '
            '{"choices": ["a", "b"]}}'
        },
        sha256="0" * 64,
    )
    mechanism = cls(source="b")
    setattr(mechanism, "source", "b")  # what the old __init__ did for each hyperparameter
    assert mechanism.source == "b"


@needs_boundary
def test_6_a_hyperparameter_named_source_stays_a_hyperparameter() -> None:
    result = check_source(_SOURCE_PARAM)
    assert result.accepted, result.summary()
    cls = guarded_class(
        _SOURCE_PARAM,
        name="src_00000000",
        hooks=result.hooks,
        space=result.space,
        sha256=result.sha256,
        declared_name="src",
    )
    mechanism = cls(source="b")
    ctx = context()
    try:
        assert mechanism.source == _SOURCE_PARAM and mechanism.hyperparameters == {"source": "b"}
        mechanism.prepare(ctx)
    finally:
        mechanism.close()
    assert ctx.notes == ["b"]


# ----------------------------------------------------------- 7. a child that keeps dying
@needs_boundary
def test_control_7_without_a_cap_every_call_started_the_child_again() -> None:
    mechanism = proxy(S.HARD_EXIT, Layers(), Limits(max_restarts=100, restart_backoff=0.0))
    try:
        for _ in range(5):
            with pytest.raises(GuardedHookError):
                mechanism.prepare(context())
    finally:
        mechanism.close()
    assert mechanism.starts == 5


@needs_boundary
def test_7_restarts_are_capped_then_the_mechanism_is_disabled_and_recorded() -> None:
    mechanism = proxy(S.HARD_EXIT, Layers(), Limits(max_restarts=2, restart_backoff=0.0))
    ctx = context()
    try:
        errors = []
        for _ in range(6):
            with pytest.raises(GuardedHookError) as info:
                mechanism.prepare(ctx)
            errors.append(str(info.value))
    finally:
        mechanism.close()
    assert mechanism.starts == 3  # the first start and two restarts
    assert errors[-1].startswith("disabled for this study")
    assert ctx.study.user_attrs[_attrs.RESEARCH_DISABLED_PREFIX + "under_test"] == errors[-1]


def test_7_backoff_fails_calls_at_once_instead_of_restarting() -> None:
    whole = frame({"ok": True, "result": None, "changes": {}})
    mechanism = hostile(
        [whole[:3]], exit_after=[True], limits=Limits(restart_backoff=3600.0, start_timeout=20.0)
    )
    try:
        for _ in range(2):  # the first restart is at once
            with pytest.raises(GuardedHookError, match="exited"):
                mechanism.prepare(context())
        with pytest.raises(GuardedHookError, match="backoff"):
            mechanism.prepare(context())
    finally:
        mechanism.close()
    assert mechanism.starts == 2


# ------------------------------------------------------------------ 8. the gate's blind spots
_ATTRGETTER = """
import operator
from bilevel_optuna.samplers import Mechanism
class A(Mechanism):
    name = "getter"
    def prepare(self, context):
        k = operator.attrgetter("_" + "_class_" + "_")(context)
"""

_PRIVATE_OS = """
import random
from bilevel_optuna.samplers import Mechanism
class P(Mechanism):
    name = "private_os"
    def prepare(self, context):
        try:
            random._os.system("true")
        except Exception:
            pass
"""


def test_control_8_a_computed_dunder_reaches_the_interpreter() -> None:
    import operator

    assert operator.attrgetter("_" + "_class_" + "_")(1) is int


def test_8_the_policy_refuses_attrgetter_and_private_module_attributes() -> None:
    assert static_check(_ATTRGETTER).stage == "policy"
    report = static_check(_PRIVATE_OS)
    assert report.stage == "policy" and any("'_os'" in r for r in report.reasons)


@needs_boundary
def test_control_8_with_errno_seccomp_a_tried_forbidden_call_passed_the_gate() -> None:
    result = check_source(_PRIVATE_OS, layers=Layers(seccomp_errno=True), _prefilter=False)
    assert result.accepted, result.summary()


@needs_boundary
def test_8_a_tried_forbidden_system_call_fails_the_smoke_run() -> None:
    result = check_source(_PRIVATE_OS, _prefilter=False)
    assert not result.accepted and result.stage == "smoke"
    assert "SIGSYS" in result.reasons[0] and "forbidden system call" in result.reasons[0]


# ----------------------------------------------------------------- 9. `research list` crash
def test_control_9_formatting_a_p_value_of_none_raised() -> None:
    with pytest.raises(TypeError):
        f"{None:.3g}"


@needs_boundary
def test_9_research_list_shows_a_missing_p_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = MechanismStore(url, "demo")
    item = store.add(S.GOOD, check_source(S.GOOD), round=1, idea="i", mode="code")
    store.set_effect(item.name, {"a12": None, "pvalue": None, "activity": "ok"})
    assert cli_main(["research", "list", "--storage", url, "--run", "demo"]) == 0
    assert "A12 n/a, p n/a" in capsys.readouterr().out


def test_7_status_shows_a_mechanism_disabled_in_a_runs_studies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    outer = optuna.create_study(storage=url, study_name="demo")
    outer.set_user_attr(_attrs.KIND, "outer")
    for seed in range(2):
        inner = optuna.create_study(storage=url, study_name=f"demo/inner-{seed}")
        inner.set_user_attr(_attrs.KIND, "inner")
        inner.set_user_attr(_attrs.RUN, "demo")
        inner.set_user_attr(
            _attrs.RESEARCH_DISABLED_PREFIX + "ring_12345678",
            "disabled for this study: its guarded process was started 4 times",
        )
    assert cli_main(["status", url]) == 0
    assert "disabled: ring_12345678 in 2 studies (disabled for this study" in (
        capsys.readouterr().out
    )


@needs_boundary
def test_7_in_a_study_the_disabled_mechanism_is_recorded_on_trials_and_study() -> None:
    from chat_doubles import ScriptedChatModel
    from chat_doubles import answer_json
    from optuna.distributions import FloatDistribution

    from bilevel_optuna.samplers import LLMSampler

    cls = guarded_class(
        S.HARD_EXIT,
        name="die_00000000",
        hooks=["prepare"],
        space={},
        sha256=source_hash(S.HARD_EXIT),
        declared_name="die",
        limits=Limits(max_restarts=1, restart_backoff=0.0),
    )
    mechanism = cls()
    sampler = LLMSampler(
        model=ScriptedChatModel(lambda r, i: answer_json({"x": 0.1 * i})),
        search_space={"x": FloatDistribution(-5, 5)},
        mechanisms=[mechanism],
        seed=0,
    )
    study = optuna.create_study(sampler=sampler)
    try:
        study.optimize(lambda t: t.suggest_float("x", -5, 5) ** 2, n_trials=4)
    finally:
        mechanism.close()
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    errors = [t.user_attrs[_attrs.MECHANISMS]["die_00000000"]["errors"] for t in study.trials]
    assert "exited with status 7" in errors[0][0]
    assert "disabled for this study" in errors[-1][0]
    assert mechanism.starts == 2
    assert study.user_attrs[_attrs.RESEARCH_DISABLED_PREFIX + "die_00000000"].startswith(
        "disabled for this study"
    )
