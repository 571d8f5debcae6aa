"""A small bilevel run end to end with the embedded model, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.studies import BilevelSettings
from bilevel_optuna.studies import InnerSettings
from bilevel_optuna.studies import OuterSettings
from bilevel_optuna.studies import OuterSpace
from bilevel_optuna.studies import run_bilevel_study
from bilevel_optuna.studies.specs._settings import field_path

TINY = dict(
    n_outer_trials=2,
    n_inner_trials=4,
    n_repeats=2,
    settings=BilevelSettings(
        # The held-out evaluation has its own, longer list of seeds (power without slower
        # repeats).
        inner=InnerSettings(heldout_seeds=[0, 1, 7]),
        outer=OuterSettings(
            space=OuterSpace(
                temperature=0.7,
                history_size=15,
                history_order="best",
                template="default",
                n_candidates=1,
                mechanisms=["tabu"],
            )
        ),
    ),
)


def _inner_trial_counts(url: str, run: str | None = None) -> dict[str, int]:
    return {
        s.study_name: s.n_trials
        for s in optuna.get_all_study_summaries(storage=url, include_best_trial=False)
        if s.user_attrs.get(_attrs.KIND) in ("inner", "baseline", "heldout")
        and run in (None, s.user_attrs.get(_attrs.RUN))
    }


def _check_run(url: str, run: str) -> None:
    extra = dict(heldout_objectives=["rosenbrock"])
    result = run_bilevel_study("branin", storage=url, run_name=run, **extra, **TINY)
    outer = result.outer_study
    assert outer.user_attrs[_attrs.KIND] == "outer"
    finished = outer.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 2
    # The first outer trial is the Level-0 configuration, reusing the llm-level0 baseline.
    assert outer.trials[0].user_attrs[_attrs.ARM] == "llm-level0"
    summaries = {
        s.study_name: s
        for s in optuna.get_all_study_summaries(storage=url, include_best_trial=False)
    }
    for t in finished:
        names = t.user_attrs[_attrs.INNER_STUDIES]
        assert names
        for name in names:
            attrs = summaries[name].user_attrs
            assert attrs[_attrs.RUN] == run
            assert attrs[_attrs.OBJECTIVE] == "branin"
            assert attrs[_attrs.SEED] in (0, 1)
            assert summaries[name].n_trials >= 4
    arms = {
        s.user_attrs.get(_attrs.ARM)
        for s in summaries.values()
        if s.user_attrs.get(_attrs.RUN) == run
    }
    assert {"random", "tpe", "llm-level0"} <= arms
    assert set(result.arm_scores) >= {"random", "tpe", "llm-level0", "best"}
    for arm in result.arm_scores.values():
        assert set(arm) == {"branin", "rosenbrock"}
        assert len(arm["branin"]) == 2 and len(arm["rosenbrock"]) == 3
    # The PostgreSQL database is shared with other test runs: only this run's studies count.
    heldout = [
        s
        for s in summaries.values()
        if s.user_attrs.get(_attrs.KIND) == "heldout" and s.user_attrs.get(_attrs.RUN) == run
    ]
    assert heldout and all(s.user_attrs[_attrs.OBJECTIVE] == "rosenbrock" for s in heldout)
    assert sorted(s.user_attrs[_attrs.SEED] for s in heldout) == [0, 1, 7]
    assert result.heldout_comparison is not None
    # Inner trials carry the proposer's record.
    inner = optuna.load_study(
        study_name=outer.trials[0].user_attrs[_attrs.INNER_STUDIES][0], storage=url
    )
    assert all(_attrs.SOURCE in t.user_attrs for t in inner.trials)
    # Running again resumes: nothing is recomputed.
    before = _inner_trial_counts(url, run)
    again = run_bilevel_study("branin", storage=url, run_name=run, **extra, **TINY)
    assert _inner_trial_counts(url, run) == before
    assert again.best_config == result.best_config


def test_bilevel_run_on_sqlite(tmp_path: Path) -> None:
    _check_run(f"sqlite:///{tmp_path}/bilevel.db", "tiny")


@pytest.mark.postgres
def test_bilevel_run_on_postgresql(postgres_url: str) -> None:
    run = f"tiny-{uuid.uuid4().hex[:6]}"
    try:
        _check_run(postgres_url, run)
    finally:
        # The database is shared with other test runs, which delete their own studies: list
        # studies without reading their trials, and let a study that vanished be.
        storage = optuna.storages.RDBStorage(postgres_url)
        for s in storage.get_all_studies():
            if s.study_name == run or s.user_attrs.get(_attrs.RUN) == run:
                try:
                    optuna.delete_study(study_name=s.study_name, storage=storage)
                except KeyError:
                    pass


SPEC = """
[run]
name = "killed"
storage = "sqlite:///{db}"
model = "local"

[inner]
objectives = ["branin"]
n_trials = 4
n_repeats = 2

[outer]
n_trials = 2
baselines = ["random", "tpe", "llm-level0"]

[outer.space]
temperature = 0.7
history_size = 15
history_order = "best"
template = "default"
n_candidates = 1
mechanisms = []
"""


def test_resume_after_the_process_is_killed(tmp_path: Path) -> None:
    db = tmp_path / "killed.db"
    spec = tmp_path / "killed.toml"
    spec.write_text(SPEC.format(db=db))
    cmd = [sys.executable, "-m", "bilevel_optuna", "run", str(spec)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    url = f"sqlite:///{db}"
    deadline = time.time() + 300
    # Kill it once the first LLM study has some finished trials but is not done.
    while time.time() < deadline:
        time.sleep(1)
        if not db.exists():
            continue
        try:
            counts = _inner_trial_counts(url)
        except Exception:
            continue
        if any("llm-level0" in name and n >= 2 for name, n in counts.items()):
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = {
        s.study_name: [
            (t.number, t.params, t.value)
            for t in optuna.load_study(study_name=s.study_name, storage=url).get_trials(
                states=(TrialState.COMPLETE,)
            )
        ]
        for s in optuna.get_all_study_summaries(storage=url, include_best_trial=False)
        if s.user_attrs.get(_attrs.KIND) == "baseline"
    }
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "best proposer configuration" in done.stdout
    for name, trials in finished_before.items():
        now = optuna.load_study(study_name=name, storage=url).get_trials(
            states=(TrialState.COMPLETE,)
        )
        assert [(t.number, t.params, t.value) for t in now][: len(trials)] == trials
        assert len(now) >= 4


def test_a_resumed_run_does_not_propose_its_first_configurations_again(tmp_path: Path) -> None:
    # The outer TPE's start-up draws are random and seeded: a second call with the same seed
    # would repeat them from the first unless the run's trials move the seed on.
    url = f"sqlite:///{tmp_path}/resume.db"
    kwargs: dict = dict(
        storage=url,
        run_name="resume",
        n_inner_trials=1,
        n_repeats=1,
        settings=BilevelSettings(
            outer=OuterSettings(
                baselines=("random",),
                space=OuterSpace(
                    history_size=15, history_order="best", template="minimal", n_candidates=1,
                    mechanisms=[],
                ),
            )
        ),
    )
    run_bilevel_study("branin", n_outer_trials=3, **kwargs)
    result = run_bilevel_study("branin", n_outer_trials=5, **kwargs)
    temperatures = [t.params["temperature"] for t in result.outer_study.trials]
    assert len(temperatures) == 5 and len(set(temperatures)) == 5


# --- Optuna conventions (issue 17): callbacks, metric names, artifacts, journal storage ---

CONVENTIONS = dict(
    run_name="conventions",
    n_outer_trials=1,
    n_inner_trials=2,
    n_repeats=1,
    settings=BilevelSettings(
        outer=OuterSettings(
            baselines=("random", "tpe"),
            space=OuterSpace(
                temperature=optuna.distributions.FloatDistribution(0.2, 0.3),
                history_size=15,
                history_order="best",
                template="minimal",
                n_candidates=1,
                mechanisms=[],
            ),
        )
    ),
)


@pytest.fixture(scope="module")
def conventions_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import warnings

    folder = tmp_path_factory.mktemp("conventions")
    url = f"sqlite:///{folder}/run.db"
    calls: list[tuple[str, int]] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_bilevel_study(
            "branin",
            storage=url,
            callbacks=[lambda study, trial: calls.append((study.study_name, trial.number))],
            **CONVENTIONS,
        )
    return {"url": url, "folder": folder, "result": result, "calls": calls, "warnings": caught}


def test_callbacks_are_called_after_every_inner_and_outer_trial(conventions_run: dict) -> None:
    result, calls = conventions_run["result"], conventions_run["calls"]
    outer_calls = [number for name, number in calls if name == "conventions"]
    assert outer_calls == [0]
    names = {name for arm in result.arms.values() for studies in arm.values() for name in studies}
    for name in names:
        assert sorted(n for s, n in calls if s == name) == [0, 1], name


def test_every_study_names_its_metric(conventions_run: dict) -> None:
    url = conventions_run["url"]
    for summary in optuna.get_all_study_summaries(storage=url, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=url)
        if summary.study_name == "conventions":
            assert study.metric_names == ["normalized regret"]
        else:  # the objective's name where its metric has none of its own
            assert study.metric_names == ["branin"], summary.study_name


def test_every_study_says_what_it_is(conventions_run: dict) -> None:
    url = conventions_run["url"]
    roles = {
        s.study_name: s.user_attrs[_attrs.ROLE]
        for s in optuna.get_all_study_summaries(storage=url, include_best_trial=False)
    }
    best = conventions_run["result"].best_arm
    assert roles["conventions"].startswith("outer study")
    assert roles["conventions/random/branin/seed-0"] == "baseline random on branin, repeat 1 of 1"
    assert roles[f"conventions/{best}/branin/seed-0"] == (
        f"inner study of outer trial 0 ({best}) on branin, repeat 1 of 1"
    )


def test_the_run_records_where_its_artifacts_are(conventions_run: dict) -> None:
    outer = conventions_run["result"].outer_study
    assert outer.user_attrs[_attrs.ARTIFACT_STORE] == {
        "type": "folder",
        "path": str((conventions_run["folder"] / "run_artifacts").resolve()),
    }


def test_the_report_and_its_plots_are_artifacts_of_the_outer_study(
    conventions_run: dict, tmp_path: Path
) -> None:
    from optuna.artifacts import FileSystemArtifactStore
    from optuna.artifacts import download_artifact
    from optuna.artifacts import get_all_artifact_meta

    result = conventions_run["result"]
    metas = get_all_artifact_meta(result.outer_study)
    names = {m.filename for m in metas}
    assert "comparison.md" in names and "comparison_anytime.png" in names
    assert result.report_artifacts == {m.filename: m.artifact_id for m in metas}
    store = FileSystemArtifactStore(str(conventions_run["folder"] / "run_artifacts"))
    report = next(m for m in metas if m.filename == "comparison.md")
    download_artifact(
        artifact_store=store, artifact_id=report.artifact_id, file_path=str(tmp_path / "r.md")
    )
    text = (tmp_path / "r.md").read_text()
    assert result.best_arm in text and "random" in text and "tpe" in text
    # A rerun with nothing new stores nothing again.
    again = run_bilevel_study("branin", storage=conventions_run["url"], **CONVENTIONS)
    assert len(get_all_artifact_meta(again.outer_study)) == len(metas)


def test_a_run_raises_no_experimental_warning_of_its_own(conventions_run: dict) -> None:
    from optuna.exceptions import ExperimentalWarning

    ours = [w for w in conventions_run["warnings"] if issubclass(w.category, ExperimentalWarning)]
    assert not ours, [str(w.message) for w in ours]


def test_arm_names_say_what_the_configuration_is(conventions_run: dict) -> None:
    result = conventions_run["result"]
    assert result.best_arm.startswith("cfg-")
    assert result.best_label.startswith(result.best_arm + " (t=0.")
    assert "minimal" in result.best_label


def test_an_outer_trial_says_who_proposed_its_inner_trials_and_their_time(
    conventions_run: dict,
) -> None:
    url = conventions_run["url"]
    outer = conventions_run["result"].outer_study
    (trial,) = outer.get_trials(states=(TrialState.COMPLETE,))
    summary = trial.user_attrs[_attrs.SUMMARY]
    sources: dict[str, int] = {}
    seconds = 0.0
    for name in trial.user_attrs[_attrs.INNER_STUDIES]:
        for t in optuna.load_study(study_name=name, storage=url).trials:
            sources[t.user_attrs[_attrs.SOURCE]] = sources.get(t.user_attrs[_attrs.SOURCE], 0) + 1
            seconds += (t.datetime_complete - t.datetime_start).total_seconds()
    assert summary["sources"] == sources and sum(sources.values()) == 2
    assert summary["fallback_share"] == sources.get("fallback", 0) / 2
    assert summary["seconds"] == pytest.approx(seconds, abs=0.01) and seconds > 0


def test_a_configuration_whose_model_answers_fail_is_named_with_its_fallback_share(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.chat_doubles import ScriptedChatModel

    lines: list[str] = []
    model = ScriptedChatModel(lambda request, i: "no JSON here")
    space = CONVENTIONS["settings"].outer.space  # type: ignore[attr-defined]
    outer = OuterSettings(baselines=("random",), start_from=(), space=space, prune=False)
    settings = BilevelSettings(outer=outer)
    with caplog.at_level("WARNING", logger="bilevel_optuna"):
        result = run_bilevel_study(
            "branin", storage=f"sqlite:///{tmp_path}/run.db", settings=settings, model=model,
            n_outer_trials=1, n_inner_trials=2, n_repeats=1, progress=lines.append,
        )  # fmt: skip
    (trial,) = result.outer_study.get_trials(states=(TrialState.COMPLETE,))
    summary = trial.user_attrs[_attrs.SUMMARY]
    assert summary["sources"] == {"fallback": 2} and summary["fallback_share"] == 1.0
    assert "100% of its inner trials" in caplog.text
    assert any("(100% of inner trials from the fallback)" in line for line in lines), lines


def test_the_seconds_cost_objective_is_the_inner_trials_wall_time_per_repeat(
    tmp_path: Path,
) -> None:
    space = CONVENTIONS["settings"].outer.space  # type: ignore[attr-defined]
    outer = OuterSettings(
        baselines=("random",), start_from=(), space=space, cost_objective="seconds"
    )
    result = run_bilevel_study(
        "branin", storage=f"sqlite:///{tmp_path}/run.db", settings=BilevelSettings(outer=outer),
        n_outer_trials=1, n_inner_trials=2, n_repeats=2,
    )  # fmt: skip
    study = result.outer_study
    assert study.metric_names == ["normalized regret", "seconds per repeat"]
    (trial,) = study.get_trials(states=(TrialState.COMPLETE,))
    seconds = trial.user_attrs[_attrs.SUMMARY]["seconds"]
    assert seconds > 0 and trial.values[1] == pytest.approx(seconds / 2)
    assert result.best_config is not None


def test_a_run_on_a_journal_file(tmp_path: Path) -> None:
    path = str(tmp_path / "run.log")
    result = run_bilevel_study("branin", storage=path, **CONVENTIONS)
    assert result.storage_url == path and result.best_config is not None
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    outer = optuna.load_study(study_name="conventions", storage=storage)
    assert len(outer.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 1
    assert (tmp_path / "run_artifacts").is_dir() and result.report_artifacts


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"outer_sampler": "cmaes"}, "outer_sampler"),
        ({"baselines": ["random", "smac"]}, "smac"),
        ({"seeds": [1, 1]}, "distinct"),
        ({"aggregate": "median"}, "aggregate"),
        ({"aggregate": "regret"}, "needs known optima"),  # checked on the objectives
    ],
)
def test_every_argument_is_checked_before_any_study_runs(
    tmp_path: Path, kwargs: dict, match: str
) -> None:
    db = tmp_path / "none.db"
    objective = "branin" if kwargs.get("aggregate") != "regret" else lambda trial: 0.0
    with pytest.raises(ConfigurationError, match=match), pytest.warns(FutureWarning):
        run_bilevel_study(objective, storage=f"sqlite:///{db}", **kwargs)
    assert not db.exists()  # not even the storage was opened


# --- run_bilevel_study's keywords: the shortcuts, the deprecated ones, the conflicts ---

DEPRECATED = dict(
    seeds=[4],
    heldout_seeds=[5, 6],
    outer_space=OuterSpace(
        temperature=0.5, history_size=10, history_order="best", template="minimal",
        n_candidates=1, mechanisms=[],
    ),
    start_from=[],
    outer_sampler="random",
    aggregate="best",
    prune=False,
    cost_objective=False,
    baselines=["random"],
    on_model_error="fallback",
    max_tokens_total=10_000,
    max_cost=1.0,
    token_prices=[0.1, 0.2],
)


def test_every_deprecated_keyword_warns_naming_its_field_and_still_works(tmp_path: Path) -> None:
    with pytest.warns(FutureWarning) as said:
        result = run_bilevel_study(
            "branin", heldout_objectives=["rosenbrock"], storage=f"sqlite:///{tmp_path}/d.db",
            run_name="d", n_outer_trials=1, n_inner_trials=2, model="uniform", **DEPRECATED,
        )  # fmt: skip
    messages = [str(w.message) for w in said if issubclass(w.category, FutureWarning)]
    for keyword in DEPRECATED:
        assert any(
            f"run_bilevel_study({keyword}=...) is deprecated: set {field_path(keyword)}" in m
            for m in messages
        ), keyword
    stored = result.outer_study.user_attrs[_attrs.SETTINGS]
    assert stored["inner"]["seeds"] == [4] and stored["inner"]["heldout_seeds"] == [5, 6]
    assert stored["outer"]["sampler"] == "random" and stored["outer"]["aggregate"] == "best"
    assert stored["outer"]["baselines"] == ["random"] and stored["outer"]["start_from"] == []
    assert stored["model"] == {
        "model": "uniform", "on_model_error": "fallback", "max_tokens_total": 10_000,
        "max_cost": 1.0, "token_prices": [0.1, 0.2],
    }  # fmt: skip
    assert len(result.arms["random"]["rosenbrock"]) == 2  # the held-out seeds


def test_a_shortcut_that_disagrees_with_the_settings_object_fails_before_any_work(
    tmp_path: Path,
) -> None:
    settings = BilevelSettings(outer=OuterSettings(n_trials=3, prune=False))
    db = tmp_path / "never.db"
    with pytest.raises(ConfigurationError, match="n_outer_trials=5 and settings.outer.n_trials=3"):
        run_bilevel_study("branin", storage=f"sqlite:///{db}", settings=settings, n_outer_trials=5)
    with pytest.raises(ConfigurationError, match="prune=True and settings.outer.prune=False"):
        with pytest.warns(FutureWarning):
            run_bilevel_study("branin", storage=f"sqlite:///{db}", settings=settings, prune=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_outer'"):
        run_bilevel_study("branin", storage=f"sqlite:///{db}", n_outer=5)
    assert not db.exists()
