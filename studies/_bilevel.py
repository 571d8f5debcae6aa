"""run_bilevel_study(): the outer meta-study over LLMSampler's configuration.

An outer trial suggests a :class:`ProposerConfig`, runs one inner study per (training objective,
repeat seed) with it, and returns the aggregate score. Every outer trial uses the same seeds (a
paired design), each (repeat, objective) score is reported as an intermediate value so that
racing (``_racing``) can stop a poor configuration early, and baselines (TPE, random and the Level-0
LLM sampler) run in the same storage with the same seeds. Inner studies are named after their
configuration's hash, so a rerun after a crash reuses every finished inner study.

The parts live beside this module: the run's settings objects and the TOML specs
(``specs/``), storage (``bilevel_optuna._storage``), arms and the sampler factory (``_arms``),
scoring (``_scoring``), the run's stored settings (``_settings``), the work queue
(``_workqueue``: claims, heartbeats, the worker loop) and the run's worker (``_worker``) that runs baselines, outer trials and their repeats task by
task, beside any ``bilevel-optuna worker`` on other servers (``_join``);
:func:`run_bilevel_study` calls them in order.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage

from bilevel_optuna import _attrs
from bilevel_optuna._experimental import set_metric_names
from bilevel_optuna._logging import get_logger
from bilevel_optuna._storage import DEFAULT_STORAGE  # noqa: F401 - where callers found it
from bilevel_optuna._storage import heartbeat_settings
from bilevel_optuna._storage import make_storage
from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.studies._artifacts import AUTO
from bilevel_optuna.studies._artifacts import artifact_store
from bilevel_optuna.studies._artifacts import record_artifact_store
from bilevel_optuna.studies._arms import ArmRunner
from bilevel_optuna.studies._arms import make_sampler
from bilevel_optuna.studies._outer import enqueue_presets
from bilevel_optuna.studies._plan import ObjectiveLike
from bilevel_optuna.studies._plan import RunPlan
from bilevel_optuna.studies._plan import plan_run
from bilevel_optuna.studies._plan import resolve_objective  # noqa: F401 - callers' path
from bilevel_optuna.studies._plan import settings_of
from bilevel_optuna.studies._progress import ProgressBar
from bilevel_optuna.studies._progress import progress_bar_default
from bilevel_optuna.studies._racing import OuterRacing
from bilevel_optuna.studies._results import BilevelResult
from bilevel_optuna.studies._results import result_of
from bilevel_optuna.studies._scoring import metric_name
from bilevel_optuna.studies._settings import RunSettings
from bilevel_optuna.studies._settings import store_settings
from bilevel_optuna.studies._spend import check_model
from bilevel_optuna.studies._worker import RunWorker
from bilevel_optuna.studies.specs._settings import OUTER_SAMPLERS  # noqa: F401 - callers' path
from bilevel_optuna.studies.specs._settings import BilevelSettings
from bilevel_optuna.studies.specs._settings import safe_model_spec

if TYPE_CHECKING:
    from bilevel_optuna._optuna_private import ArtifactStore

_logger = get_logger(__name__)

Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


def _check(plan: RunPlan) -> OuterRacing:
    """What can be checked before anything is stored: the endpoint answers, takes the key and
    serves the model; racing (``studies/_racing.py``) warns when these repeats can never stop
    a configuration."""
    check_model(plan.settings.model.model, plan.settings.model.policy())
    return OuterRacing.for_run(
        prune=plan.settings.outer.prune,
        cost_objective=plan.settings.outer.cost_objective,
        n_repeats=len(plan.seeds),
        n_objectives=len(plan.objectives),
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


def _open_outer_study(
    plan: RunPlan, *, storage: BaseStorage, run_name: str, racing: OuterRacing
) -> optuna.Study:
    """Create or resume the outer study, with its attributes, metric names and note."""
    outer_settings = plan.settings.outer
    cost = outer_settings.cost_objective
    outer = optuna.create_study(
        storage=storage,
        study_name=run_name,
        sampler=_outer_sampler(plan),
        pruner=racing.pruner(),
        directions=["minimize", "minimize"] if cost else ["minimize"],
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
    set_metric_names(outer, metrics + [f"{cost} per repeat"] if cost else metrics)
    _save_note(outer, plan, run_name, racing)
    enqueue_presets(outer, outer_settings.space, outer_settings.start_from)
    return outer


def _outer_sampler(plan: RunPlan) -> BaseSampler:
    if not isinstance(plan.outer_sampler, str):
        return plan.outer_sampler
    return outer_sampler_named(
        plan.outer_sampler,
        aggregate=plan.aggregate,
        seed=plan.settings.seed,
        model=plan.settings.model.model,
    )


def _save_note(outer: optuna.Study, plan: RunPlan, run_name: str, racing: OuterRacing) -> None:
    try:
        import optuna_dashboard

        if not optuna_dashboard.get_note(outer):
            optuna_dashboard.save_note(outer, _note(run_name, plan) + "\n\n" + racing.note())
    except Exception as err:  # noqa: BLE001 - the note is a convenience, never a failure
        _logger.debug("Could not save the dashboard note: %s", err)


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


def _runner(
    plan: RunPlan,
    storage: BaseStorage,
    run_name: str,
    *,
    progress: Callable[[str], None] | None,
    callbacks: Sequence[Callback],
) -> ArmRunner:
    """What runs (or reads back) an arm's inner study in the run's storage."""
    return ArmRunner(
        storage=storage,
        run_name=run_name,
        n_inner_trials=plan.n_inner_trials,
        seeds=plan.seeds,
        model=plan.settings.model.model,
        progress=progress or (lambda message: None),
        callbacks=callbacks,
        policy=plan.settings.model.policy(),
    )


def _store_run(
    plan: RunPlan, outer: optuna.Study, storage: BaseStorage, store: ArtifactStore | None
) -> RunSettings:
    """The run's settings and artifact store, written on its outer study for its workers."""
    stored = RunSettings.for_run(
        plan.settings,
        objectives=plan.objectives,
        heldout=plan.heldout,
        base_dir=os.getcwd(),
        stale_after=stale_after(storage),
    )
    store_settings(outer, stored)
    if store is not None:
        record_artifact_store(outer, store)
    return stored


def _work(
    plan: RunPlan,
    stored: RunSettings,
    outer: optuna.Study,
    runner: ArmRunner,
    racing: OuterRacing,
    callbacks: Sequence[Callback],
    *,
    show_progress_bar: bool | None,
) -> None:
    """The work: baselines, outer trials (one per slot of the budget), their repeats and the
    held-out evaluation, claimed task by task with every other worker of the run."""
    run_name = runner.run_name
    bar = ProgressBar(stored, desc=run_name) if progress_bar_default(show_progress_bar) else None
    if bar is not None:
        runner.callbacks.append(bar.trial)
    worker = RunWorker(
        settings=stored,
        storage=runner.storage,
        run_name=run_name,
        outer=outer,
        objectives=plan.objectives,
        heldout=plan.heldout,
        runner=runner,
        racing=racing,
        space=plan.settings.outer.space,
        outer_sampler=plan.outer_sampler
        if plan.outer_sampler in ("tpe", "random")
        else outer.sampler,
        progress=runner.progress,
        callbacks=callbacks,
        model_label=safe_model_spec(plan.settings.model.model) or "local",
        bar=bar,
        local=True,
    )
    worker.ensure_tasks()
    try:
        worker.work()
    finally:
        if bar is not None:
            bar.close()


def _note(run_name: str, plan: RunPlan) -> str:
    objectives, heldout, aggregate = plan.objectives, plan.heldout, plan.aggregate
    lines = [
        f"# Bilevel run `{run_name}`",
        "",
        "Each trial of this outer study is one configuration of the LLM proposer (LLMSampler):",
        "its parameters are the proposer's settings and which mechanisms are switched on",
        "(`mech.<name>`, with their own settings as `mech.<name>.<param>`).",
        "",
        f"- Training objectives: {', '.join(o.name for o in objectives)}",
        f"- Held-out objectives: {', '.join(o.name for o in heldout) or 'none'}",
        f"- Repeats (paired seeds): {plan.seeds}; {plan.n_inner_trials} inner trials each",
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
    settings: BilevelSettings | None = None,
    heldout_objectives: Sequence[ObjectiveLike] = (),
    storage: str | BaseStorage | None = None,
    storage_options: Mapping[str, Any] | None = None,
    run_name: str = "bilevel",
    n_outer_trials: int | None = None,
    n_inner_trials: int | None = None,
    n_repeats: int | None = None,
    model: ChatModel | str | None = None,
    seed: int | None = None,
    progress: Callable[[str], None] | None = None,
    show_progress_bar: bool | None = None,
    optuna_verbosity: int | None = optuna.logging.WARNING,
    callbacks: Sequence[Callback] = (),
    artifacts: str | os.PathLike[str] | ArtifactStore | None = AUTO,
    **deprecated: Any,
) -> BilevelResult:
    """Tune LLMSampler's configuration with an outer Optuna study.

    The run is set by a :class:`~bilevel_optuna.studies.BilevelSettings` (the inner studies,
    the outer study, the model); the common settings also have a keyword of their own, as
    Optuna's ``create_study`` has ``sampler=``. A keyword and a ``settings`` object that sets
    the same field to something else are an error.

    Args:
        objective: The objective(s) the outer loop is tuned on: :class:`Objective` instances,
            registry names (``"branin"``, ``"hpobench/kc1"``) or plain Optuna objective functions.
        settings: The run's settings (default: ``BilevelSettings()``).
        heldout_objectives: Objectives the chosen configuration is then evaluated on, beside the
            baselines, to test whether it generalizes.
        storage: A database URL, an Optuna journal file (``run.log``: one machine) or a storage
            object; by default ``$OPTUNA_STORAGE``, else ``sqlite:///bilevel_optuna.db``.
            Workers join with the same URL and ``run_name`` (``bilevel-optuna worker``).
        storage_options: Engine and heartbeat options for a database URL (README,
            "Connections"); the same keys in the URL's query string win.
        run_name: Name of the outer study; inner studies are named under it.
        n_outer_trials: ``settings.outer.n_trials`` (default 8): outer trials to finish.
        n_inner_trials: ``settings.inner.n_trials`` (default 20): trials per inner study.
        n_repeats: ``settings.inner.n_repeats`` (default 3): inner studies per objective per
            outer trial, one per seed.
        model: ``settings.model.model``: chat model or spec (``"local"`` by default, see
            :func:`~bilevel_optuna.chat.get_chat_model`).
        seed: ``settings.seed`` (default 0): seed of the outer sampler and the default repeat
            seeds.
        progress: Called with one line of text per finished inner study and outer trial.
        show_progress_bar: One tqdm bar on stderr over the whole run (inner studies done of
            all, outer trials, ETA), like Optuna's; None: where stderr is a terminal.
        optuna_verbosity: Optuna's logging verbosity while the run runs (None: as set); yours
            is restored afterwards.
        callbacks: Passed to ``optimize`` of every inner study and of the outer study (e.g.
            optuna-integration's ``MLflowCallback``).
        artifacts: Where the report and its plots are stored as Optuna artifacts of the outer
            study: ``"auto"`` (beside an SQLite or journal file), a folder, an
            ``optuna.artifacts`` store (S3, GCS), or None.
        **deprecated: The previous release's keywords of the other settings (``outer_space``,
            ``baselines``, ``prune``, ``token_prices``, ...) still work, with a
            :class:`FutureWarning` naming the settings field to set instead.

    Returns:
        A :class:`BilevelResult`.
    """
    # 1. Every argument checked, before any work.
    shortcuts = dict(n_outer_trials=n_outer_trials, n_inner_trials=n_inner_trials)
    shortcuts |= dict(n_repeats=n_repeats, model=model, seed=seed)
    plan = plan_run(objective, heldout_objectives, settings_of(settings, shortcuts, deprecated))
    racing = _check(plan)
    # 2. The storage, and what runs an arm's inner study in it.
    storage_obj, storage_url = make_storage(storage, options=storage_options)
    runner = _runner(plan, storage_obj, run_name, progress=progress, callbacks=callbacks)
    store = artifact_store(artifacts, storage_url)
    # 3. The outer study, with the settings a worker on another server rebuilds the run from.
    outer = _open_outer_study(plan, storage=storage_obj, run_name=run_name, racing=racing)
    stored = _store_run(plan, outer, storage_obj, store)
    # 4. The work, with every other worker of the run.
    _work(plan, stored, outer, runner, racing, callbacks, show_progress_bar=show_progress_bar)
    # 5. What the run found and its statistics, read back from the storage.
    return result_of(plan, outer, runner, store=store, storage_url=storage_url, stored=stored)
