"""Research rounds with scripted chat models (known good and bad code), and one on the
embedded model."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import sources as S
from chat_doubles import ScriptedChatModel
from guard import needs_boundary
from scripted_research import research_model

from bilevel_optuna import _attrs
from bilevel_optuna.exceptions import ChatConnectionError
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.research import MechanismStore
from bilevel_optuna.research import ReplayResearchModel
from bilevel_optuna.research import diagnose
from bilevel_optuna.research import run_research
from bilevel_optuna.research._round import research_round
from bilevel_optuna.studies import BilevelSettings
from bilevel_optuna.studies import OuterSettings
from bilevel_optuna.studies import OuterSpace
from bilevel_optuna.studies import run_bilevel_study

pytestmark = needs_boundary


@pytest.fixture
def base_run(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'research.db'}"
    run_bilevel_study(
        "branin",
        storage=url,
        run_name="base",
        n_outer_trials=1,
        n_inner_trials=3,
        n_repeats=2,
        model=research_model(),
        settings=BilevelSettings(
            outer=OuterSettings(
                space=OuterSpace(mechanisms=[]), baselines=("random",), prune=False
            )
        ),
    )
    return url


def test_code_mode_repairs_with_the_reason_until_the_good_code(base_run: str) -> None:
    model = research_model([S.SYNTAX_ERROR, S.fill(S.FORBIDDEN_IMPORT), S.GOOD])
    report = run_research(storage=base_run, run="base", mode="code", model=model, n_outer_trials=0)
    stages = [(m.attempt, m.status, m.check.stage) for m in report.mechanisms]
    assert stages == [
        (0, "rejected", "parse"),
        (1, "rejected", "policy"),
        (2, "accepted", "accepted"),
    ]
    # The rejection's reason was fed back to the model in the repair request.
    code_requests = [r for r in model.requests if r.json_schema is None]
    assert "SyntaxError" in code_requests[1].messages[-1]["content"]
    assert "import of 'os'" in code_requests[2].messages[-1]["content"]
    record = report.rounds[1]
    assert record["ideas"][1]["idea"] == "Prefer far candidates." and record["choice"] == 1
    assert record["mechanisms"][0]["status"] == "accepted"
    assert report.acceptance["code"]["written"] == 3 and report.acceptance["code"]["accepted"] == 1
    text = report.to_markdown()
    assert "rejected" in text and "SyntaxError" in text
    # Every prompt and answer is stored: the round replays without a model.
    store = MechanismStore(base_run, "base")
    before = [(m.sha256, m.status) for m in store.list()]
    replayed = research_round(
        store, model=ReplayResearchModel(store), round_number=1,
        diagnosis=diagnose(base_run, "base"), modes=["code"], max_repairs=2,
    )  # fmt: skip
    assert replayed["failures"] == []
    assert [(m.sha256, m.status) for m in store.list()] == before


def test_rounds_already_stored_are_not_run_again(base_run: str) -> None:
    model = research_model(compose=None)
    run_research(storage=base_run, run="base", mode="compose", model=model, n_outer_trials=0)
    calls = len(model.requests)
    report = run_research(
        storage=base_run, run="base", mode="compose", model=model, n_outer_trials=0
    )
    assert len(model.requests) == calls
    assert len(report.mechanisms) == 1 and report.mechanisms[0].accepted


def test_a_model_that_answers_nothing_usable_is_recorded_and_the_run_goes_on(
    base_run: str,
) -> None:
    dead = ScriptedChatModel(lambda r, i: ChatConnectionError("endpoint down"))
    report = run_research(
        storage=base_run, run="base", mode="both", model=dead, max_repairs=1, n_outer_trials=0
    )
    record = report.rounds[1]
    assert set(record["defaulted"]) == {"ideas", "choice", "spec"}
    assert any("endpoint down" in f for f in record["failures"])
    assert [m.status for m in report.mechanisms] == ["rejected"] * 4
    assert all(m.check.reasons for m in report.mechanisms)


def test_a_spec_naming_a_run_not_in_the_storage_is_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    optuna.create_study(storage=url, study_name="base").set_user_attr(_attrs.KIND, "outer")
    with pytest.raises(ConfigurationError, match="Run 'nope' is not in this storage.*'base'"):
        run_research(storage=url, run="nope", model=research_model())


def test_compose_mode_is_injected_into_a_round_study_and_measured(base_run: str) -> None:
    model = research_model()
    report = run_research(
        storage=base_run, run="base", mode="compose", model=model,
        n_outer_trials=2, n_inner_trials=2, n_repeats=2, baselines=["random"],
    )  # fmt: skip
    [mechanism] = report.accepted
    assert mechanism.mode == "compose" and mechanism.check.hooks == ["prepare", "review"]
    effect = mechanism.effect
    assert effect is not None and effect["study"] == "base/round-001"
    assert effect["vs_incumbent"]["n"] == 2 and effect["vs_incumbent"]["test"] == "wilcoxon"
    assert effect["activity"] in ("ok", "never_changed")
    # The generated mechanism's inner trials carry the proof records, counted in the sampler.
    outer = optuna.load_study(study_name="base/round-001", storage=base_run)
    roles = {t.user_attrs.get("research:role"): t for t in outer.trials}
    names = roles[mechanism.name].user_attrs[_attrs.INNER_STUDIES]
    inner = optuna.load_study(study_name=names[0], storage=base_run)
    records = [t.user_attrs[_attrs.MECHANISMS][mechanism.name] for t in inner.trials]
    assert all(r["hooks"]["prepare"] == 1 and r["errors"] == [] for r in records)
    assert "Measured effect" in report.to_markdown() and mechanism.name in report.to_markdown()


@pytest.mark.slow
def test_a_round_on_the_embedded_model_ends_cleanly_with_records(base_run: str) -> None:
    report = run_research(
        storage=base_run, run="base", mode="both", model="local", max_repairs=1, n_outer_trials=0
    )
    record = report.rounds[1]
    assert record["model_calls"] >= 5
    assert len(report.mechanisms) >= 2
    assert {m.mode for m in report.mechanisms} == {"compose", "code"}
    assert all(m.accepted or m.check.reasons for m in report.mechanisms)


def test_hostile_code_is_recorded_and_no_stored_trial_changes(base_run: str) -> None:
    def snapshot() -> dict[str, list[tuple[int, str, object]]]:
        out = {}
        for s in optuna.get_all_study_summaries(storage=base_run, include_best_trial=False):
            if s.study_name.endswith("/research"):
                continue
            study = optuna.load_study(study_name=s.study_name, storage=base_run)
            out[s.study_name] = [(t.number, t.state.name, t.values) for t in study.trials]
        return out

    before = snapshot()
    model = research_model([S.ENDLESS_LOOP, S.MEMORY_HOG, S.SYSTEM_EXIT])
    report = run_research(storage=base_run, run="base", mode="code", model=model, n_outer_trials=0)
    assert [(m.status, m.check.stage) for m in report.mechanisms] == [("rejected", "smoke")] * 3
    assert "timed out" in report.mechanisms[0].check.reasons[0]
    assert "SystemExit" in report.mechanisms[2].check.reasons[0]
    assert snapshot() == before


def test_a_storage_that_is_not_a_url_is_named() -> None:
    with pytest.raises(ConfigurationError, match="database URL"):
        run_research(storage="x.db", run="demo")
