"""Racing in the outer study: a configuration stops once it is significantly worse than the best.

Every outer trial is judged on the same *instances*, one per (repeat, training objective) pair,
in a fixed order: repeat 0's objectives, then repeat 1's, and so on. Each instance's score is
reported as the outer trial's intermediate value at step ``repeat * n_objectives + j``. After
each repeat the challenger's scores are compared with the incumbent's (the best outer trial
judged on every instance, read from the storage, so every worker decides from the same state)
on the instances both have, by a one-sided exact Wilcoxon signed-rank test. The challenger
stops when ``p < p_threshold`` and its mean on those instances is worse: it is marked PRUNED,
so its partial value is never ranked beside complete ones, and its inner studies are kept and
marked.

The signed-rank test on ``n`` instances cannot give a p-value below ``2**-n``: with
``p_threshold = 0.1`` it needs 4 instances, i.e. 4 repeats of one objective or 2 repeats of two.
Counting objectives as instances (rather than averaging them per repeat, as the outer value
does) is what lets racing act after 2 of 8 repeats on two objectives. :func:`check_power`
applies the project's "no power" rule: a run whose repeats cannot reach the threshold is told
so (:class:`~bilevel_optuna.stats.NoPowerWarning`), in its dashboard note and in ``status``.

Why not Optuna's ``WilcoxonPruner`` itself: it compares against ``study.best_trial`` as this
does, but stops pruning altogether once a value is infinite (an inner study with no complete
trial scores ``inf``: exactly a configuration to stop), compares the challenger's partial mean
with the incumbent's full one, and keeps no record of why it pruned. Here non-finite scores
rank worst, the means compared are on the same instances, and the decision (p-value,
incumbent, instances) is stored on the trial for the dashboard.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
import scipy.stats
from optuna.pruners import BasePruner
from optuna.pruners import NopPruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna import _optuna_private
from bilevel_optuna._warnings import warn
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.exceptions import NoPowerWarning

#: The racing test's significance threshold (one-sided), as WilcoxonPruner's was here.
DEFAULT_P_THRESHOLD = 0.1


def instance_step(repeat: int, objective_index: int, n_objectives: int) -> int:
    """The intermediate-value step of one (repeat, objective) instance."""
    return repeat * n_objectives + objective_index


def min_instances(p_threshold: float) -> int:
    """Fewest instances on which the one-sided signed-rank test can give ``p < p_threshold``."""
    n = 1
    while 0.5**n >= p_threshold:
        n += 1
    return n


@dataclasses.dataclass(frozen=True)
class PowerCheck:
    """Whether racing can stop any configuration at these repeats.

    Attributes:
        can_stop: True when some outcome of the repeats can reach ``p < p_threshold`` before
            the last repeat (stopping at the last one would save nothing).
        min_repeats: The fewest repeats that can stop one: ``first_stop + 1``, since a stop
            after the last repeat saves nothing.
        first_stop: The first repeat (1-based) after which a configuration can be stopped:
            ``ceil(min_instances(p_threshold) / n_objectives)``.
        n_repeats: The repeats of the run.
        n_objectives: Instances per repeat.
        p_threshold: The test's threshold.
        message: One line for the warning, the note and ``status``; empty when ``can_stop``.
    """

    can_stop: bool
    min_repeats: int
    first_stop: int
    n_repeats: int
    n_objectives: int
    p_threshold: float
    message: str


def check_power(*, n_repeats: int, n_objectives: int, p_threshold: float) -> PowerCheck:
    """Apply the "no power" rule to racing at ``n_repeats`` repeats of ``n_objectives``."""
    first_stop = math.ceil(min_instances(p_threshold) / n_objectives)
    min_repeats = first_stop + 1  # a stop after the last repeat saves nothing
    can_stop = n_repeats >= min_repeats
    message = ""
    if not can_stop:
        message = (
            f"Racing (OuterSettings.prune) cannot stop any configuration: with {n_repeats} "
            f"repeats of {n_objectives} training objective(s) the one-sided signed-rank test "
            f"needs {min_instances(p_threshold)} instances to reach p < {p_threshold:g}, i.e. "
            f"{first_stop} repeats, and a stop after the last repeat saves nothing. Set "
            f"InnerSettings.n_repeats >= {min_repeats} (spec: [inner] n_repeats) to race, or "
            "OuterSettings(prune=False) (spec: [outer] prune = false) to say that every "
            "configuration runs every repeat."
        )
    return PowerCheck(
        can_stop, min_repeats, first_stop, n_repeats, n_objectives, p_threshold, message
    )


@dataclasses.dataclass(frozen=True)
class RacingDecision:
    """One racing decision: whether the challenger stops, and on what evidence.

    Attributes:
        stop: Whether the challenger stops now.
        pvalue: One-sided exact Wilcoxon signed-rank p-value that the challenger is worse
            (NaN when there was no test: no incumbent, fewer than two instances).
        n_instances: Instances both trials have.
        incumbent: Number of the incumbent outer trial, or ``None``.
        reason: One line for the dashboard.
    """

    stop: bool
    pvalue: float
    n_instances: int
    incumbent: int | None
    reason: str


def _finite_ranked(diff: np.ndarray) -> np.ndarray:
    """Differences with ``+-inf`` replaced by values beyond every finite one (they rank
    largest, with their sign); NaN pairs dropped."""
    diff = diff[~np.isnan(diff)]
    finite = diff[np.isfinite(diff)]
    big = (float(np.max(np.abs(finite))) if finite.size else 0.0) * 2.0 + 1.0
    return np.where(np.isposinf(diff), big, np.where(np.isneginf(diff), -big, diff))


def _signed_rank_greater(diff: np.ndarray) -> float:
    """Exact one-sided p-value ``P(W+ >= w+)`` of the signed-rank test, ties included.

    The null distribution of ``W+`` given the observed (mid)ranks is counted exactly over the
    ``2**n`` sign patterns by dynamic programming on doubled ranks (integers). scipy's
    ``wilcoxon`` gives the same numbers, but with ties it resamples through
    ``permutation_test``: 1.6 s for 12 instances here, and random beyond 13.
    """
    n = int(diff.size)
    if n == 0:
        return 1.0
    doubled = np.rint(2.0 * scipy.stats.rankdata(np.abs(diff))).astype(int)
    counts = np.zeros(int(doubled.sum()) + 1)
    counts[0] = 1.0
    for rank in doubled:
        shifted = np.zeros_like(counts)
        shifted[rank:] = counts[:-rank]
        counts = counts + shifted
    observed = int(doubled[diff > 0].sum())
    return float(counts[observed:].sum() / counts.sum())


def decide(
    challenger: Sequence[float],
    incumbent: Sequence[float],
    *,
    p_threshold: float = DEFAULT_P_THRESHOLD,
    minimize: bool = True,
    incumbent_number: int | None = None,
) -> RacingDecision:
    """Whether a challenger, judged on ``challenger``'s instances, loses to the incumbent.

    ``challenger[i]`` and ``incumbent[i]`` are the two trials' scores on instance ``i``. The
    challenger stops when the one-sided exact Wilcoxon signed-rank test (zero differences
    dropped, tied magnitudes given midranks, the exact conditional null) gives ``p < p_threshold`` and its mean on these
    instances is worse. Non-finite scores (a repeat with no complete inner trial) rank worst.
    """
    if len(challenger) != len(incumbent):
        raise ValueError(
            f"challenger and incumbent must be paired but have {len(challenger)} and "
            f"{len(incumbent)} values."
        )
    sign = 1.0 if minimize else -1.0
    diff = _finite_ranked(sign * (np.asarray(challenger, float) - np.asarray(incumbent, float)))
    n = int(diff.size)
    if n < 2 or not np.any(diff):
        return RacingDecision(False, math.nan, n, incumbent_number, "too few instances")
    pvalue = _signed_rank_greater(diff[diff != 0])
    worse = float(np.mean(diff)) > 0
    stop = bool(pvalue < p_threshold and worse)
    reason = (
        f"worse than trial {incumbent_number} on {n} instances (one-sided Wilcoxon "
        f"p = {pvalue:.3g} < {p_threshold:g})"
        if stop
        else f"not significantly worse than trial {incumbent_number} on {n} instances "
        f"(p = {pvalue:.3g})"
    )
    return RacingDecision(stop, pvalue, n, incumbent_number, reason)


def _judged_on_all(trial: FrozenTrial, n_instances: int) -> bool:
    judged = trial.user_attrs.get(_attrs.JUDGED_ON)
    return (
        isinstance(judged, dict)
        and judged.get("instances") == n_instances
        and len(trial.intermediate_values) == n_instances
    )


class RacingPruner(BasePruner):
    """An Optuna pruner that races an outer trial against the incumbent (see module docstring).

    The incumbent is the best COMPLETE trial judged on every instance; its scores are its
    intermediate values, so the decision needs nothing but the stored outer trials and works
    the same on every worker.

    Args:
        n_instances: Instances of a complete trial (repeats times training objectives).
        p_threshold: Stop when the one-sided test's p-value is below this.
    """

    def __init__(self, *, n_instances: int, p_threshold: float = DEFAULT_P_THRESHOLD) -> None:
        if not 0.0 < p_threshold < 1.0:
            raise ValueError(f"p_threshold must be between 0 and 1 but got {p_threshold}.")
        if n_instances < 1:
            raise ValueError(f"n_instances must be >= 1 but got {n_instances}.")
        self._n_instances = n_instances
        self._p_threshold = p_threshold

    def decide(self, study: optuna.Study, trial: FrozenTrial) -> RacingDecision:
        """The decision for ``trial`` given the study's stored trials."""
        values = trial.intermediate_values
        if not values:
            return RacingDecision(False, math.nan, 0, None, "no instance reported")
        minimize = study.direction == StudyDirection.MINIMIZE
        complete = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.number != trial.number and _judged_on_all(t, self._n_instances)
        ]
        if not complete:
            return RacingDecision(False, math.nan, 0, None, "no incumbent judged on all")
        best = (min if minimize else max)(complete, key=lambda t: t.values[0])
        steps = sorted(set(values) & set(best.intermediate_values))
        return decide(
            [values[s] for s in steps],
            [best.intermediate_values[s] for s in steps],
            p_threshold=self._p_threshold,
            minimize=minimize,
            incumbent_number=best.number,
        )

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return self.decide(study, trial).stop


class OuterRacing:
    """The outer objective's side of racing: one call per repeat reports and decides.

    Build it with :meth:`for_run`, which applies the power check and warns where the user set
    the repeats. ``after_repeat`` reports the repeat's instance scores, records on how many
    repeats the trial is judged (``bilevel:judged_on``), and, when the rule says so, marks the
    trial's inner studies (``bilevel:stopped``, never deleted) and raises
    :class:`optuna.TrialPruned`.
    """

    def __init__(
        self,
        *,
        enabled: bool,
        n_repeats: int,
        n_objectives: int,
        p_threshold: float = DEFAULT_P_THRESHOLD,
        reports: bool = True,
    ) -> None:
        self.enabled = enabled
        self.n_repeats = n_repeats
        self.n_objectives = n_objectives
        self.p_threshold = p_threshold
        self.reports = reports
        self.power = check_power(
            n_repeats=n_repeats, n_objectives=n_objectives, p_threshold=p_threshold
        )
        self._pruner = RacingPruner(n_instances=n_repeats * n_objectives, p_threshold=p_threshold)

    @classmethod
    def for_run(
        cls,
        *,
        prune: bool,
        cost_objective: bool | str,
        n_repeats: int,
        n_objectives: int,
        p_threshold: float = DEFAULT_P_THRESHOLD,
    ) -> OuterRacing:
        """Racing as ``run_bilevel_study(prune=..., cost_objective=...)`` asks; warns (a
        :class:`~bilevel_optuna.stats.NoPowerWarning`) when it could never stop anything."""
        if not 0.0 < p_threshold < 1.0:
            raise ConfigurationError(
                f"p_threshold must be between 0 and 1 but got {p_threshold}."
            )
        racing = cls(
            enabled=prune and not cost_objective,
            n_repeats=n_repeats,
            n_objectives=n_objectives,
            p_threshold=p_threshold,
            reports=not cost_objective,  # Optuna cannot report on a multi-objective study
        )
        if racing.enabled and not racing.power.can_stop:
            # A warning, not also a log line: both printed the same sentence twice.
            warn(racing.power.message, NoPowerWarning)
        return racing

    def pruner(self) -> BasePruner:
        """The outer study's pruner: the racing rule, or none."""
        return self._pruner if self.enabled else NopPruner()

    def to_dict(self) -> dict[str, Any]:
        """What the outer study records (``bilevel:racing``) for ``status`` and the dashboard."""
        return {
            "enabled": self.enabled,
            "rule": "one-sided exact Wilcoxon signed-rank against the incumbent",
            "p_threshold": self.p_threshold,
            "n_repeats": self.n_repeats,
            "instances_per_repeat": self.n_objectives,
            "first_stop": self.power.first_stop,
            "can_stop": self.enabled and self.power.can_stop,
            "message": self.power.message if self.enabled else "",
        }

    def note(self) -> str:
        """The racing paragraph of the run's dashboard note."""
        text = describe(self.to_dict())
        if self.enabled:
            text += (
                " A configuration stops once it is significantly worse than the best complete "
                "one on the (repeat, objective) instances both have. Stopped configurations are "
                "PRUNED: their partial values are never ranked beside complete ones; "
                "`bilevel:judged_on` on each outer trial says on how many repeats it was "
                "judged, and the inner studies of a stopped one are kept, marked "
                "`bilevel:stopped`."
            )
        return text

    def after_repeat(
        self,
        trial: optuna.Trial,
        *,
        repeat: int,
        scores: Sequence[float],
        inner_studies: Sequence[str],
        summary: dict[str, Any],
    ) -> None:
        """Report ``repeat``'s scores (one per training objective); stop the trial if it lost.

        Raises:
            optuna.TrialPruned: The configuration is significantly worse than the incumbent;
                ``summary`` (with ``pruned_after``) and the decision are stored on the trial
                first, and its inner studies marked.
        """
        if len(scores) != self.n_objectives:
            raise ValueError(
                f"after_repeat needs one score per training objective ({self.n_objectives}) "
                f"but got {len(scores)}."
            )
        done = repeat + 1
        judged: dict[str, Any] = {
            "repeats": done,
            "of": self.n_repeats,
            "instances": done * self.n_objectives,
            "stopped": False,
        }
        if self.reports:
            for j, score in enumerate(scores):
                trial.report(float(score), step=instance_step(repeat, j, self.n_objectives))
        if self.enabled and self.reports and done < self.n_repeats:
            frozen = next(
                t
                for t in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if t.number == trial.number
            )
            decision = self._pruner.decide(trial.study, frozen)
            if decision.stop:
                judged.update(
                    stopped=True,
                    pvalue=decision.pvalue,
                    incumbent=decision.incumbent,
                    reason=decision.reason,
                )
                trial.set_user_attr(_attrs.JUDGED_ON, judged)
                trial.set_user_attr(_attrs.SUMMARY, {**summary, "pruned_after": done})
                mark_stopped(
                    _optuna_private.storage_of(trial.study),
                    inner_studies,
                    outer_trial=trial.number,
                    repeats=done,
                    of=self.n_repeats,
                )
                raise optuna.TrialPruned(
                    f"Stopped after {done} of {self.n_repeats} repeats: {decision.reason}."
                )
        trial.set_user_attr(_attrs.JUDGED_ON, judged)


def mark_stopped(
    storage: Any, names: Sequence[str], *, outer_trial: int, repeats: int, of: int
) -> None:
    """Mark the inner studies of a stopped configuration (they are kept, never deleted)."""
    mark = {"outer_trial": outer_trial, "after_repeats": repeats, "of": of}
    for name in dict.fromkeys(names):
        study = optuna.load_study(study_name=name, storage=storage)
        study.set_user_attr(_attrs.STOPPED, mark)


def describe(racing: dict[str, Any] | None) -> str:
    """One line saying how an outer study races, from its ``bilevel:racing`` attribute."""
    if not racing:
        return "Racing: not recorded (a run from before racing, or pruning off)."
    if not racing.get("enabled"):
        return "Racing: off; every configuration runs every repeat."
    if not racing.get("can_stop"):
        return f"Racing: on, but has no power. {racing.get('message', '')}"
    return (
        f"Racing: on (one-sided Wilcoxon signed-rank against the incumbent, "
        f"p < {racing['p_threshold']:g}, {racing['instances_per_repeat']} instance(s) per "
        f"repeat); the earliest stop is after repeat {racing['first_stop']} of "
        f"{racing['n_repeats']}."
    )


def status_lines(study: optuna.Study, trials: Sequence[FrozenTrial]) -> list[str]:
    """Lines for ``bilevel-optuna status``: the racing setting and on what each was judged."""
    racing = study.user_attrs.get(_attrs.RACING)
    lines = [describe(racing)]
    judged = [
        (t, t.user_attrs[_attrs.JUDGED_ON])
        for t in trials
        if isinstance(t.user_attrs.get(_attrs.JUDGED_ON), dict)
        and t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]
    if not judged:
        return lines
    full = [t for t, j in judged if t.state == TrialState.COMPLETE]
    stopped = [(t, j) for t, j in judged if t.state == TrialState.PRUNED]
    of = judged[0][1].get("of")
    lines.append(
        f"judged on: {len(full)} configuration(s) on all {of} repeats, {len(stopped)} stopped "
        "early (partial values, never ranked)"
        + (
            ": " + ", ".join(f"trial {t.number} on {j['repeats']}" for t, j in stopped)
            if stopped
            else ""
        )
    )
    return lines
