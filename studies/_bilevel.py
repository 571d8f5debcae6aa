"""run_bilevel_study(): the outer meta-study over LLMSampler's configuration.

An outer trial suggests a :class:`ProposerConfig`, runs one inner study per (training objective,
repeat seed) with it, and returns the aggregate score. Every outer trial uses the same seeds (a
paired design), each (repeat, objective) score is reported as an intermediate value so that
racing (``_racing.py``) can stop a poor configuration early, and baselines (TPE, random and the
Level-0 LLM sampler) run in the same storage with the same seeds. Inner studies are named after their
configuration's hash, so a rerun after a crash reuses every finished inner study.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
import warnings
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.samplers import RandomSampler
from optuna.samplers import TPESampler
from optuna.storages import BaseStorage
from optuna.storages import RDBStorage
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna._logging import get_logger
from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.objectives._base import as_objective
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.samplers import summarize_mechanisms
from bilevel_optuna.studies._config import LEVEL0
from bilevel_optuna.studies._config import OuterSpace
from bilevel_optuna.studies._config import ProposerConfig
from bilevel_optuna.studies._inner import INTERRUPTED
from bilevel_optuna.studies._inner import InnerResult
from bilevel_optuna.studies._inner import run_inner_study
from bilevel_optuna.studies._racing import OuterRacing

_logger = get_logger(__name__)

DEFAULT_STORAGE = "sqlite:///bilevel_optuna.db"
BASELINES = ("random", "tpe", "llm-level0")
AGGREGATES = ("auto", "regret", "best", "auc")
OUTER_SAMPLERS = ("tpe", "random", "llm")

ObjectiveLike = Objective | str | Callable[[optuna.Trial], float]


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
    """

    outer_study: optuna.Study
    best_config: ProposerConfig | None
    best_value: float
    arms: dict[str, dict[str, list[str]]]
    arm_scores: dict[str, dict[str, list[float]]]
    storage_url: str
    comparison: Any = None
    heldout_comparison: Any = None


def resolve_objective(objective: ObjectiveLike) -> Objective:
    """An :class:`Objective` from an instance, a registry name or a plain function."""
    if isinstance(objective, str):
        from bilevel_optuna.objectives import get_objective

        return get_objective(objective)
    return as_objective(objective)


def make_storage(url: str | BaseStorage | None) -> tuple[BaseStorage, str]:
    """An RDB storage with heartbeats, so trials of a killed process are failed and retried."""
    if isinstance(url, BaseStorage):
        return url, getattr(url, "url", repr(url))
    url = url or DEFAULT_STORAGE
    if "://" not in url:
        raise ConfigurationError(
            f"storage must be a database URL such as 'sqlite:///bilevel.db' or "
            f"'postgresql://user@host/db' but got {url!r}."
        )
    storage = RDBStorage(
        url,
        engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
        heartbeat_interval=15,
        grace_period=45,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
    )
    if url.startswith("sqlite"):
        _serialize_sqlite_transactions(storage)
    return storage, url


def _serialize_sqlite_transactions(storage: RDBStorage) -> None:
    """Make every SQLite transaction take the write lock at its start (``BEGIN IMMEDIATE``).

    SQLite ignores ``SELECT ... FOR UPDATE``, so two processes can both read a WAITING trial
    and both start it: a queued candidate would run twice. Taking the lock at ``BEGIN`` makes
    Optuna's read-check-write atomic across processes, at the cost of serializing writers
    (what SQLite does anyway). Server databases lock rows and need none of this.
    """
    from sqlalchemy import event

    engine = storage.engine

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver must not emit its own BEGIN

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners must not be reused


def _score(result: InnerResult, objective: Objective, aggregate: str, scale: float) -> float:
    """One inner study's contribution to the outer value (lower is better)."""
    if aggregate == "regret":
        return result.regret / scale
    if aggregate == "auc":
        finite = [v for v in result.curve if not math.isnan(v)]
        if not finite:
            return math.inf
        sign = 1.0 if objective.optimum is not None or objective.direction == "minimize" else -1.0
        return sign * statistics.fmean(finite) / scale
    best = result.best_value
    if math.isnan(best):
        return math.inf
    return best if objective.direction == "minimize" else -best


def _represents(space: OuterSpace, params: dict[str, Any], config: ProposerConfig) -> bool:
    """Whether ``params`` lie in ``space`` and suggest exactly ``config`` there."""
    distributions = space.distributions()
    for name, dist in distributions.items():
        if name not in params:
            return False
        try:
            if not dist._contains(dist.to_internal_repr(params[name])):
                return False
        except (ValueError, TypeError):
            return False
    try:
        return space.suggest(optuna.trial.FixedTrial(params)) == config
    except (ValueError, TypeError):
        return False


class _Bilevel:
    """Holds the settings of one bilevel run and runs its parts."""

    def __init__(
        self,
        *,
        objectives: list[Objective],
        heldout: list[Objective],
        storage: BaseStorage,
        storage_url: str,
        run_name: str,
        n_inner_trials: int,
        seeds: list[int],
        model: ChatModel | str | None,
        aggregate: str,
        progress: Callable[[str], None] | None,
        progress_bar: bool = False,
    ) -> None:
        self.objectives = objectives
        self.heldout = heldout
        self.storage = storage
        self.storage_url = storage_url
        self.run_name = run_name
        self.n_inner_trials = n_inner_trials
        self.seeds = seeds
        self.model = model
        self.aggregate = aggregate
        self.progress = progress or (lambda message: None)
        self.progress_bar = progress_bar
        self.scales: dict[str, float] = {}

    # -------------------------------------------------------------- naming
    def arm_of(self, config: ProposerConfig) -> str:
        return "llm-level0" if config == LEVEL0 else f"cfg-{config.key()}"

    def study_name(self, arm: str, objective: Objective, seed: int) -> str:
        return f"{self.run_name}/{arm}/{objective.name}/seed-{seed}"

    # ------------------------------------------------------------ samplers
    def sampler_for(
        self, arm: str, objective: Objective, seed: int, config: ProposerConfig | None
    ) -> BaseSampler:
        if arm == "random":
            return RandomSampler(seed=seed)
        if arm == "tpe":
            # Optuna 5's defaults (multivariate, constant liar), pinned by the seed alone.
            return TPESampler(seed=seed)
        assert config is not None
        return LLMSampler(
            model=self.model,
            description=objective.description,
            search_space=objective.search_space or None,
            seed=seed,
            **config.sampler_kwargs(),
        )

    def run_arm(
        self,
        arm: str,
        objective: Objective,
        seed: int,
        *,
        kind: str,
        config: ProposerConfig | None = None,
        outer_trial: optuna.trial.Trial | None = None,
    ) -> InnerResult:
        name = self.study_name(arm, objective, seed)
        attrs: dict[str, Any] = {
            _attrs.KIND: kind,
            _attrs.RUN: self.run_name,
            _attrs.ARM: arm,
            _attrs.OBJECTIVE: objective.name,
            _attrs.SEED: seed,
            _attrs.REPEAT: self.seeds.index(seed) if seed in self.seeds else -1,
        }
        if objective.optimum is not None:
            attrs[_attrs.OPTIMUM] = objective.optimum
        if config is not None:
            attrs[_attrs.CONFIG] = config.to_dict()
        if outer_trial is not None:
            attrs[_attrs.OUTER_STUDY] = self.run_name
            attrs[_attrs.OUTER_TRIAL] = outer_trial.number
        if arm == "tpe":
            attrs["bilevel:sampler"] = (
                f"TPESampler(seed={seed}) with optuna {optuna.__version__} defaults"
            )
        start = time.perf_counter()
        result = run_inner_study(
            storage=self.storage,
            study_name=name,
            objective=objective,
            sampler=self.sampler_for(arm, objective, seed, config),
            n_trials=self.n_inner_trials,
            user_attrs=attrs,
            progress_bar=self.progress_bar,
        )
        if not result.n_new:  # finished before (a rerun, or a reused baseline): nothing new
            return result
        shown = "regret" if objective.optimum is not None else "best"
        value = result.regret if objective.optimum is not None else result.best_value
        self.progress(
            f"{arm} {objective.name} seed {seed}: {shown} {value:.4g} "
            f"({result.n_complete} trials, {time.perf_counter() - start:.1f} s)"
        )
        return result

    def score(self, result: InnerResult, objective: Objective) -> float:
        return _score(result, objective, self.aggregate, self.scales.get(objective.name, 1.0))

    # ------------------------------------------------------------ baselines
    def run_baselines(
        self,
        baselines: Sequence[str],
        objectives: list[Objective],
        seeds: Sequence[int] | None = None,
    ) -> dict[str, dict[str, list[InnerResult]]]:
        out: dict[str, dict[str, list[InnerResult]]] = {}
        for arm in baselines:
            out[arm] = {}
            for objective in objectives:
                out[arm][objective.name] = [
                    self.run_arm(
                        arm,
                        objective,
                        seed,
                        kind="baseline",
                        config=LEVEL0 if arm == "llm-level0" else None,
                    )
                    for seed in (self.seeds if seeds is None else seeds)
                ]
        return out

    def set_scales(self, random_results: dict[str, list[InnerResult]]) -> None:
        """Normalize regret by random search's median regret per objective (1 = as good as
        random), so objectives of different scales can be averaged."""
        for name, results in random_results.items():
            regrets = [r.regret for r in results if not math.isnan(r.regret)]
            scale = statistics.median(regrets) if regrets else math.nan
            self.scales[name] = scale if scale > 0 and math.isfinite(scale) else 1.0

    # ---------------------------------------------------------------- outer
    def outer_objective(
        self, space: OuterSpace, racing: OuterRacing, cost: bool
    ) -> Callable[[optuna.Trial], Any]:
        def objective(trial: optuna.Trial) -> Any:
            config = space.suggest(trial)
            arm = self.arm_of(config)
            trial.set_user_attr(_attrs.CONFIG, config.to_dict())
            trial.set_user_attr(_attrs.ARM, arm)
            names: list[str] = []
            per_repeat: list[float] = []
            tokens = 0
            try:
                for repeat, seed in enumerate(self.seeds):
                    scores = []
                    for obj in self.objectives:
                        result = self.run_arm(
                            arm, obj, seed, kind="inner", config=config, outer_trial=trial
                        )
                        names.append(result.study_name)
                        tokens += result.tokens
                        scores.append(self.score(result, obj))
                    value = statistics.fmean(scores)
                    per_repeat.append(value)
                    trial.set_user_attr(_attrs.INNER_STUDIES, names)
                    # Racing (studies/_racing.py): report the repeat's (repeat, objective)
                    # scores; raises TrialPruned, inner studies marked, if it lost.
                    racing.after_repeat(
                        trial,
                        repeat=repeat,
                        scores=scores,
                        inner_studies=names,
                        summary={"per_repeat": per_repeat, "tokens": tokens},
                    )
            except KeyboardInterrupt:
                trial.set_user_attr(INTERRUPTED, True)
                raise
            mean = statistics.fmean(per_repeat)
            summary: dict[str, Any] = {
                "per_repeat": per_repeat,
                "mean": mean,
                "tokens": tokens,
                "aggregate": self.aggregate,
            }
            if config.mechanisms:
                # Proof of injection: a mechanism that never ran or never changed a proposal is
                # named here and warned about.
                studies = [optuna.load_study(study_name=n, storage=self.storage) for n in names]
                summary["mechanisms"] = {
                    name: s.status for name, s in summarize_mechanisms(studies).items()
                }
            trial.set_user_attr(_attrs.SUMMARY, summary)
            return (mean, tokens / len(self.seeds)) if cost else mean

        return objective


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


def _requeue_interrupted(study: optuna.Study) -> None:
    """Enqueue again the configurations of outer trials stopped by Ctrl-C, once each."""
    trials = study.get_trials(deepcopy=False)
    live = [
        t.params or t.system_attrs.get("fixed_params", {})
        for t in trials
        if t.state != TrialState.FAIL
    ]
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get(INTERRUPTED) and t.params not in live:
            study.enqueue_trial(t.params, user_attrs={"bilevel:resumed_from": t.number})
            live.append(t.params)


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


def run_bilevel_study(
    objective: ObjectiveLike | Sequence[ObjectiveLike],
    *,
    heldout_objectives: Sequence[ObjectiveLike] = (),
    storage: str | BaseStorage | None = None,
    run_name: str = "bilevel",
    n_outer_trials: int = 8,
    n_inner_trials: int = 20,
    n_repeats: int = 3,
    seeds: Sequence[int] | None = None,
    heldout_seeds: Sequence[int] | None = None,
    model: ChatModel | str | None = None,
    outer_space: OuterSpace | None = None,
    outer_sampler: str | BaseSampler = "tpe",
    aggregate: str = "auto",
    prune: bool = True,
    cost_objective: bool = False,
    baselines: Sequence[str] = BASELINES,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    show_progress_bar: bool = False,
) -> BilevelResult:
    """Tune LLMSampler's configuration with an outer Optuna study.

    Args:
        objective: The objective(s) the outer loop is tuned on: :class:`Objective` instances,
            registry names (``"branin"``, ``"hpobench/kc1"``) or plain Optuna objective functions.
        heldout_objectives: Objectives the chosen configuration is then evaluated on, beside the
            baselines, to test whether it generalizes.
        storage: A database URL (SQLite by default: ``bilevel_optuna.db`` in the working
            directory); workers on other servers join by using the same URL and ``run_name``.
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
        outer_sampler: ``"tpe"`` (default), ``"random"``, ``"llm"`` (LLMSampler tunes itself) or a
            sampler.
        aggregate: The outer value: ``"regret"`` (mean normalized regret), ``"best"`` (mean best
            value), ``"auc"`` (area under the anytime regret curve) or ``"auto"`` (regret where
            every optimum is known, else best).
        prune: Race the configurations: one stops (PRUNED) once a one-sided signed-rank test on
            its (repeat, objective) scores finds it worse than the best complete one
            (``studies/_racing.py``). Warns when the repeats are too few for the test.
        cost_objective: Add the LLM tokens spent as a second outer objective (no pruning then).
        baselines: Baseline arms run with the same seeds: ``"random"``, ``"tpe"``, ``"llm-level0"``.
        seed: Seed of the outer sampler and the default repeat seeds.
        progress: Called with one line of text per finished inner study and outer trial.
        show_progress_bar: Show tqdm bars on stderr: the outer trials, and the running inner
            study's trials.

    Returns:
        A :class:`BilevelResult`.
    """
    objectives_list = (
        [objective]
        if isinstance(objective, (str, Objective)) or callable(objective)
        else list(objective)
    )
    objectives = [resolve_objective(o) for o in objectives_list]
    heldout = [resolve_objective(o) for o in heldout_objectives]
    if not objectives:
        raise ConfigurationError("Give at least one objective to tune the proposer on.")
    if aggregate not in AGGREGATES:
        raise ConfigurationError(f"aggregate must be one of {AGGREGATES} but got {aggregate!r}.")
    if aggregate == "auto":
        aggregate = "regret" if all(o.optimum is not None for o in objectives) else "best"
    if aggregate in ("regret",) and any(o.optimum is None for o in objectives):
        missing = [o.name for o in objectives if o.optimum is None]
        raise ConfigurationError(
            f"aggregate='regret' needs known optima but {missing} have none; use 'best' or 'auc'."
        )
    for name, value, low in (
        ("n_outer_trials", n_outer_trials, 1),
        ("n_inner_trials", n_inner_trials, 1),
        ("n_repeats", n_repeats, 1),
    ):
        if value < low:
            raise ConfigurationError(f"{name} must be >= {low} but got {value}.")
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise ConfigurationError(f"Unknown baselines {unknown}; valid ones are {list(BASELINES)}.")
    seeds_list = list(seeds) if seeds is not None else [seed * 1000 + r for r in range(n_repeats)]
    if len(set(seeds_list)) != len(seeds_list):
        raise ConfigurationError(f"seeds must be distinct but got {seeds_list}.")
    heldout_seeds_list = list(heldout_seeds) if heldout_seeds is not None else seeds_list
    if not heldout_seeds_list or len(set(heldout_seeds_list)) != len(heldout_seeds_list):
        raise ConfigurationError(
            f"heldout_seeds must be distinct and not empty but got {heldout_seeds_list}."
        )
    # Racing (studies/_racing.py); warns here when these repeats can never stop a configuration.
    racing = OuterRacing.for_run(
        prune=prune,
        cost_objective=cost_objective,
        n_repeats=len(seeds_list),
        n_objectives=len(objectives),
    )
    space = outer_space or OuterSpace()
    storage_obj, storage_url = make_storage(storage)

    bilevel = _Bilevel(
        objectives=objectives,
        heldout=heldout,
        storage=storage_obj,
        storage_url=storage_url,
        run_name=run_name,
        n_inner_trials=n_inner_trials,
        seeds=seeds_list,
        model=model,
        aggregate=aggregate,
        progress=progress,
        progress_bar=show_progress_bar,
    )

    # Baselines first: random search's regret sets the scale of the outer value.
    base_arms = list(baselines)
    if "random" not in base_arms and aggregate in ("regret", "auc"):
        base_arms.insert(0, "random")
    baseline_results = bilevel.run_baselines(base_arms, objectives)
    if "random" in baseline_results:
        bilevel.set_scales(baseline_results["random"])

    if isinstance(outer_sampler, str):
        if outer_sampler not in OUTER_SAMPLERS:
            raise ConfigurationError(
                f"outer_sampler must be one of {OUTER_SAMPLERS} or a sampler but got {outer_sampler!r}."
            )
        if outer_sampler == "tpe":
            sampler: BaseSampler = TPESampler(seed=seed)
        elif outer_sampler == "random":
            sampler = RandomSampler(seed=seed)
        else:
            sampler = LLMSampler(
                model=model,
                description=(
                    "Tune the settings of an LLM-driven hyperparameter optimizer. Lower is better: "
                    "the value is the optimizer's regret relative to random search."
                ),
                metric_name="normalized regret" if aggregate == "regret" else aggregate,
                seed=seed,
            )
    else:
        sampler = outer_sampler
    directions = ["minimize", "minimize"] if cost_objective else ["minimize"]
    outer = optuna.create_study(
        storage=storage_obj,
        study_name=run_name,
        sampler=sampler,
        pruner=racing.pruner(),
        directions=directions,
        load_if_exists=True,
    )
    for key, value in (
        (_attrs.KIND, "outer"),
        (_attrs.RUN, run_name),
        (_attrs.RACING, racing.to_dict()),
    ):
        if outer.user_attrs.get(key) != value:
            outer.set_user_attr(key, value)
    if outer_sampler in ("tpe", "random") and outer.trials:
        # A resumed run (or a second worker) with the same seed would draw the random
        # start-up configurations again, from the first; the trials already there move it on.
        reseeded = seed + len(outer.trials)
        outer.sampler = (
            TPESampler(seed=reseeded) if outer_sampler == "tpe" else RandomSampler(seed=reseeded)
        )
    try:
        import optuna_dashboard

        if not optuna_dashboard.get_note(outer):
            optuna_dashboard.save_note(
                outer,
                _note(run_name, objectives, heldout, seeds_list, n_inner_trials, aggregate)
                + "\n\n"
                + racing.note(),
            )
    except Exception as err:  # noqa: BLE001 - the note is a convenience, never a failure
        _logger.debug("Could not save the dashboard note: %s", err)

    _requeue_interrupted(outer)
    level0_params = space.params_of(LEVEL0)
    if not outer.trials and _represents(space, level0_params, LEVEL0):
        # The Level-0 configuration as the first outer trial: a reference point for the outer
        # sampler, and free, since its inner studies are the llm-level0 baseline's.
        outer.enqueue_trial(level0_params, user_attrs={"bilevel:reference": "llm-level0"})

    counted = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(outer.get_trials(deepcopy=False, states=counted))
    if done < n_outer_trials:
        outer_bar = None
        if show_progress_bar:
            from tqdm.auto import tqdm

            outer_bar = tqdm(
                total=n_outer_trials, initial=done, desc=f"{run_name} outer", unit="trial"
            )
        outer.optimize(
            bilevel.outer_objective(space, racing, cost_objective),
            n_trials=n_outer_trials - done,
            callbacks=[
                optuna.study.MaxTrialsCallback(n_outer_trials, states=counted),
                lambda study, trial: bilevel.progress(
                    f"outer trial {trial.number} {trial.state.name.lower()}: "
                    f"{trial.user_attrs.get(_attrs.ARM, '')} value {trial.values}"
                ),
                lambda study, trial: outer_bar.update(1) if outer_bar is not None else None,
            ],
        )
        if outer_bar is not None:
            outer_bar.close()

    complete = outer.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best_config: ProposerConfig | None = None
    best_value = math.nan
    if complete:
        best_trial = min(complete, key=lambda t: t.values[0])
        best_config = ProposerConfig.from_dict(best_trial.user_attrs[_attrs.CONFIG])
        best_value = best_trial.values[0]
        outer.set_user_attr("bilevel:best_config", best_config.to_dict())

    arms: dict[str, dict[str, list[str]]] = {}
    scores: dict[str, dict[str, list[float]]] = {}
    all_objectives = objectives + heldout
    def seeds_of(obj: Objective) -> list[int]:
        return heldout_seeds_list if obj in heldout else seeds_list

    if heldout:
        heldout_base = bilevel.run_baselines(base_arms, heldout, seeds=heldout_seeds_list)
        if "random" in heldout_base:
            bilevel.set_scales(heldout_base["random"])
    for arm in base_arms:
        arms[arm], scores[arm] = {}, {}
        for obj in all_objectives:
            results = [
                bilevel.run_arm(
                    arm, obj, s, kind="baseline", config=LEVEL0 if arm == "llm-level0" else None
                )
                for s in seeds_of(obj)
            ]
            arms[arm][obj.name] = [r.study_name for r in results]
            scores[arm][obj.name] = [bilevel.score(r, obj) for r in results]
    if best_config is not None:
        best_arm = bilevel.arm_of(best_config)
        arms["best"], scores["best"] = {}, {}
        for obj in all_objectives:
            kind = "heldout" if obj in heldout else "inner"
            results = [
                bilevel.run_arm(best_arm, obj, s, kind=kind, config=best_config)
                for s in seeds_of(obj)
            ]
            arms["best"][obj.name] = [r.study_name for r in results]
            scores["best"][obj.name] = [bilevel.score(r, obj) for r in results]
        outer.set_user_attr("bilevel:best_arm", best_arm)

    comparison = heldout_comparison = None
    if best_config is not None:
        compared = list(dict.fromkeys([bilevel.arm_of(best_config), *base_arms]))
        comparison = _compare(
            storage_obj, run_name, compared, objectives, ("inner", "baseline"), n_inner_trials
        )
        if heldout:
            heldout_comparison = _compare(
                storage_obj, run_name, compared, heldout, ("heldout", "baseline"), n_inner_trials
            )

    return BilevelResult(
        comparison=comparison,
        heldout_comparison=heldout_comparison,
        outer_study=outer,
        best_config=best_config,
        best_value=best_value,
        arms=arms,
        arm_scores=scores,
        storage_url=storage_url,
    )
