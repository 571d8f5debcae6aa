from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import FixedTrial
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives import LMObjective
from bilevel_optuna.objectives import MarkovSource
from bilevel_optuna.objectives import TextCorpus
from bilevel_optuna.objectives import train_lm
from bilevel_optuna.objectives._lm_task import DEFAULT_PARAMS
from bilevel_optuna.objectives._lm_task import MarkovCorpus
from bilevel_optuna.objectives._lm_task import lm_search_space

optuna.logging.set_verbosity(optuna.logging.ERROR)

TINY = {"steps": 30, "eval_every": 10}  # about a second or two per run on one core


def test_a_trial_runs_end_to_end_above_the_floor_and_falling() -> None:
    objective = LMObjective(**TINY)
    study = optuna.create_study(direction=objective.direction)
    study.enqueue_trial(DEFAULT_PARAMS)
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE
    floor = objective.optimum
    assert floor == pytest.approx(1.7708, abs=1e-3)
    assert trial.value is not None and math.isfinite(trial.value)
    # Above the floor; below the untrained model's log2(16) = 4 bits and falling with training.
    assert floor < trial.value < 4.0
    reports = [trial.intermediate_values[s] for s in sorted(trial.intermediate_values)]
    assert sorted(trial.intermediate_values) == [10, 20]
    assert reports[0] > reports[-1] > trial.value
    assert trial.user_attrs["lm:steps"] == 30
    assert trial.user_attrs["lm:training_seconds"] > 0


def test_longer_training_gets_closer_to_the_floor() -> None:
    short = LMObjective(steps=15).run({"lr": 1e-2})
    longer = LMObjective(steps=60).run({"lr": 1e-2})
    assert longer.floor is not None
    assert longer.floor < longer.val_bpb < short.val_bpb


def test_same_seed_and_threads_give_the_same_value() -> None:
    objective = LMObjective(steps=10, eval_every=5)
    a = objective.run(DEFAULT_PARAMS, seed=3)
    b = objective.run(DEFAULT_PARAMS, seed=3)
    c = objective.run(DEFAULT_PARAMS, seed=4)
    assert a.val_bpb == b.val_bpb
    assert a.history == b.history
    assert a.val_bpb != c.val_bpb


def test_trial_number_sets_the_training_seed() -> None:
    objective = LMObjective(steps=8, eval_every=100, seed=10)
    by_trial = objective.evaluate(DEFAULT_PARAMS, FixedTrial(DEFAULT_PARAMS, number=2))
    assert by_trial == objective.run(DEFAULT_PARAMS, seed=12).val_bpb


def test_the_callers_threads_and_random_state_are_left_alone() -> None:
    before = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    LMObjective(steps=3, threads=1).run(DEFAULT_PARAMS)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == before


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_pruners_stop_a_trial_at_its_first_report() -> None:
    objective = LMObjective(steps=40, eval_every=5)
    study = optuna.create_study(pruner=_AlwaysPrune())
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [5]


def test_wall_clock_budget_stops_on_time() -> None:
    result = LMObjective(seconds=0.5, eval_every=1000).run(DEFAULT_PARAMS)
    assert result.steps >= 2
    assert 0.5 <= result.training_seconds < 0.5 + 1.0  # stops after the step that crosses it
    assert result.floor is not None and result.val_bpb > result.floor


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "too small to train one step"),
        ({"steps": -5}, "too small to train one step"),
        ({"seconds": 0.0}, "too small to train one step"),
        ({"steps": 10, "seconds": 1.0}, "not both"),
        ({"device": "tpu"}, "device must be"),
        ({"context": 1}, "context"),
        ({"order": 2, "context": 2}, "context must exceed"),
        ({"vocab_size": 1}, "vocab_size"),
    ],
)
def test_bad_task_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        LMObjective(**kwargs)


def test_a_wall_clock_budget_below_one_step_says_so() -> None:
    with pytest.raises(ConfigurationError, match=r"too small to train one step: the first step"):
        LMObjective(seconds=1e-6).run(DEFAULT_PARAMS)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"width": 64, "heads": 3}, "divisible"),
        ({"learning_rate": 0.1}, "Unknown hyperparameters"),
        ({"warmup_ratio": 0.6, "warmdown_ratio": 0.6}, "at most 1"),
        ({"lr": 0.0}, "lr must be positive"),
    ],
)
def test_bad_hyperparameters(params: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        LMObjective(steps=1).run(params)


def test_search_space_holds_the_defaults_and_valid_combinations() -> None:
    space = lm_search_space()
    assert set(space) == set(DEFAULT_PARAMS)
    for name, value in DEFAULT_PARAMS.items():
        assert space[name]._contains(space[name].to_internal_repr(value))
    for width in range(space["width"].low, space["width"].high + 1, space["width"].step):
        assert all(width % heads == 0 for heads in space["heads"].choices)
    assert space["lr"].log and space["weight_decay"].log


def test_text_corpus_is_trained_in_bits_per_byte(tmp_path: Path) -> None:
    text = "the quick brown fox jumps over the lazy dog. " * 60
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    objective = LMObjective(corpus_path=path, steps=20, eval_every=10)
    assert objective.optimum is None
    assert "byte" in objective.description
    result = objective.run(DEFAULT_PARAMS)
    assert result.floor is None
    assert 0.0 < result.val_bpb < 8.0 + 1.0  # a fresh model is near log2(256) = 8 bits
    assert result.history[0][1] > result.val_bpb


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "is empty"),
        (b"   \n\n  ", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 50, "looks binary"),
        (b"caf\xe9 " * 200, "not UTF-8 text"),
        (b"too short", "needs at least"),
    ],
)
def test_bad_corpus_files_get_clear_errors(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "corpus.bin"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError, match=match):
        LMObjective(corpus_path=path)


def test_missing_corpus_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="Cannot read"):
        TextCorpus(tmp_path / "nope.txt")


def test_markov_corpus_measures_only_full_context_positions() -> None:
    source = MarkovSource(vocab_size=8, order=3, seed=1)
    corpus = MarkovCorpus(source, context=16)
    assert corpus.eval_from == 2  # the target at index 3 is the first with 3 symbols before it
    # The true model scored on exactly those positions averages close to the entropy rate.
    assert source.log_loss(corpus.val) == pytest.approx(source.entropy_rate, abs=0.1)


def test_train_lm_checks_its_arguments_before_importing_torch_work() -> None:
    corpus = MarkovCorpus(MarkovSource(seed=0))
    with pytest.raises(ConfigurationError, match="eval_every"):
        train_lm(DEFAULT_PARAMS, corpus=corpus, steps=5, eval_every=0)
    with pytest.raises(ConfigurationError, match="threads"):
        train_lm(DEFAULT_PARAMS, corpus=corpus, steps=5, threads=0)


def test_diverged_training_fails_the_trial_with_a_reason() -> None:
    objective = LMObjective(steps=5, eval_every=100)
    # An infinite learning rate is outside the search space, so it goes through a FixedTrial.
    trial = FixedTrial({**DEFAULT_PARAMS, "lr": float("inf")})
    value = objective.evaluate({**DEFAULT_PARAMS, "lr": float("inf")}, trial)
    assert math.isnan(value)
    assert "diverged" in trial.user_attrs[_attrs.FAILURE_REASON]


def test_cuda_device_without_a_gpu_says_so() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigurationError, match="no CUDA device"):
        LMObjective(steps=1, device="cuda").run(DEFAULT_PARAMS)


def test_trials_in_threads_of_one_process_stay_reproducible() -> None:
    import concurrent.futures

    objective = LMObjective(steps=6, eval_every=100, threads=None)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = [objective.run(DEFAULT_PARAMS, seed=s).val_bpb for s in (1, 2)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            together = list(
                pool.map(lambda s: objective.run(DEFAULT_PARAMS, seed=s).val_bpb, (1, 2))
            )
    finally:
        torch.set_num_threads(previous)
    assert together == alone
