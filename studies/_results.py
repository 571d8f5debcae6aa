"""What a bilevel run found: the best configuration, every arm's inner results and scores,
and the statistics, read back from the storage once the run's work is done."""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import TYPE_CHECKING
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna._logging import get_logger
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.stats import StudySelection
from bilevel_optuna.stats import compare
from bilevel_optuna.studies._artifacts import store_report
from bilevel_optuna.studies._arms import ArmRunner
from bilevel_optuna.studies._arms import arm_label
from bilevel_optuna.studies._arms import arm_of
from bilevel_optuna.studies._config import ProposerConfig
from bilevel_optuna.studies._inner import InnerResult
from bilevel_optuna.studies._inner import read_inner_result
from bilevel_optuna.studies._plan import RunPlan
from bilevel_optuna.studies._scoring import Scorer
from bilevel_optuna.studies._settings import RunSettings
from bilevel_optuna.studies._spend import run_spend
from bilevel_optuna.studies._spend import spend_markdown
from bilevel_optuna.studies._spend import total

if TYPE_CHECKING:
    from bilevel_optuna._optuna_private import ArtifactStore

_logger = get_logger(__name__)

# Outer trials that count toward n_outer_trials.
_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)

Results = dict[str, dict[str, list[InnerResult]]]  # arm -> objective -> one result per seed


@dataclasses.dataclass
class BilevelResult:
    """What :func:`run_bilevel_study` returns.

    Attributes:
        outer_study: The outer meta-study (its trials hold each configuration and its score).
        best_config: The best proposer configuration found, or ``None`` if no outer trial
            completed.
        best_value: Its outer score (lower is better).
        arms: Arm name -> objective name -> inner study names (one per seed), for the best
            configuration (``"best"``) and every baseline.
        arm_scores: Arm name -> objective name -> per-seed score (normalized regret, best value or
            area under the curve, per ``aggregate``), paired by seed across arms.
        storage_url: Where everything is stored (``compare`` and the dashboard read it).
        comparison: Statistical comparison of the arms on the training objectives.
        heldout_comparison: The same on the held-out objectives, when there were any.
        best_arm: The arm name of ``best_config`` (``cfg-<hash>``), or ``None``.
        report_artifacts: File name -> Optuna artifact id of the stored report and plots
            (``optuna.artifacts.get_all_artifact_meta(result.outer_study)`` lists them).
        spend: The run's tokens and fallback trials, over all its studies
            (``Spend`` of ``samplers/_spend.py``: ``spend.tokens``, ``spend.n_fallback``,
            ``spend.why``, ``spend.cost(prices)`` in money).
    """

    outer_study: optuna.Study
    best_config: ProposerConfig | None
    best_value: float
    arms: dict[str, dict[str, list[str]]]
    arm_scores: dict[str, dict[str, list[float]]]
    storage_url: str
    comparison: Any = None
    heldout_comparison: Any = None
    best_arm: str | None = None
    report_artifacts: dict[str, str] = dataclasses.field(default_factory=dict)
    spend: Any = None  # a samplers._spend.Spend: Any keeps the private class out of the docs

    @property
    def best_label(self) -> str:
        """The best arm's name with what its configuration is, e.g. ``cfg-d65f7017 (t=0.7
        h=24 tabu+orth)``."""
        return arm_label(self.best_arm or "best", self.best_config)


def best_of(outer: optuna.Study) -> tuple[ProposerConfig | None, float]:
    complete = outer.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None, math.nan
    best_trial = min(complete, key=lambda t: t.values[0])
    return ProposerConfig.from_dict(best_trial.user_attrs[_attrs.CONFIG]), best_trial.values[0]


def read_results(
    runner: ArmRunner,
    plan: RunPlan,
    outer: optuna.Study,
    best_config: ProposerConfig | None,
    best_arm: str | None,
) -> Results:
    """Every baseline's and the best configuration's inner results, read from the storage."""

    def read(arm: str, objective: Objective, seed: int) -> InnerResult:
        study = optuna.load_study(
            study_name=runner.study_name(arm, objective, seed), storage=runner.storage
        )
        return read_inner_result(study, objective, n_trials=runner.n_inner_trials)

    everything = plan.objectives + plan.heldout
    results: Results = {
        arm: {o.name: [read(arm, o, s) for s in plan.seeds_of(o)] for o in everything}
        for arm in plan.base_arms
    }
    if best_config is not None and best_arm is not None:
        results["best"] = {
            o.name: [read(best_arm, o, s) for s in plan.seeds_of(o)] for o in everything
        }
    return results


def compare_arms(
    storage: BaseStorage,
    run_name: str,
    arms: list[str],
    objectives: list[Objective],
    kinds: tuple[str, ...],
    n_trials: int,
) -> Any:
    """The arms compared on stored values, the chosen configuration as the control."""
    if len(arms) < 2:
        return None
    with warnings.catch_warnings():
        # Too few repeats and ties are stated in the result's notes; no need to warn twice.
        warnings.simplefilter("ignore")
        try:
            return compare(
                storage,
                run=run_name,
                arms=arms,
                n_trials=n_trials,
                selection=StudySelection(kind=kinds, objective=[o.name for o in objectives]),
                control=arms[0],
            )
        except ConfigurationError as err:  # e.g. objectives of both directions, optima unknown
            _logger.warning(
                "No comparison of %s: %s Compare them one objective at a time with "
                "`bilevel-optuna compare --run %s --objective NAME`.",
                [o.name for o in objectives],
                err,
                run_name,
            )
            return None


def result_of(
    plan: RunPlan,
    outer: optuna.Study,
    runner: ArmRunner,
    *,
    store: ArtifactStore | None,
    storage_url: str,
    stored: RunSettings,
) -> BilevelResult:
    """What the run found, read back from the storage, and its statistics."""
    best_config, best_value = best_of(outer)
    best_arm = arm_of(best_config) if best_config is not None else None
    results = read_results(runner, plan, outer, best_config, best_arm)
    scorer = Scorer(plan.aggregate)
    if "random" in results:
        scorer.set_scales(results["random"])
    comparison = heldout_comparison = None
    if best_arm is not None:
        compared = list(dict.fromkeys([best_arm, *plan.base_arms]))
        run = (runner.storage, runner.run_name, compared)
        comparison = compare_arms(
            *run, plan.objectives, ("inner", "baseline"), plan.n_inner_trials
        )
        if plan.heldout:
            heldout_comparison = compare_arms(
                *run, plan.heldout, ("heldout", "baseline"), plan.n_inner_trials
            )
    stored_report: dict[str, str] = {}
    if store is not None and comparison is not None:
        n_done = len(outer.get_trials(deepcopy=False, states=_COUNTED))
        stored_report = store_report(
            outer,
            store,
            {"comparison": comparison, "heldout_comparison": heldout_comparison},
            key=f"{best_arm} after {n_done} outer trials",
            appendix=spend_markdown(runner.storage, runner.run_name, stored.to_dict()),
        )
    return BilevelResult(
        comparison=comparison,
        heldout_comparison=heldout_comparison,
        outer_study=outer,
        best_config=best_config,
        best_value=best_value,
        arms={
            arm: {name: [r.study_name for r in rs] for name, rs in per_objective.items()}
            for arm, per_objective in results.items()
        },
        arm_scores={
            arm: {
                obj.name: [scorer(r, obj) for r in per_objective[obj.name]]
                for obj in plan.objectives + plan.heldout
            }
            for arm, per_objective in results.items()
        },
        storage_url=storage_url,
        best_arm=best_arm,
        report_artifacts=stored_report,
        spend=total(run_spend(runner.storage, runner.run_name)),
    )
