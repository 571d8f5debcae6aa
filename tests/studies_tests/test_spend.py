"""A run's model policy through run_bilevel_study: the endpoint check, the fallback when asked
for, the spend and its cap, as ``bilevel-optuna status`` and the report show them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
import pytest
from chat_tests._scripted import free_port

from bilevel_optuna import _attrs
from bilevel_optuna.cli import main
from bilevel_optuna.exceptions import ChatConnectionError
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.samplers._spend import Spend
from bilevel_optuna.studies import BilevelSettings
from bilevel_optuna.studies import ModelSettings
from bilevel_optuna.studies import OuterSettings
from bilevel_optuna.studies import OuterSpace
from bilevel_optuna.studies import run_bilevel_study
from bilevel_optuna.studies._spend import ModelPolicy

OUTER = OuterSettings(
    baselines=["random"],
    prune=False,
    space=OuterSpace(
        temperature=0.5,
        history_size=10,
        history_order="best",
        template="minimal",
        n_candidates=1,
        mechanisms=[],
    ),
)
TINY = dict(n_outer_trials=1, n_inner_trials=3, n_repeats=1)


def _settings(**model: Any) -> BilevelSettings:
    """The tiny run's settings with the model settings given."""
    return BilevelSettings(outer=OUTER, model=ModelSettings(**model))


def _llm_studies(url: str) -> list[optuna.Study]:
    return [
        optuna.load_study(study_name=s.study_name, storage=url)
        for s in optuna.get_all_study_summaries(storage=url, include_best_trial=False)
        if s.user_attrs.get(_attrs.KIND) in ("inner", "baseline", "heldout")
        and s.user_attrs.get(_attrs.CONFIG) is not None
    ]


def test_an_unreachable_endpoint_stops_the_run_before_anything_is_stored(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    db = tmp_path / "down.db"
    with pytest.raises(ChatConnectionError, match=f"Cannot reach {url}"):
        run_bilevel_study(
            "branin", storage=f"sqlite:///{db}", settings=_settings(model=f"openai:m@{url}"),
            **TINY,
        )  # fmt: skip
    assert not db.exists()


def test_a_fallback_asked_for_is_said_once_counted_and_shown_by_status(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    storage = f"sqlite:///{tmp_path / 'fallback.db'}"
    with caplog.at_level(logging.WARNING, logger="bilevel_optuna"):
        result = run_bilevel_study(
            "branin",
            storage=storage,
            run_name="fb",
            settings=_settings(model=f"openai:m@{url}", on_model_error="fallback"),
            **TINY,
        )
    said = [r.getMessage() for r in caplog.records if f"Cannot reach {url}" in r.getMessage()]
    assert len(said) == 1 and "on_model_error='fallback'" in said[0]
    studies = _llm_studies(storage)
    assert studies
    for study in studies:
        assert all(t.user_attrs[_attrs.SOURCE] == "fallback" for t in study.trials)
        assert study.user_attrs["llm:fallback"] == {
            "trials": 3,
            "why": {"endpoint error": 3},
            "last_error": study.trials[-1].user_attrs[_attrs.ERROR][:300],
        }
    assert result.spend.n_fallback == 3 * len(studies) and result.spend.tokens == 0
    capsys.readouterr()
    assert main(["status", storage]) == 0
    out = capsys.readouterr().out
    assert (
        f"model spend: 0 tokens (0 in, 0 out); {3 * len(studies)} of the "
        in out
    )
    assert f"trials from the fallback sampler ({3 * len(studies)} endpoint error)" in out


def test_spend_and_cap_of_a_run_on_the_embedded_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = f"sqlite:///{tmp_path / 'spend.db'}"
    result = run_bilevel_study(
        "branin",
        storage=storage,
        run_name="spend",
        settings=_settings(model="local", max_tokens_total=1, token_prices=(0.15, 0.60)),
        **TINY,
    )
    # The cap lets the run's first proposal through, then every trial comes from TPE.
    (study,) = _llm_studies(storage)
    sources = [t.user_attrs[_attrs.SOURCE] for t in study.trials]
    assert sources[0] in ("llm", "repaired") and sources[1:] == ["fallback", "fallback"]
    assert study.user_attrs["llm:spend_cap"]["trial"] == 1
    assert result.spend.tokens > 0 and result.spend.why == {"spend cap reached": 2}
    settings = result.outer_study.user_attrs[_attrs.SETTINGS]["model"]
    assert settings["max_tokens_total"] == 1 and settings["token_prices"] == [0.15, 0.6]
    cost = result.spend.cost((0.15, 0.60))
    capsys.readouterr()
    assert main(["status", storage]) == 0
    out = capsys.readouterr().out
    assert f"model spend (cap: 1 token): {result.spend.tokens:,} tokens" in out
    assert f"${cost:.4f}" in out
    assert f"{study.study_name}: " in out and "2 spend cap reached" in out
    # The report stored with the run has the same numbers, per study.
    folder = tmp_path / "spend_artifacts"
    reports = [p for p in folder.rglob("*") if p.is_file() and b"## Model spend" in p.read_bytes()]
    assert len(reports) == 1
    text = reports[0].read_text()
    assert f"| {study.study_name} | " in text and "2 (2 spend cap reached)" in text


def test_the_runs_cap_less_what_the_run_spent_is_each_studys_cap() -> None:
    policy = ModelPolicy(max_tokens_total=1000, max_cost=0.5, token_prices=[1.0, 2.0])
    spent = Spend(prompt_tokens=300, completion_tokens=100)  # $0.0005
    kwargs = policy.sampler_kwargs(spent)
    assert kwargs["max_tokens_total"] == 600
    assert kwargs["max_cost"] == pytest.approx(0.4995)
    assert kwargs["token_prices"] == (1.0, 2.0) and kwargs["on_model_error"] == "raise"
    assert ModelPolicy(max_tokens_total=10).sampler_kwargs(Spend(20, 0))["max_tokens_total"] == 0
    with pytest.raises(ConfigurationError, match="needs the model's prices"):
        ModelPolicy(max_cost=1.0)
