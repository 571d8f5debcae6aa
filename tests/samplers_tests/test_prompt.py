"""The prompt: history orders (the stable window) and formats (the table), the templates."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution

from bilevel_optuna.samplers import TEMPLATES
from bilevel_optuna.samplers import PromptTemplate
from bilevel_optuna.samplers._prompt import PromptInputs
from bilevel_optuna.samplers._prompt import build_messages
from bilevel_optuna.samplers._prompt import order_history

_SPACE = {"x": FloatDistribution(-5.0, 5.0), "n": IntDistribution(1, 9)}


def _trials(values: list[float]) -> list[optuna.trial.FrozenTrial]:
    out = []
    for i, v in enumerate(values):
        t = optuna.trial.create_trial(
            params={"x": 0.1 * i, "n": 1 + i % 9}, distributions=_SPACE, value=v
        )
        t.number = i
        out.append(t)
    return out


def test_stable_window_appends_within_a_block_and_keeps_the_best() -> None:
    values = [10.0 - 0.1 * i if i != 3 else -100.0 for i in range(40)]
    trials = _trials(values)
    windows = [
        [t.number for t in order_history(trials[:n], order="stable", size=10, minimize=True)]
        for n in range(1, 41)
    ]
    appended = 0
    for n, (before, after) in enumerate(zip(windows, windows[1:]), start=2):
        if n > 3:
            assert 3 in after  # the best (trial 3) is always shown once it exists
        assert min(n, 5) <= len(after) <= 10
        if after[: len(before)] == before:
            appended += 1
    # The start moves once every 5 trials: most steps only append.
    assert appended >= 30


def test_stable_window_shows_everything_while_it_fits() -> None:
    trials = _trials([float(i) for i in range(7)])
    window = order_history(trials, order="stable", size=10, minimize=True)
    assert [t.number for t in window] == list(range(7))


def _inputs(history: list[optuna.trial.FrozenTrial]) -> PromptInputs:
    return PromptInputs(
        description="Minimize f.",
        metric_name="f",
        minimize=True,
        search_space=_SPACE,
        history=history,
        n_complete=len(history),
        failed=[],
        pending=[{"x": 1.5, "n": 2}],
        notes=[],
        prior_knowledge="",
        n_candidates=1,
        history_order="stable",
    )


def test_table_format_names_the_parameters_once() -> None:
    history = _trials([3.0, 2.0, 1.0])
    compact = build_messages(TEMPLATES["compact"], _inputs(history))[1]["content"]
    default = build_messages(TEMPLATES["default"], _inputs(history))[1]["content"]
    assert "(x, n -> f):" in compact
    assert "0.1, 2 -> 2" in compact and '"x"' not in compact.split("Pending")[0]
    assert "1.5, 2" in compact  # pending configurations use the same format
    assert len(compact) < len(default)


def test_a_template_checks_its_history_format() -> None:
    with pytest.raises(ValueError, match="history_format"):
        PromptTemplate(name="x", system="s", ask="a", history_format="csv")
