"""Generated mechanisms in the storage, and a second process that loads one from it alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sources as S
from guard import needs_boundary

from bilevel_optuna.research._check import check_source
from bilevel_optuna.research._store import MechanismStore
from bilevel_optuna.research._store import register_stored_mechanisms
from bilevel_optuna.exceptions import ConfigurationError

pytestmark = needs_boundary

_WORKER = r"""
import json, sys
sys.path.insert(0, sys.argv[3])
import optuna
from optuna.distributions import FloatDistribution
from chat_doubles import ScriptedChatModel, answer_json
from bilevel_optuna import _attrs
from bilevel_optuna.research import register_stored_mechanisms
from bilevel_optuna.samplers import LLMSampler

names = register_stored_mechanisms(sys.argv[1], sys.argv[2])
sampler = LLMSampler(
    model=ScriptedChatModel(lambda r, i: answer_json({"x": -3.0 + i, "y": 0.25})),
    search_space={"x": FloatDistribution(-5, 5), "y": FloatDistribution(0, 1)},
    mechanisms=[(names[0], {"radius": 0.01})],
    seed=1,
)
study = optuna.create_study(sampler=sampler)
study.optimize(lambda t: t.suggest_float("x", -5, 5) ** 2 + t.suggest_float("y", 0, 1), n_trials=3)
mechanism = sampler.mechanisms[0]
print(json.dumps({
    "names": names,
    "records": [t.user_attrs[_attrs.MECHANISMS][names[0]] for t in study.trials],
    "guarded_pid": mechanism._process.pid,
    "pid": __import__("os").getpid(),
    "type": type(mechanism).__name__,
}))
mechanism.close()
"""


def test_stored_mechanism_runs_in_a_second_process_from_the_storage_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'research.db'}"
    store = MechanismStore(url, "run-a")
    good = store.add(S.GOOD, check_source(S.GOOD), round=1, idea="keep away", mode="code")
    bad_source = S.fill(S.FORBIDDEN_IMPORT)
    bad = store.add(bad_source, check_source(bad_source), round=1, idea="leak", mode="code")
    assert good.accepted and good.name.startswith("far_from_history_")
    assert not bad.accepted and bad.check.stage == "policy"
    assert [i.status for i in store.list()] == ["accepted", "rejected"]

    tests_dir = Path(__file__).parents[1]
    env = {k: v for k, v in os.environ.items() if k != "BILEVEL_OPTUNA_CACHE"}
    out = subprocess.run(
        [sys.executable, "-c", _WORKER, url, "run-a", str(tests_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["names"] == [good.name]  # the rejected one is never registered
    assert data["type"].startswith("Guarded_")
    assert data["guarded_pid"] not in (None, data["pid"])
    for record in data["records"]:
        assert record["errors"] == []
        assert record["hooks"]["prepare"] == 1 and record["hooks"]["after_trial"] == 1


def test_a_run_without_research_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no generated mechanisms"):
        register_stored_mechanisms(f"sqlite:///{tmp_path / 'empty.db'}", "nope")


def test_the_same_source_is_stored_once_per_round(tmp_path: Path) -> None:
    store = MechanismStore(f"sqlite:///{tmp_path / 'r.db'}", "run-b")
    check = check_source(S.GOOD)
    store.add(S.GOOD, check, round=1, idea="a", mode="code")
    store.add(S.GOOD, check, round=1, idea="a", mode="code")
    assert len(store.list()) == 1
    assert store.get(check.sha256[:10]).name == store.list()[0].name


def test_each_stored_source_has_a_dashboard_note(tmp_path: Path) -> None:
    import optuna_dashboard

    store = MechanismStore(f"sqlite:///{tmp_path / 'n.db'}", "run-n")
    item = store.add(S.GOOD, check_source(S.GOOD), round=2, idea="far", mode="code")
    import optuna

    frozen = store.study.trials[item.trial_number]
    note = optuna_dashboard.get_note(optuna.Trial(store.study, frozen._trial_id))
    assert "class FarFromHistory(Mechanism)" in note and "Round 2" in note
