"""run_bilevel_study(): the outer meta-study over LLMSampler's configuration.

An outer trial suggests a :class:`ProposerConfig`, runs one inner study per (training objective,
repeat seed) with it, and returns the aggregate score. Every outer trial uses the same seeds (a
paired design), each (repeat, objective) score is reported as an intermediate value so that
racing (``_racing``) can stop a poor configuration early, and baselines (TPE, random and the Level-0
LLM sampler) run in the same storage with the same seeds. Inner studies are named after their
configuration's hash, so a rerun after a crash reuses every finished inner study.

The parts live beside this module: storage (``bilevel_optuna._storage``), arms and the sampler
factory (``_arms``), scoring (``_scoring``), the run's stored settings (``_settings``), the claim
table (``_work``) and the worker loop (``_worker``) that runs baselines, outer trials and their
repeats task by task, beside any ``bilevel-optuna worker`` on other servers (``_join``);
:func:`run_bilevel_study` calls them in order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import os
import warnings
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna._experimental import set_metric_names
from bilevel_optuna._logging import get_logger
from bilevel_optuna._storage import DEFAULT_STORAGE  # noqa: F401 - where callers found it
from bilevel_optuna._storage import heartbeat_settings
from bilevel_optuna._storage import make_storage
from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.objectives._base import as_objective
from bilevel_optuna.studies._artifacts import AUTO
from bilevel_optuna.studies._artifacts import artifact_store
from bilevel_optuna.studies._artifacts import record_artifact_store
from bilevel_optuna.studies._artifacts import store_report
from bilevel_optuna.studies._arms import BASELINES
from bilevel_optuna.studies._arms import ArmRunner
from bilevel_optuna.studies._arms import arm_label
from bilevel_optuna.studies._arms import arm_of
from bilevel_optuna.studies._arms import check_baselines
from bilevel_optuna.studies._arms import make_sampler
from bilevel_optuna.studies._config import OuterSpace
from bilevel_optuna.studies._config import ProposerConfig
from bilevel_optuna.studies._racing import OuterRacing
from bilevel_optuna.studies._inner import InnerResult
from bilevel_optuna.studies._inner import read_inner_result
from bilevel_optuna.studies._outer import check_presets
from bilevel_optuna.studies._outer import enqueue_presets
from bilevel_optuna.studies._progress import ProgressBar
from bilevel_optuna.studies._progress import progress_bar_default
from bilevel_optuna.studies._settings import RunSettings
from bilevel_optuna.studies._settings import objective_entry
from bilevel_optuna.studies._settings import safe_model_spec
from bilevel_optuna.studies._settings import store_settings
from bilevel_optuna.studies._spend import ModelPolicy
from bilevel_optuna.studies._spend import check_model
from bilevel_optuna.studies._spend import run_spend
from bilevel_optuna.studies._spend import spend_markdown
from bilevel_optuna.studies._spend import total
from bilevel_optuna.studies._worker import RunWorker
from bilevel_optuna.studies._scoring import Scorer
from bilevel_optuna.studies._scoring import metric_name
from bilevel_optuna.studies._scoring import resolve_aggregate

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore

_logger = get_logger(__name__)

OUTER_SAMPLERS = ("tpe", "random", "llm")
# Outer trials that count toward n_outer_trials.
_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)

ObjectiveLike = Objective | str | Callable[[optuna.Trial], float]
Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
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


def resolve_objective(objective: ObjectiveLike) -> Objective:
    """An :class:`Objective` from an instance, a registry name or a plain function."""
    if isinstance(objective, str):
        from bilevel_optuna.objectives import get_objective

        return get_objective(objective)
    return as_objective(objective)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """The arguments of one run, checked: nothing runs before every one of them is."""

    objectives: list[Objective]
    heldout: list[Objective]
    seeds: list[int]
    heldout_seeds: list[int]
    aggregate: str
    base_arms: list[str]
    outer_sampler: str | BaseSampler

    def seeds_of(self, objective: Objective) -> list[int]:
        return self.heldout_seeds if objective in self.heldout else self.seeds


def _plan(
    objective: ObjectiveLike | Sequence[ObjectiveLike],
    heldout_objectives: Sequence[ObjectiveLike],
    *,
    n_outer_trials: int,
    n_inner_trials: int,
    n_repeats: int,
    seeds: Sequence[int] | None,
    heldout_seeds: Sequence[int] | None,
    aggregate: str,
    baselines: Sequence[str],
    outer_sampler: str | BaseSampler,
    seed: int,
) -> _Plan:
    single = isinstance(objective, (str, Objective)) or callable(objective)
    objectives = [resolve_objective(o) for o in ([objective] if single else list(objective))]
    heldout = [resolve_objective(o) for o in heldout_objectives]
    if not objectives:
        raise ConfigurationError("Give at least one objective to tune the proposer on.")
    aggregate = resolve_aggregate(aggregate, objectives)
    for name, value in (
        ("n_outer_trials", n_outer_trials),
        ("n_inner_trials", n_inner_trials),
        ("n_repeats", n_repeats),
    ):
        if value < 1:
            raise ConfigurationError(f"{name} must be >= 1 but got {value}.")
    base_arms = check_baselines(baselines)
    if "random" not in base_arms and aggregate in ("regret", "auc"):
        base_arms.insert(0, "random")  # random search's regret sets the scale of the outer value
    seeds_list = list(seeds) if seeds is not None else [seed * 1000 + r for r in range(n_repeats)]
    if len(set(seeds_list)) != len(seeds_list):
        raise ConfigurationError(f"seeds must be distinct but got {seeds_list}.")
    heldout_seeds_list = list(heldout_seeds) if heldout_seeds is not None else seeds_list
    if not heldout_seeds_list or len(set(heldout_seeds_list)) != len(heldout_seeds_list):
        raise ConfigurationError(
            f"heldout_seeds must be distinct and not empty but got {heldout_seeds_list}."
        )
    if isinstance(outer_sampler, str) and outer_sampler not in OUTER_SAMPLERS:
        raise ConfigurationError(
            f"outer_sampler must be one of {OUTER_SAMPLERS} or a sampler but got "
            f"{outer_sampler!r}."
        )
    return _Plan(
        objectives=objectives,
        heldout=heldout,
        seeds=seeds_list,
        heldout_seeds=heldout_seeds_list,
        aggregate=aggregate,
        base_arms=base_arms,
        outer_sampler=outer_sampler,
    )


def outer_sampler_named(
    name: str, *, aggregate: str, seed: int, model: ChatModel | str | None
) -> BaseSampler:
    """The outer study's sampler by name: ``"tpe"``, ``"random"`` or ``"llm"``."""
    if name != "llm":
        return make_sampler(name, seed=seed)
    return make_sampler(
        "llm",
        seed=seed,
        model=model,
        description=(
            "Tune the settings of an LLM-driven hyperparameter optimizer. Lower is better: "
            "the value is the optimizer's regret relative to random search."
        ),
        metric_name=metric_name(aggregate),
    )


def _outer_sampler(
    plan: _Plan, *, seed: int, model: ChatModel | str | None
) -> BaseSampler:
    if not isinstance(plan.outer_sampler, str):
        return plan.outer_sampler
    return outer_sampler_named(
        plan.outer_sampler, aggregate=plan.aggregate, seed=seed, model=model
    )


def _open_outer_study(
    plan: _Plan,
    *,
    storage: BaseStorage,
    run_name: str,
    space: OuterSpace,
    model: ChatModel | str | None,
    seed: int,
    n_inner_trials: int,
    racing: OuterRacing,
    cost_objective: bool,
    start_from: Sequence[str],
) -> optuna.Study:
    """Create or resume the outer study, with its attributes, metric names and note."""
    outer = optuna.create_study(
        storage=storage,
        study_name=run_name,
        sampler=_outer_sampler(plan, seed=seed, model=model),
        pruner=racing.pruner(),
        directions=["minimize", "minimize"] if cost_objective else ["minimize"],
        load_if_exists=True,
    )
    for key, value in (
        (
            _attrs.ROLE,
            f"outer study: one trial per proposer configuration; its inner studies are "
            f"{run_name}/<arm>/<objective>/seed-<seed>",
        ),
        (_attrs.KIND, "outer"),
        (_attrs.RUN, run_name),
        (_attrs.RACING, racing.to_dict()),
    ):
        if outer.user_attrs.get(key) != value:
            outer.set_user_attr(key, value)
    metrics = [metric_name(plan.aggregate)]
    set_metric_names(outer, metrics + ["tokens per repeat"] if cost_objective else metrics)
    _save_note(outer, plan, run_name, n_inner_trials, racing)
    enqueue_presets(outer, space, start_from)
    return outer


def _save_note(
    outer: optuna.Study, plan: _Plan, run_name: str, n_inner_trials: int, racing: OuterRacing
) -> None:
    try:
        import optuna_dashboard

        if not optuna_dashboard.get_note(outer):
            optuna_dashboard.save_note(
                outer,
                _note(
                    run_name,
                    plan.objectives,
                    plan.heldout,
                    plan.seeds,
                    n_inner_trials,
                    plan.aggregate,
                )
                + "\n\n"
                + racing.note(),
            )
    except Exception as err:  # noqa: BLE001 - the note is a convenience, never a failure
        _logger.debug("Could not save the dashboard note: %s", err)


def _best(outer: optuna.Study) -> tuple[ProposerConfig | None, float]:
    complete = outer.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None, math.nan
    best_trial = min(complete, key=lambda t: t.values[0])
    return ProposerConfig.from_dict(best_trial.user_attrs[_attrs.CONFIG]), best_trial.values[0]


def stale_after(storage: BaseStorage) -> float:
    """Seconds of silence after which a worker's claim is taken over.

    The storage's grace period for the inner trials plus two heartbeats, so that by the time
    a task is taken over, the trial its worker left RUNNING is stale for Optuna too. Without
    heartbeats (a journal file: one process), never.
    """
    interval, grace = heartbeat_settings(storage)
    if not interval:
        return 10.0 * 365 * 24 * 3600
    return float(grace or 2 * interval) + 2.0 * float(interval)


def _settings(
    plan: _Plan,
    *,
    storage: BaseStorage,
    n_outer_trials: int,
    n_inner_trials: int,
    space: OuterSpace,
    prune: bool,
    cost_objective: bool,
    seed: int,
    model: ChatModel | str | None,
    policy: ModelPolicy,
) -> RunSettings:
    """What ``bilevel-optuna worker`` rebuilds this run from (studies/_settings.py)."""
    sampler = plan.outer_sampler if isinstance(plan.outer_sampler, str) else None
    return RunSettings(
        objectives=[objective_entry(o) for o in plan.objectives],
        objective_names=[o.name for o in plan.objectives],
        heldout=[objective_entry(o) for o in plan.heldout],
        heldout_names=[o.name for o in plan.heldout],
        base_dir=os.getcwd(),
        n_outer_trials=n_outer_trials,
        n_inner_trials=n_inner_trials,
        seeds=plan.seeds,
        heldout_seeds=plan.heldout_seeds,
        aggregate=plan.aggregate,
        baselines=plan.base_arms,
        outer_sampler=sampler,
        space=space.to_config(),
        prune=prune,
        cost_objective=cost_objective,
        seed=seed,
        model=safe_model_spec(model),
        stale_after=stale_after(storage),
        **policy.to_settings(),
    )


def _read_results(
    runner: ArmRunner,
    plan: _Plan,
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


def _compare(
    storage: BaseStorage,
    run_name: str,
    arms: list[str],
    objectives: list[Objective],
    kinds: tuple[str, ...],
    n_trials: int,
) -> Any:
    """The arms compared on stored values, the chosen configuration as the control."""
    from bilevel_optuna.stats import compare

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
                kind=kinds,
                objective=[o.name for o in objectives],
                n_trials=n_trials,
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



def _note(
    run_name: str,
    objectives: list[Objective],
    heldout: list[Objective],
    seeds: list[int],
    n_inner: int,
    aggregate: str,
) -> str:
    lines = [
        f"# Bilevel run `{run_name}`",
        "",
        "Each trial of this outer study is one configuration of the LLM proposer (LLMSampler):",
        "its parameters are the proposer's settings and which mechanisms are switched on",
        "(`mech.<name>`, with their own settings as `mech.<name>.<param>`).",
        "",
        f"- Training objectives: {', '.join(o.name for o in objectives)}",
        f"- Held-out objectives: {', '.join(o.name for o in heldout) or 'none'}",
        f"- Repeats (paired seeds): {seeds}; {n_inner} inner trials each",
        f"- Outer value: {aggregate} (lower is better; regret is divided by random search's median)",
        "",
        f"Inner studies are named `{run_name}/<arm>/<objective>/seed-<seed>`; each outer trial lists",
        "its own in the user attribute `bilevel:inner_studies`. Baseline arms: `random`, `tpe`,",
        "`llm-level0` (the default proposer, no mechanism). Inner trials show the model's",
        "rationale (`llm:rationale`) and where each proposal came from (`llm:source`).",
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def _optuna_verbosity(level: int | None) -> Iterator[None]:
    """Optuna's verbosity set to ``level`` (None: as is), and the caller's restored after."""
    previous = optuna.logging.get_verbosity()
    if level is not None:
        optuna.logging.set_verbosity(level)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def _restores_optuna_verbosity(
    func: Callable[..., BilevelResult],
) -> Callable[..., BilevelResult]:
    """Run ``func`` under Optuna's verbosity its ``optuna_verbosity`` argument names."""
    default = inspect.signature(func).parameters["optuna_verbosity"].default

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> BilevelResult:
        with _optuna_verbosity(kwargs.get("optuna_verbosity", default)):
            return func(*args, **kwargs)

    return wrapper


@_restores_optuna_verbosity
def run_bilevel_study(
    objective: ObjectiveLike | Sequence[ObjectiveLike],
    *,
    heldout_objectives: Sequence[ObjectiveLike] = (),
    storage: str | BaseStorage | None = None,
    storage_options: Mapping[str, Any] | None = None,
    run_name: str = "bilevel",
    n_outer_trials: int = 8,
    n_inner_trials: int = 20,
    n_repeats: int = 3,
    seeds: Sequence[int] | None = None,
    heldout_seeds: Sequence[int] | None = None,
    model: ChatModel | str | None = None,
    outer_space: OuterSpace | None = None,
    start_from: Sequence[str] = ("level0",),
    outer_sampler: str | BaseSampler = "tpe",
    aggregate: str = "auto",
    prune: bool = True,
    cost_objective: bool = False,
    baselines: Sequence[str] = BASELINES,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    show_progress_bar: bool | None = None,
    optuna_verbosity: int | None = optuna.logging.WARNING,
    callbacks: Sequence[Callback] = (),
    artifacts: str | os.PathLike[str] | ArtifactStore | None = AUTO,
    on_model_error: str = "raise",
    max_tokens_total: int | None = None,
    max_cost: float | None = None,
    token_prices: Sequence[float] | None = None,
) -> BilevelResult:
    """Tune LLMSampler's configuration with an outer Optuna study.

    Args:
        objective: The objective(s) the outer loop is tuned on: :class:`Objective` instances,
            registry names (``"branin"``, ``"hpobench/kc1"``) or plain Optuna objective functions.
        heldout_objectives: Objectives the chosen configuration is then evaluated on, beside the
            baselines, to test whether it generalizes.
        storage: A database URL, an Optuna journal file (``run.log``: one machine) or a storage
            object; by default ``$OPTUNA_STORAGE``, else SQLite (``bilevel_optuna.db`` in the
            working directory). Workers on other servers join by using the same URL and
            ``run_name`` (``bilevel-optuna worker --storage URL --run NAME``).
        storage_options: Engine and heartbeat options for a database URL (pool size,
            pre-ping, timeouts, recycle, heartbeat interval and grace period: README,
            "Connections"); the same keys in the URL's query string win.
        run_name: Name of the outer study; inner studies are named under it.
        n_outer_trials: Outer trials to finish (complete or pruned), over all workers.
        n_inner_trials: Trials per inner study.
        n_repeats: Inner studies per objective per outer trial, one per seed.
        seeds: The repeats' seeds (default ``seed * 1000 + r``); the same for every arm.
        heldout_seeds: Seeds of the held-out evaluation (default: ``seeds``). More seeds here
            than repeats in the outer loop buy the held-out test its power without slowing
            every outer trial.
        model: Chat model or spec (``"local"`` by default, see :func:`~bilevel_optuna.chat.get_chat_model`).
        outer_space: The search space of proposer configurations.
        start_from: LLMSampler presets (``"level0"``, ``"default"``) that are the outer
            study's first trials, in order, where the space can express them: the loop starts
            from what ships. Level 0 is free (its studies are the llm-level0 baseline's).
        outer_sampler: ``"tpe"`` (default), ``"random"``, ``"llm"`` (LLMSampler tunes itself) or a
            sampler.
        aggregate: The outer value: ``"regret"`` (mean normalized regret), ``"best"`` (mean best
            value), ``"auc"`` (area under the anytime regret curve) or ``"auto"`` (regret where
            every optimum is known, else best).
        prune: Race the configurations: one stops (PRUNED) once a one-sided signed-rank test on
            its (repeat, objective) scores finds it worse than the best complete one
            (``studies/_racing.py``). Warns when the repeats are too few for the test.
        cost_objective: Add the LLM tokens spent as a second outer objective (no pruning then).
        baselines: Baseline arms run with the same seeds: ``"random"``, ``"tpe"``,
            ``"llm-level0"`` (the default), and ``"gp"`` (Optuna's GPSampler, opt-in: it costs
            seconds per trial on a laptop's CPU and needs torch).
        seed: Seed of the outer sampler and the default repeat seeds.
        progress: Called with one line of text per finished inner study and outer trial.
        show_progress_bar: One tqdm bar on stderr over the whole run, like Optuna's
            ``show_progress_bar``: inner studies done of all the run will hold (outer trials x
            repeats x objectives, the baselines and the held-out evaluation), how many run,
            the outer trials done, the running study's trial, and an ETA from the finished
            ones. None (the default): a bar where stderr is a terminal, none where it is not.
        optuna_verbosity: Optuna's logging verbosity while the run runs
            (``optuna.logging.WARNING`` by default: no INFO line per inner trial;
            ``optuna.logging.INFO`` brings them back; None leaves it as set). The verbosity
            you had is restored afterwards.
        callbacks: Passed to ``optimize`` of every inner study and of the outer study (e.g.
            optuna-integration's ``MLflowCallback`` or ``WeightsAndBiasesCallback``): called
            with ``(study, frozen_trial)`` after each trial, inner and outer.
        artifacts: Where the comparison report (Markdown) and its plots (PNG) are stored as
            Optuna artifacts of the outer study, for optuna-dashboard: ``"auto"`` (a folder
            ``<file stem>_artifacts`` beside an SQLite or journal file; nothing for server
            databases), a folder, an ``optuna.artifacts`` store (S3, GCS), or None.
        on_model_error: ``"raise"`` (default): an endpoint that is down, refuses the key or
            does not serve the model ends the run before any work, with one line naming the
            URL, the cause and the fix; an endpoint that fails later stops the run the same
            way. ``"fallback"``: the LLM studies' trials come from their base sampler (TPE),
            said once and counted (``llm:fallback``, ``bilevel-optuna status``, the report).
        max_tokens_total: Cap on the tokens the whole run spends on the model. Once reached,
            the LLM studies' trials come from their base sampler: said once, recorded
            (``llm:spend_cap``, ``llm:fallback``) and shown by ``status`` and the report.
        max_cost: The same cap in money, counted with ``token_prices``.
        token_prices: ``(input, output)``: the price per 1M prompt and per 1M completion
            tokens, for ``max_cost`` and the spend ``status`` and the report show.

    Returns:
        A :class:`BilevelResult`.
    """
    # 1. Every argument checked, before any work.
    plan = _plan(
        objective,
        heldout_objectives,
        n_outer_trials=n_outer_trials,
        n_inner_trials=n_inner_trials,
        n_repeats=n_repeats,
        seeds=seeds,
        heldout_seeds=heldout_seeds,
        aggregate=aggregate,
        baselines=baselines,
        outer_sampler=outer_sampler,
        seed=seed,
    )
    check_presets(start_from)
    policy = ModelPolicy(
        on_model_error=on_model_error,
        max_tokens_total=max_tokens_total,
        max_cost=max_cost,
        token_prices=token_prices,  # type: ignore[arg-type]
    )
    # The endpoint answers, takes the key and serves the model, before anything is stored.
    check_model(model, policy)
    # Racing (studies/_racing.py); warns here when these repeats can never stop a configuration.
    racing = OuterRacing.for_run(
        prune=prune,
        cost_objective=cost_objective,
        n_repeats=len(plan.seeds),
        n_objectives=len(plan.objectives),
    )
    space = outer_space or OuterSpace()
    # 2. The storage, and what runs an arm's inner study in it.
    storage_obj, storage_url = make_storage(storage, options=storage_options)
    say = progress or (lambda message: None)
    runner = ArmRunner(
        storage=storage_obj,
        run_name=run_name,
        n_inner_trials=n_inner_trials,
        seeds=plan.seeds,
        model=model,
        progress=say,
        callbacks=callbacks,
        policy=policy,
    )
    scorer = Scorer(plan.aggregate)
    store = artifact_store(artifacts, storage_url)

    # 3. The outer study, with the settings a worker on another server rebuilds the run from.
    outer = _open_outer_study(
        plan,
        storage=storage_obj,
        run_name=run_name,
        space=space,
        model=model,
        seed=seed,
        n_inner_trials=n_inner_trials,
        racing=racing,
        cost_objective=cost_objective,
        start_from=start_from,
    )
    settings = _settings(
        plan,
        storage=storage_obj,
        n_outer_trials=n_outer_trials,
        n_inner_trials=n_inner_trials,
        space=space,
        prune=prune,
        cost_objective=cost_objective,
        seed=seed,
        model=model,
        policy=policy,
    )
    store_settings(outer, settings)
    if store is not None:
        record_artifact_store(outer, store)

    bar = ProgressBar(settings, desc=run_name) if progress_bar_default(show_progress_bar) else None
    if bar is not None:
        runner.callbacks.append(bar.trial)

    # 4. The work: baselines, outer trials (one per slot of the budget), their repeats and the
    # held-out evaluation, claimed task by task with every other worker of the run.
    worker = RunWorker(
        settings=settings,
        storage=storage_obj,
        run_name=run_name,
        outer=outer,
        objectives=plan.objectives,
        heldout=plan.heldout,
        runner=runner,
        racing=racing,
        space=space,
        outer_sampler=plan.outer_sampler
        if plan.outer_sampler in ("tpe", "random")
        else outer.sampler,
        progress=say,
        callbacks=callbacks,
        model_label=safe_model_spec(model) or "local",
        bar=bar,
        local=True,
    )
    worker.ensure_tasks()
    try:
        worker.work()
    finally:
        if bar is not None:
            bar.close()

    # 5. What the run found, read back from the storage.
    best_config, best_value = _best(outer)
    best_arm = arm_of(best_config) if best_config is not None else None
    results = _read_results(
        runner, plan, outer, best_config, best_arm
    )
    if "random" in results:
        scorer.set_scales(results["random"])

    # 6. The statistics, from the stored values.
    comparison = heldout_comparison = None
    if best_arm is not None:
        compared = list(dict.fromkeys([best_arm, *plan.base_arms]))
        comparison = _compare(
            storage_obj, run_name, compared, plan.objectives, ("inner", "baseline"), n_inner_trials
        )
        if plan.heldout:
            heldout_comparison = _compare(
                storage_obj, run_name, compared, plan.heldout, ("heldout", "baseline"),
                n_inner_trials,
            )
    stored: dict[str, str] = {}
    if store is not None and comparison is not None:
        n_done = len(outer.get_trials(deepcopy=False, states=_COUNTED))
        stored = store_report(
            outer,
            store,
            {"comparison": comparison, "heldout_comparison": heldout_comparison},
            key=f"{best_arm} after {n_done} outer trials",
            appendix=spend_markdown(storage_obj, run_name, settings.to_dict()),
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
        report_artifacts=stored,
        spend=total(run_spend(storage_obj, run_name)),
    )
