"""Racing in the outer study: the rule, its power check, its state read from the storage, and
its wiring into run_bilevel_study (with a scripted chat double: this is about the outer loop's
protocol, not the model's behaviour)."""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna.stats import NoPowerWarning
from bilevel_optuna.studies import BilevelSettings
from bilevel_optuna.studies import OuterSettings
from bilevel_optuna.studies import OuterSpace
from bilevel_optuna.studies import run_bilevel_study
from bilevel_optuna.studies._racing import OuterRacing
from bilevel_optuna.studies._racing import RacingPruner
from bilevel_optuna.studies._racing import check_power
from bilevel_optuna.studies._racing import decide
from bilevel_optuna.studies._racing import instance_step
from bilevel_optuna.studies._racing import min_instances
from bilevel_optuna.studies._racing import status_lines

# All p-values below are exact one-sided signed-rank probabilities counted by hand over the
# 2**n sign patterns: n = 4, all positive: 1/16; ranks 2, 3, 4 positive and 1 negative
# (W+ = 9): 2/16; n = 3 all positive: 1/8.


@pytest.mark.parametrize(
    "p_threshold, expected", [(0.1, 4), (0.0625, 5), (0.05, 5), (0.2, 3), (0.5, 2)]
)
def test_min_instances(p_threshold: float, expected: int) -> None:
    assert min_instances(p_threshold) == expected


@pytest.mark.parametrize(
    "n_repeats, n_objectives, can_stop, first_stop, min_repeats",
    [
        (2, 1, False, 4, 5),  # the demo
        (3, 1, False, 4, 5),  # the default n_repeats
        (4, 1, False, 4, 5),  # a stop after the 4th and last repeat saves nothing
        (5, 1, True, 4, 5),
        (2, 2, False, 2, 3),
        (3, 2, True, 2, 3),
        (8, 2, True, 2, 3),
        (2, 4, True, 1, 2),
    ],
)
def test_check_power(
    n_repeats: int, n_objectives: int, can_stop: bool, first_stop: int, min_repeats: int
) -> None:
    power = check_power(n_repeats=n_repeats, n_objectives=n_objectives, p_threshold=0.1)
    assert (power.can_stop, power.first_stop, power.min_repeats) == (
        can_stop,
        first_stop,
        min_repeats,
    )
    assert bool(power.message) is not can_stop
    if not can_stop:
        assert f"n_repeats >= {min_repeats}" in power.message


def test_instance_steps_are_repeat_major() -> None:
    steps = [instance_step(r, j, 2) for r in range(3) for j in range(2)]
    assert steps == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    "challenger, incumbent, stop, pvalue",
    [
        ([2.0, 3.0, 4.0, 5.0], [1.0, 1.0, 1.0, 1.0], True, 1 / 16),
        ([1.5, 4.0, 5.0, 0.8], [1.0, 1.0, 1.0, 1.0], False, 2 / 16),  # one instance better
        ([2.0, 3.0, 4.0], [1.0, 1.0, 1.0], False, 1 / 8),  # too few instances for p < 0.1
        ([2.0, 3.0, 4.0, 5.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0], True, 1 / 16),  # a zero: dropped
        ([math.inf, 3.0, 4.0, 5.0], [1.0, 1.0, 1.0, 1.0], True, 1 / 16),  # inf ranks worst
        ([0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], False, 1.0),  # better everywhere
    ],
)
def test_decide(
    challenger: list[float], incumbent: list[float], stop: bool, pvalue: float
) -> None:
    decision = decide(challenger, incumbent, p_threshold=0.1, incumbent_number=3)
    assert decision.stop is stop
    assert decision.pvalue == pytest.approx(pvalue)
    assert decision.incumbent == 3
    assert decision.reason.startswith("worse than trial 3") is stop


def test_decide_maximize_and_degenerate() -> None:
    # Maximizing, lower values lose.
    assert decide([0.0] * 4, [1.0] * 4, minimize=False).stop
    assert not decide([2.0] * 4, [1.0] * 4, minimize=False).stop
    # No differences at all: no test, no stop.
    same = decide([1.0] * 5, [1.0] * 5)
    assert not same.stop and math.isnan(same.pvalue)
    with pytest.raises(ValueError, match="paired"):
        decide([1.0, 2.0], [1.0])


def _add_outer_trial(
    study: optuna.Study, values: list[float], *, state: TrialState, n_repeats: int
) -> None:
    n_objectives = 2
    repeats = len(values) // n_objectives
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            value=sum(values) / len(values) if state == TrialState.COMPLETE else None,
            intermediate_values=dict(enumerate(values)),
            user_attrs={
                _attrs.JUDGED_ON: {
                    "repeats": repeats,
                    "of": n_repeats,
                    "instances": repeats * n_objectives,
                    "stopped": state == TrialState.PRUNED,
                }
            },
        )
    )


def test_pruner_reads_its_incumbent_from_the_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/racing.db"
    study = optuna.create_study(storage=url, study_name="outer")
    _add_outer_trial(study, [5.0] * 6, state=TrialState.COMPLETE, n_repeats=3)
    _add_outer_trial(study, [1.0, 1.2, 0.9, 1.1, 1.0, 0.8], state=TrialState.COMPLETE, n_repeats=3)
    # A stopped trial, however good its partial values, is never the incumbent.
    _add_outer_trial(study, [0.1, 0.1], state=TrialState.PRUNED, n_repeats=3)
    challenger = optuna.trial.create_trial(
        state=TrialState.RUNNING, intermediate_values={0: 2.0, 1: 2.5, 2: 3.0, 3: 1.5}
    )
    # Another worker: a new process would load the study and build its own pruner.
    pruner = RacingPruner(n_instances=6, p_threshold=0.1)
    other_worker = optuna.load_study(study_name="outer", storage=url)
    decision = pruner.decide(other_worker, challenger)
    assert decision.incumbent == 1
    assert decision.n_instances == 4
    assert decision.stop and decision.pvalue == pytest.approx(1 / 16)
    # Against the 5.0 trial alone it would not stop: the incumbent is what decides.
    lonely = optuna.create_study()
    _add_outer_trial(lonely, [5.0] * 6, state=TrialState.COMPLETE, n_repeats=3)
    assert not RacingPruner(n_instances=6).decide(lonely, challenger).stop


def test_pruner_has_no_incumbent_without_a_complete_trial() -> None:
    study = optuna.create_study()
    _add_outer_trial(study, [0.1, 0.1], state=TrialState.PRUNED, n_repeats=3)
    running = optuna.trial.create_trial(
        state=TrialState.RUNNING, intermediate_values={0: 9.0, 1: 9.0, 2: 9.0, 3: 9.0}
    )
    decision = RacingPruner(n_instances=6).decide(study, running)
    assert not decision.stop and decision.incumbent is None


def test_for_run_warns_where_racing_has_no_power() -> None:
    with pytest.warns(NoPowerWarning, match=r"n_repeats >= 5") as record:
        racing = OuterRacing.for_run(
            prune=True, cost_objective=False, n_repeats=3, n_objectives=1
        )
    assert record[0].filename == __file__  # points at the user's line
    assert not racing.to_dict()["can_stop"]
    assert "no power" in racing.note()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        off = OuterRacing.for_run(prune=False, cost_objective=False, n_repeats=3, n_objectives=1)
        assert isinstance(off.pruner(), optuna.pruners.NopPruner)
        assert "off" in off.note()
        able = OuterRacing.for_run(prune=True, cost_objective=False, n_repeats=8, n_objectives=2)
        assert isinstance(able.pruner(), RacingPruner)
        assert "after repeat 2 of 8" in able.note()
        # A cost objective makes the outer study multi-objective: no racing, no warning.
        cost = OuterRacing.for_run(prune=True, cost_objective=True, n_repeats=2, n_objectives=1)
        assert not cost.enabled


# ------------------------------------------------------------------ run_bilevel_study wiring
def _double() -> object:
    from chat_doubles import ScriptedChatModel
    from chat_doubles import answer_json

    def answer(request, index):  # type: ignore[no-untyped-def]
        # A proposer that is good at low temperature and hopeless at high: the configuration
        # at temperature 1.1 is worse than Level 0's (0.7) on every instance.
        schema = json.dumps(request.json_schema or {})
        good = request.temperature <= 0.8
        if '"x4"' in schema:  # rosenbrock
            return answer_json({f"x{i}": 1.0 if good else 10.0 for i in range(5)})
        return answer_json({"x0": 3.14159, "x1": 2.275} if good else {"x0": -5.0, "x1": 0.0})

    return ScriptedChatModel(answer)


def test_a_losing_configuration_stops_early_and_is_kept_marked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/race.db"
    outer = optuna.create_study(storage=url, study_name="race")
    for temperature in (0.7, 1.1):  # Level 0, then a configuration that loses everywhere
        outer.enqueue_trial({"temperature": temperature})
    space = OuterSpace(
        temperature=FloatDistribution(0.1, 1.2),
        history_size=15,
        history_order="best",
        template="default",
        n_candidates=1,
        mechanisms=[],
    )
    result = run_bilevel_study(
        ["branin", "rosenbrock"],
        storage=url,
        run_name="race",
        n_outer_trials=2,
        n_inner_trials=2,
        n_repeats=3,
        model=_double(),
        settings=BilevelSettings(outer=OuterSettings(space=space, baselines=("random",))),
    )
    trials = result.outer_study.get_trials()
    states = [t.state for t in trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED]
    stopped = trials[1]
    judged = stopped.user_attrs[_attrs.JUDGED_ON]
    assert (judged["repeats"], judged["of"], judged["instances"]) == (2, 3, 4)
    assert judged["stopped"] and judged["incumbent"] == 0
    assert judged["pvalue"] == pytest.approx(1 / 16)
    assert sorted(stopped.intermediate_values) == [0, 1, 2, 3]  # (repeat, objective) steps
    assert stopped.user_attrs[_attrs.SUMMARY]["pruned_after"] == 2
    assert trials[0].user_attrs[_attrs.JUDGED_ON]["repeats"] == 3
    assert not trials[0].user_attrs[_attrs.JUDGED_ON]["stopped"]
    # The stopped configuration's inner studies are kept, and marked.
    names = stopped.user_attrs[_attrs.INNER_STUDIES]
    assert len(names) == 4
    for name in names:
        inner = optuna.load_study(study_name=name, storage=url)
        assert len(inner.trials) == 2
        assert inner.user_attrs[_attrs.STOPPED] == {"outer_trial": 1, "after_repeats": 2, "of": 3}
    # Only complete configurations are ranked.
    assert result.best_config is not None and result.best_config.temperature == 0.7
    assert result.outer_study.user_attrs[_attrs.RACING]["can_stop"]
    lines = status_lines(result.outer_study, trials)
    assert "judged on: 1 configuration(s) on all 3 repeats, 1 stopped early" in lines[1]
    assert "trial 1 on 2" in lines[1]
    from bilevel_optuna.cli._status import _status

    _status(argparse.Namespace(target=None, storage=url))
    out = capsys.readouterr().out
    assert "Racing: on (one-sided Wilcoxon" in out and "1 stopped early" in out
    import optuna_dashboard

    assert "Racing:" in optuna_dashboard.get_note(result.outer_study)


def test_a_run_without_power_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/weak.db"
    with pytest.warns(NoPowerWarning, match=r"n_repeats >= 5"):
        run_bilevel_study(
            "branin",
            storage=url,
            run_name="weak",
            n_outer_trials=1,
            n_inner_trials=2,
            n_repeats=2,
            model=_double(),
            settings=BilevelSettings(
                outer=OuterSettings(
                    space=OuterSpace(
                        temperature=0.7,
                        history_size=15,
                        history_order="best",
                        template="default",
                        n_candidates=1,
                        mechanisms=[],
                    ),
                    baselines=("random",),
                )
            ),
        )
    outer = optuna.load_study(study_name="weak", storage=url)
    assert not outer.user_attrs[_attrs.RACING]["can_stop"]
    assert "no power" in status_lines(outer, outer.trials)[0]


@pytest.mark.parametrize(
    "diff",
    [
        [0.5, 3.0, 4.0, -0.5],  # tied magnitudes
        [1.0, 1.0, 1.0, -1.0, 2.0, 2.0],
        [0.3, -0.1, 0.8, 0.8, -0.3, 1.2, 0.4, 0.1, -0.4, 0.9, 0.5],
    ],
)
def test_exact_p_value_with_ties_matches_scipy_enumeration(diff: list[float]) -> None:
    import scipy.stats

    # The reference: scipy's signed-rank test by full enumeration of the sign patterns.
    expected = scipy.stats.wilcoxon(
        diff, alternative="greater", method=scipy.stats.PermutationMethod(n_resamples=10**6)
    ).pvalue
    decision = decide(diff, [0.0] * len(diff))
    assert decision.pvalue == pytest.approx(expected, rel=1e-9)


def test_no_power_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    # One repeat of one objective can never give p < 0.1: the run is told once, by a warning.
    with caplog.at_level("WARNING", logger="bilevel_optuna"):
        with pytest.warns(NoPowerWarning) as record:
            racing = OuterRacing.for_run(
                prune=True, cost_objective=False, n_repeats=1, n_objectives=1
            )
    assert not racing.power.can_stop
    assert len(record) == 1
    assert racing.power.message not in caplog.text
