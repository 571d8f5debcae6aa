"""compare() on studies stored in SQLite: real optimizations, and hand-made edge cases."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
import pytest
import scipy.stats
from stats_tests._storage import FAIL
from stats_tests._storage import PRUNED
from stats_tests.conftest import DEMO_SEEDS
from stats_tests.conftest import Db

from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.stats import CompareSettings
from bilevel_optuna.stats import DegenerateDataWarning
from bilevel_optuna.stats import NoPowerWarning
from bilevel_optuna.stats import StudySelection
from bilevel_optuna.stats import compare
from bilevel_optuna.stats import noise_floor

# Arms of one study each cannot reach p < 0.05; that warning is tested on its own below.
pytestmark = pytest.mark.filterwarnings("ignore::bilevel_optuna.stats.NoPowerWarning")


def _stored_best(url: str, name: str) -> float:
    """The best value, read independently of compare() through optuna's public API."""
    return optuna.load_study(study_name=name, storage=url).best_value


# --- a report from real studies ---------------------------------------------------------------


def test_compare_real_studies_matches_independent_computation(demo_url: str) -> None:
    result = compare(demo_url, run="demo")
    assert list(result.arms) == ["far", "mid", "near"]
    assert result.metric == "regret" and result.direction == "minimize"
    near = [_stored_best(demo_url, f"demo-near-{s}") for s in DEMO_SEEDS]
    far = [_stored_best(demo_url, f"demo-far-{s}") for s in DEMO_SEEDS]
    np.testing.assert_allclose(result.arms["near"].values, near)
    assert result.arms["near"].median == pytest.approx(np.median(near))
    c = result.comparison("far", "near")
    assert c.paired and c.test == "wilcoxon" and c.n_a == 8
    assert c.pvalue == pytest.approx(scipy.stats.wilcoxon(far, near).pvalue)
    # Holm over the 3 comparisons, recomputed here from the raw p-values.
    raw = sorted(x.pvalue for x in result.comparisons)
    expected_first = min(1.0, 3 * raw[0])
    assert min(x.pvalue_holm for x in result.comparisons) == pytest.approx(expected_first)
    # Friedman on the (seed x arm) table, from scipy directly.
    table = [[result.arms[a].values[s] for a in ("far", "mid", "near")] for s in DEMO_SEEDS]
    assert result.test == "friedman"
    assert result.pvalue == pytest.approx(scipy.stats.friedmanchisquare(*np.array(table).T).pvalue)
    assert result.posthoc is not None and result.posthoc.arms == ["far", "mid", "near"]
    assert result.curves["near"].n.tolist() == [8] * 8


def test_report_carries_n_test_p_and_a12_for_every_claim(demo_url: str) -> None:
    result = compare(demo_url, run="demo")
    claims = result.claims
    assert claims, "searching a box 10x smaller around the optimum must win at 8 seeds"
    assert any(claim.startswith("near beats far") for claim in claims)
    report = result.to_markdown()
    for claim in claims:
        assert f"- {claim}" in report
        for part in ("n = ", "Wilcoxon signed-rank", "Holm-adjusted p = ", "A12 = "):
            assert part in claim
    for section in ("## Arms", "## Tests", "## Claims", "## Notes", "## Method", "## Studies"):
        assert section in report
    assert "Friedman" in report and "Nemenyi" in report
    text = result.to_text()
    assert "far vs near" in text
    # Every row of a plain-text table has the same width as its header rule.
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("----"))
    assert len(lines[rule - 1]) <= len(lines[rule])


@pytest.mark.parametrize(
    "arms",
    [
        {"near": "demo-near-*", "far": "demo-far-*"},
        {
            "near": [f"demo-near-{s}" for s in DEMO_SEEDS],
            "far": [f"demo-far-{s}" for s in DEMO_SEEDS],
        },
    ],
)
def test_selection_by_pattern_or_list_equals_selection_by_run(
    demo_url: str, arms: dict[str, object]
) -> None:
    by_run = compare(demo_url, run="demo", arms=["near", "f*"])
    by_name = compare(demo_url, arms=arms)  # type: ignore[arg-type]
    assert sorted(by_run.arms) == sorted(by_name.arms) == ["far", "near"]
    c1, c2 = by_run.comparison("near", "far"), by_name.comparison("near", "far")
    assert c1.pvalue == pytest.approx(c2.pvalue)


def test_control_compares_every_arm_with_it_only(demo_url: str) -> None:
    result = compare(demo_url, run="demo", control="far")
    assert [(c.arm_a, c.arm_b) for c in result.comparisons] == [("far", "mid"), ("far", "near")]


def test_values_are_read_from_storage_on_every_call(db: Db) -> None:
    db.add("a-0", [3.0], arm="a", seed=0)
    db.add("b-0", [2.0], arm="b", seed=0)
    before = compare(db.url, run="run", metric="best")
    study = optuna.load_study(study_name="a-0", storage=db.url)
    study.add_trial(optuna.trial.create_trial(value=1.0))
    after = compare(db.url, run="run", metric="best")
    assert before.arms["a"].median == 3.0 and after.arms["a"].median == 1.0


# --- metrics ----------------------------------------------------------------------------------


def test_metrics_by_hand(db: Db) -> None:
    # a: best-so-far 4, 2, 2, 1 -> best 1, regret 1 - 0.5 = 0.5, AUC of regret
    # mean(3.5, 1.5, 1.5, 0.5) = 1.75. b: best-so-far 3, 3, 3, 3 -> AUC mean 2.5.
    db.add("a-0", [4.0, 2.0, 3.0, 1.0], arm="a", seed=0, optimum=0.5)
    db.add("b-0", [3.0, 5.0, 4.0, 6.0], arm="b", seed=0, optimum=0.5)
    auto = compare(db.url, run="run")
    assert auto.metric == "regret" and auto.arms["a"].median == 0.5
    assert compare(db.url, run="run", metric="best").arms["a"].median == 1.0
    auc = compare(db.url, run="run", metric="auc")
    assert auc.curve_quantity == "regret"
    assert auc.arms["a"].median == pytest.approx(1.75) and auc.arms["b"].median == 2.5


def test_maximize_regret_is_optimum_minus_best(db: Db) -> None:
    db.add("a-0", [0.2, 0.7, 0.5], arm="a", optimum=1.0, direction="maximize")
    db.add("b-0", [0.1], arm="b", optimum=1.0, direction="maximize")
    result = compare(db.url, run="run")
    assert result.direction == "minimize"
    assert result.arms["a"].median == pytest.approx(0.3)
    assert compare(db.url, run="run", metric="best").direction == "maximize"


def test_regret_uses_incumbent_true_value(db: Db) -> None:
    # Observed values are noisy: the incumbent (observed 1.0) truly scores 2.5.
    db.add("a-0", [3.0, 1.0, 2.0], arm="a", optimum=0.0, true_values=[3.2, 2.5, 0.4])
    db.add("b-0", [2.0], arm="b", optimum=0.0)
    result = compare(db.url, run="run")
    assert result.arms["a"].median == 2.5
    assert result.arms["a"].n_true_values == 1
    assert any("bilevel:true_value" in note for note in result.notes)
    assert compare(db.url, run="run", metric="best").arms["a"].median == 1.0


# --- edge cases -------------------------------------------------------------------------------


def test_unequal_lengths_noted_and_cut_by_budget(db: Db) -> None:
    for seed in range(6):
        db.add(f"long-{seed}", [5.0, 4.0, 3.0, 2.0, 1.0, 0.0], arm="long", seed=seed)
        db.add(f"short-{seed}", [4.5, 3.5, 2.5], arm="short", seed=seed)
    full = compare(db.url, run="run", metric="best")
    assert (full.arms["long"].max_trials, full.arms["short"].max_trials) == (6, 3)
    assert any("unequal lengths" in n and "n_trials=3" in n for n in full.notes)
    assert full.comparison("long", "short").better == "long"
    cut = compare(db.url, run="run", metric="best", n_trials=3)
    assert cut.arms["long"].median == 3.0 and cut.arms["long"].max_trials == 3
    assert cut.comparison("long", "short").better == "short"
    assert not any("unequal" in n for n in cut.notes)


def test_failed_pruned_and_missing_studies_are_counted(db: Db) -> None:
    for seed in range(7):
        db.add(f"a-{seed}", [FAIL, 2.0 + seed, PRUNED], arm="a", seed=seed)
    for seed in range(6):
        db.add(f"b-{seed}", [5.0 + seed, FAIL], arm="b", seed=seed)
    db.add("b-6", [FAIL, FAIL, PRUNED], arm="b", seed=6)  # no complete trial
    result = compare(db.url, run="run", metric="best")
    a, b = result.arms["a"], result.arms["b"]
    assert (a.n, a.n_missing, a.n_failed, a.n_pruned, a.n_complete) == (7, 0, 7, 7, 7)
    assert (b.n, b.n_missing, b.n_failed, b.n_pruned) == (6, 1, 8, 1)
    c = result.comparison("a", "b")
    assert c.paired and c.n_a == 6 and c.n_dropped == 2  # seed 6 lost its partner
    assert c.pvalue == pytest.approx(0.03125)  # hand: 6 pairs, all a better, 2/2^6
    assert any("1 study has no complete trial" in n for n in result.notes)
    report = result.to_markdown()
    assert "| b | 6 | 1 |" in report and "8/1" in report


def test_ties_use_scipy_tie_handling(db: Db) -> None:
    a = [1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 1.0]
    b = [2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 2.0]
    for i, (x, y) in enumerate(zip(a, b)):
        db.add(f"a-{i}", [x], arm="a")  # no seeds: unpaired
        db.add(f"b-{i}", [y], arm="b")
    result = compare(db.url, run="run")
    c = result.comparison("a", "b")
    assert c.test == "mannwhitneyu" and not c.paired
    assert c.pvalue == pytest.approx(scipy.stats.mannwhitneyu(a, b).pvalue)
    assert c.a12.statistic == pytest.approx(
        (sum(x < y for x in a for y in b) + 0.5 * sum(x == y for x in a for y in b)) / 64
    )


def test_all_equal_values_are_degenerate_not_an_error(db: Db) -> None:
    for seed in range(8):
        db.add(f"a-{seed}", [1.0, 1.0], arm="a", seed=seed)
        db.add(f"b-{seed}", [1.0], arm="b", seed=seed)
    with pytest.warns(DegenerateDataWarning, match="all paired differences are zero"):
        result = compare(db.url, run="run", metric="best")
    c = result.comparison("a", "b")
    assert c.degenerate and math.isnan(c.pvalue) and not c.significant
    assert c.verdict.startswith("no test") and c.a12.statistic == 0.5
    assert result.arms["a"].iqr == 0.0 and result.claims == []


def test_too_few_repeats_say_no_power(db: Db) -> None:
    for seed in range(3):
        db.add(f"a-{seed}", [1.0 + seed], arm="a", seed=seed)
        db.add(f"b-{seed}", [9.0 + seed], arm="b", seed=seed)
    with pytest.warns(NoPowerWarning):
        result = compare(db.url, run="run", metric="best")
    c = result.comparison("a", "b")
    assert c.no_power and math.isnan(c.pvalue) and c.verdict == "no power"
    assert c.a12.statistic == 1.0  # the effect is still reported
    assert result.claims == []
    assert any("Comparisons without power: 1 of 1" in n for n in result.notes)
    assert "no power" in result.to_text()


def test_holm_family_without_power_is_noted(db: Db) -> None:
    # 6 seeds: each Wilcoxon can reach 0.03125 < 0.05, but not alpha / 3 after Holm.
    for arm, offset in (("a", 0.0), ("b", 10.0), ("c", 20.0)):
        for seed in range(6):
            db.add(f"{arm}-{seed}", [offset + seed], arm=arm, seed=seed)
    result = compare(db.url, run="run", metric="best")
    assert any("no comparison can be significant" in n for n in result.notes)
    assert all(not c.significant for c in result.comparisons)


def test_noise_floor_from_a_study_labels_small_differences(db: Db) -> None:
    for seed in range(8):
        db.add(f"a-{seed}", [1.00 + 0.001 * seed], arm="a", seed=seed)
        db.add(f"b-{seed}", [1.05 + 0.001 * seed], arm="b", seed=seed)
    db.add("repeat", [1.0, 1.1, 0.9, 1.05, 0.95], run=None, kind="heldout")
    plain = compare(db.url, run="run", metric="best")
    assert plain.comparison("a", "b").better == "a"
    floored = compare(
        db.url, run="run", metric="best", settings=CompareSettings(noise_floor="repeat")
    )
    c = floored.comparison("a", "b")
    assert floored.noise_floor is not None and floored.noise_floor.n == 5
    assert floored.noise_floor.sd == pytest.approx(noise_floor([1.0, 1.1, 0.9, 1.05, 0.95]).sd)
    assert c.significant and c.inside_noise_floor and c.better is None
    assert "inside noise floor" in c.verdict and floored.claims == []
    floor = CompareSettings(noise_floor=0.001)
    assert compare(db.url, run="run", metric="best", settings=floor).comparison("a", "b").better


def test_three_unpaired_arms_use_kruskal(db: Db) -> None:
    for arm, offset in (("a", 0.0), ("b", 1.0), ("c", 2.0)):
        for i in range(5):
            db.add(f"{arm}-{i}", [offset + 0.1 * i], arm=arm)
    result = compare(db.url, run="run", metric="best")
    assert result.test == "kruskal" and result.posthoc is None
    assert all(c.test == "mannwhitneyu" for c in result.comparisons)


def test_outer_studies_are_not_arms(db: Db) -> None:
    db.add("outer", [0.1], arm=None, kind="outer")
    db.add("a-0", [1.0], arm="a")
    assert list(compare(db.url, run="run", metric="best").arms) == ["a"]


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"run": "nope"}, "Runs found"),
        ({"run": "run", "arms": ["zzz"]}, "Arms found"),
        ({"arms": {"x": "no-such-*"}}, "no study name matches"),
        ({"arms": {"x": ["a-0", "ghost"]}}, "ghost"),
        ({}, "Choose studies"),
        ({"run": "run", "metric": "regret"}, "bilevel:optimum"),
        ({"run": "run", "control": "zzz"}, "control"),
    ],
)
def test_configuration_errors_say_what_to_do(
    db: Db, kwargs: dict[str, object], match: str
) -> None:
    db.add("a-0", [1.0], arm="a")
    db.add("b-0", [2.0], arm="b")
    with pytest.raises(ConfigurationError, match=match):
        compare(db.url, **kwargs)  # type: ignore[arg-type]


def test_mixed_directions_are_refused(db: Db) -> None:
    db.add("a-0", [1.0], arm="a")
    db.add("b-0", [2.0], arm="b", direction="maximize")
    with pytest.raises(ConfigurationError, match="directions"):
        compare(db.url, run="run")


def test_mixed_directions_compare_by_regret(db: Db) -> None:
    # A minimized and a maximized objective, both with known optima: regret is comparable.
    for seed in range(3):
        db.add(f"a-min-{seed}", [1.5, 1.2], arm="a", seed=seed, objective="m", optimum=1.0)
        db.add(f"b-min-{seed}", [2.0], arm="b", seed=seed, objective="m", optimum=1.0)
        db.add(
            f"a-max-{seed}", [0.8], arm="a", seed=seed, objective="x", optimum=1.0,
            direction="maximize",
        )
        db.add(
            f"b-max-{seed}", [0.5], arm="b", seed=seed, objective="x", optimum=1.0,
            direction="maximize",
        )
    result = compare(db.url, run="run")
    assert result.metric == "regret" and result.direction == "minimize"
    assert sorted(result.arms["a"].values) == pytest.approx([0.2] * 6)
    assert sorted(result.arms["b"].values) == pytest.approx([0.5] * 3 + [1.0] * 3)
    with pytest.raises(ConfigurationError, match="directions"):
        compare(db.url, run="run", metric="best")


def test_paired_true_needs_seeds(db: Db) -> None:
    db.add("a-0", [1.0], arm="a")
    db.add("b-0", [2.0], arm="b")
    with pytest.raises(ConfigurationError, match="cannot be paired"):
        compare(db.url, run="run", settings=CompareSettings(paired=True))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metric": "median"}, "metric"),
        (lambda: {"settings": CompareSettings(alpha=2.0)}, "alpha"),
        (lambda: {"settings": CompareSettings(paired="yes")}, "paired"),
        ({"n_trials": 0}, "n_trials"),
        (lambda: {"selection": StudySelection(n_trials=0)}, "n_trials"),
        (lambda: {"settings": CompareSettings(noise_factor=-1.0)}, "noise_factor"),
    ],
)
def test_option_errors(db: Db, kwargs: Any, match: str) -> None:
    db.add("a-0", [1.0], arm="a")
    with pytest.raises(ValueError, match=match):
        # A lambda builds a settings object, which checks its own values.
        compare(db.url, run="run", **(kwargs() if callable(kwargs) else kwargs))


def test_storage_password_never_enters_the_report(db: Db) -> None:
    from bilevel_optuna._storage import storage_label as _storage_label

    label = _storage_label("postgresql+psycopg2://user:s3cret@db.example:5432/runs")
    assert "s3cret" not in label and "user" in label


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("sqlite:///no/such/dir/runs.db", "No SQLite file"),  # never creates an empty database
        ("not a url", "not a storage URL"),
    ],
)
def test_bad_storage_urls(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        compare(url, run="run")


def test_storage_object_and_single_arm(db: Db) -> None:
    for seed in range(4):
        db.add(f"a-{seed}", [1.0 + seed], arm="a", seed=seed)
    result = compare(db.storage, run="run", metric="best")
    assert result.test == "none" and math.isnan(result.pvalue) and result.comparisons == []
    assert result.arms["a"].median == 2.5
    assert "one arm" in result.to_text()


# --- Nemenyi's critical difference only after Friedman rejects (Demsar 2006) ------------------


def _three_arms(db: Db, offsets: dict[str, list[float]]) -> None:
    for arm, values in offsets.items():
        for seed, value in enumerate(values):
            db.add(f"{arm}-{seed}", [value], arm=arm, seed=seed)


def test_an_unlicensed_critical_difference_is_labelled(db: Db) -> None:
    # Every arm wins on a third of the seeds: Friedman cannot reject.
    _three_arms(
        db,
        {
            "a": [[1.0, 2.0, 3.0][s % 3] for s in range(9)],
            "b": [[2.0, 3.0, 1.0][s % 3] for s in range(9)],
            "c": [[3.0, 1.0, 2.0][s % 3] for s in range(9)],
        },
    )
    result = compare(db.url, run="run")
    assert result.test == "friedman" and not result.pvalue < result.alpha
    assert result.posthoc is not None and result.posthoc.licensed is False
    assert "not licensed" in result.to_text()
    assert "not licensed" in result.to_markdown()
    assert any("Demsar 2006" in note for note in result.notes)


def test_a_licensed_critical_difference_carries_no_caveat(db: Db) -> None:
    _three_arms(
        db,
        {
            "a": [1.0 + 0.01 * s for s in range(9)],
            "b": [2.0 + 0.01 * s for s in range(9)],
            "c": [3.0 + 0.01 * s for s in range(9)],
        },
    )
    result = compare(db.url, run="run")
    assert result.test == "friedman" and result.pvalue < result.alpha
    assert result.posthoc is not None and result.posthoc.licensed is True
    assert "not licensed" not in result.to_text()
    assert not any("Demsar 2006" in note for note in result.notes)
