"""One inner study: an objective optimized by one sampler with one seed, resumable by name."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage
from optuna.exceptions import ExperimentalWarning
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna import _optuna_private
from bilevel_optuna._experimental import set_metric_names
from bilevel_optuna._logging import get_logger
from bilevel_optuna._storage import MAX_RETRY
from bilevel_optuna.objectives._base import Objective

_logger = get_logger(__name__)

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
#: Trial user attribute set on a trial stopped by Ctrl-C.
INTERRUPTED = "bilevel:interrupted"
WORKER = _attrs.WORKER


@dataclasses.dataclass(frozen=True)
class InnerResult:
    """The outcome of one inner study, read back from the storage.

    Attributes:
        study_name: The inner study's name.
        best_value: Best observed value (``nan`` when no trial completed).
        incumbent_true_value: Noise-free value of the best observed trial's configuration.
        regret: ``incumbent_true_value``'s distance to the optimum, or ``nan`` when unknown.
        curve: Regret (or best value when the optimum is unknown) of the incumbent after each
            finished trial, by trial number.
        n_complete: Completed trials.
        tokens: Prompt plus completion tokens the LLM spent (0 for other samplers).
        n_new: Trials this call ran (0 when the study was finished already).
        sources: Trials by who proposed them (``llm:source``: ``"llm"``, ``"fallback"``, ...);
            empty for samplers that write none.
        seconds: Wall time of the trials, proposal and objective together.
    """

    study_name: str
    best_value: float
    incumbent_true_value: float
    regret: float
    curve: list[float]
    n_complete: int
    tokens: int
    n_new: int = 0
    sources: dict[str, int] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0


def _has_true_value(objective: Objective) -> bool:
    return type(objective).true_value is not Objective.true_value


def _objective_with_true_value(
    objective: Objective, worker: str | None = None
) -> Callable[[optuna.Trial], float]:
    """The objective, recording the noise-free value where it differs and the worker that ran
    it, and marking a trial stopped by Ctrl-C so that a resumed study does not count it as
    done."""
    noisy = _has_true_value(objective)

    def wrapped(trial: optuna.Trial) -> float:
        if worker is not None:
            trial.set_user_attr(WORKER, worker)
        try:
            value = objective(trial)
        except KeyboardInterrupt:
            trial.set_user_attr(INTERRUPTED, True)
            raise
        if noisy:
            trial.set_user_attr(_attrs.TRUE_VALUE, float(objective.true_value(dict(trial.params))))
        return value

    return wrapped


def _retry_history(trial: optuna.trial.FrozenTrial) -> list[int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback.retry_history(trial)


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Finished trials by number, less those stopped by Ctrl-C (they are run again) and those
    whose worker went silent and which were queued again (their retry counts instead)."""
    every = study.get_trials(deepcopy=False)
    retried = {n for t in every for n in _retry_history(t)}
    return sorted(
        (
            t
            for t in every
            if t.state in _FINISHED
            and not t.user_attrs.get(INTERRUPTED)
            and t.number not in retried
        ),
        key=lambda t: t.number,
    )


def take_over(study: optuna.Study) -> int:
    """Fail the trials a silent worker left RUNNING and queue each again with its parameters.

    Called when a worker starts on an inner study: it holds the study's claim, so no other
    process runs a trial of it, and any RUNNING trial is a dead worker's. Returns how many.
    """
    storage = _optuna_private.storage_of(study)
    n = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial_id = _optuna_private.trial_id_of(trial)
        try:
            storage.set_trial_user_attr(
                trial_id, _attrs.FAILURE_REASON, "its worker went silent; queued again"
            )
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except UpdateFinishedTrialError:  # it finished meanwhile: nothing to take over
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        retry(study, storage.get_trial(trial_id))
        n += 1
    if n:
        _logger.info(
            "Took over %s: %d trial(s) of a silent worker queued again.", study.study_name, n
        )
    return n


def run_inner_study(
    *,
    storage: BaseStorage,
    study_name: str,
    objective: Objective,
    sampler: BaseSampler,
    n_trials: int,
    user_attrs: dict[str, Any],
    catch: tuple[type[Exception], ...] = (),
    progress_bar: bool = False,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    worker: str | None = None,
) -> InnerResult:
    """Create or resume ``study_name`` and run it until ``n_trials`` trials have finished.

    A study that already holds ``n_trials`` finished trials is not touched: reruns after a crash
    or Ctrl-C continue where they stopped and never recompute finished work. ``progress_bar``
    shows a tqdm bar of this study's trials on stderr; ``callbacks`` are passed to
    ``study.optimize`` (Optuna's, optuna-integration's MLflow or W&B callbacks, or your own).
    """
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        sampler=sampler,
        direction=objective.direction,
        load_if_exists=True,
    )
    for key, value in user_attrs.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    # The dashboard names the value: the objective's metric, else the objective itself.
    metric = objective.metric_name if objective.metric_name != "value" else objective.name
    set_metric_names(study, [metric])
    if worker is not None:
        take_over(study)
    done = len(_finished(study))
    if done < n_trials:
        if done:
            _logger.info("Resuming %s at %d of %d trials.", study_name, done, n_trials)
        bar = None
        all_callbacks = list(callbacks)
        if progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_trials, initial=done, desc=study_name, leave=False, unit="trial")
            all_callbacks.append(lambda study, trial: bar.update(1))
        try:
            study.optimize(
                _objective_with_true_value(objective, worker),
                n_trials=n_trials - done,
                catch=catch,
                callbacks=all_callbacks,
                gc_after_trial=False,
            )
        finally:
            if bar is not None:
                bar.close()
    result = read_inner_result(study, objective, n_trials=n_trials)
    return dataclasses.replace(result, n_new=max(n_trials - done, 0))


def read_inner_result(
    study: optuna.Study, objective: Objective, *, n_trials: int | None = None
) -> InnerResult:
    """Summarize an inner study from its stored trials (the first ``n_trials`` finished ones:
    two workers racing on one study may have run a few more)."""
    minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
    best: float | None = None
    incumbent_true = math.nan
    curve: list[float] = []
    tokens = 0
    n_complete = 0
    sources: dict[str, int] = {}
    seconds = 0.0
    trials = _finished(study)
    trials = trials[:n_trials] if n_trials is not None else trials
    for t in trials:
        tokens += int(t.user_attrs.get(_attrs.PROMPT_TOKENS, 0)) + int(
            t.user_attrs.get(_attrs.COMPLETION_TOKENS, 0)
        )
        source = t.user_attrs.get(_attrs.SOURCE)
        if isinstance(source, str):
            sources[source] = sources.get(source, 0) + 1
        if t.duration is not None:
            seconds += t.duration.total_seconds()
        if t.state == TrialState.COMPLETE and t.value is not None and not math.isnan(t.value):
            n_complete += 1
            if best is None or (t.value < best if minimize else t.value > best):
                best = t.value
                incumbent_true = float(t.user_attrs.get(_attrs.TRUE_VALUE, t.value))
        if best is None:
            curve.append(math.nan)
        elif objective.optimum is not None:
            curve.append(objective.regret(incumbent_true))
        else:
            curve.append(incumbent_true)
    regret = (
        objective.regret(incumbent_true)
        if objective.optimum is not None and best is not None
        else math.nan
    )
    return InnerResult(
        study_name=study.study_name,
        best_value=math.nan if best is None else float(best),
        incumbent_true_value=incumbent_true,
        regret=regret,
        curve=curve,
        n_complete=n_complete,
        tokens=tokens,
        sources=sources,
        seconds=seconds,
    )
