"""Joining a bilevel run from the storage alone: what ``bilevel-optuna worker`` calls."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import BaseStorage

from bilevel_optuna import _attrs
from bilevel_optuna._logging import get_logger
from bilevel_optuna._storage import open_storage
from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.studies._arms import ArmRunner
from bilevel_optuna.studies._bilevel import outer_sampler_named
from bilevel_optuna.studies._config import OuterSpace
from bilevel_optuna.studies._racing import OuterRacing
from bilevel_optuna.studies._settings import RunSettings
from bilevel_optuna.studies._settings import load_settings
from bilevel_optuna.studies._settings import safe_model_spec
from bilevel_optuna.studies._spend import check_model
from bilevel_optuna.studies._worker import RunWorker
from bilevel_optuna.studies._workqueue import ensure_storage_schema

_logger = get_logger(__name__)


#: Registers a run's generated mechanisms (Level 2) from the storage and returns their names.
#: ``bilevel_optuna.research``, the layer above this one, adds it on import (the package's
#: ``__init__`` imports it), so that this module does not import research.
GENERATED_MECHANISM_LOADERS: list[Callable[[BaseStorage, str], list[str]]] = []


def _register_generated(storage: BaseStorage, run_name: str) -> list[str]:
    """Register the run's accepted generated mechanisms (Level 2), if it has any."""
    name = run_name + _attrs.RESEARCH_SUFFIX
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    names = {s.study_name for s in summaries}
    if name not in names:
        return []
    if not GENERATED_MECHANISM_LOADERS:
        raise ConfigurationError(
            f"The run {run_name!r} has generated mechanisms, but nothing loads them: import "
            "bilevel_optuna.research before joining it."
        )
    return [n for load in GENERATED_MECHANISM_LOADERS for n in load(storage, run_name)]


def run_worker(
    *,
    storage: str | BaseStorage | None,
    run_name: str,
    model: ChatModel | str | None = None,
    progress: Callable[[str], None] | None = None,
    show_progress_bar: bool = False,
) -> int:
    """Join the bilevel run ``run_name`` in ``storage`` and work on it until it is done.

    Everything but the model comes from the storage: the run's objectives, repeats, outer
    space and baselines (written by whoever started the run), and the accepted generated
    mechanisms of its research study, which are registered here first. The worker claims one
    task at a time (an inner study of one repeat, or a new outer trial), so any number of
    workers on any number of servers share the run; see the README, "Across servers".

    Args:
        storage: The run's database URL (the same as the run's), or a storage.
        run_name: The run to join.
        model: The chat model this worker proposes with; by default the run's model spec, else
            the embedded model.
        progress: Called with one line per finished inner study and outer trial.
        show_progress_bar: tqdm bars of the running inner study on stderr.

    Returns:
        The tasks this worker did.

    Raises:
        ConfigurationError: The storage cannot be opened, or holds no run of that name.
        RunFailedError: A task failed (its objective raised).
        ChatModelError: The model's endpoint is down, refuses the key or does not serve the
            model (checked before any task, unless the run says ``on_model_error="fallback"``).
    """
    _check_sqlite_file(storage)
    storage_obj = open_storage(storage, heartbeat=True)
    ensure_storage_schema(storage_obj)  # a queue of another release's schema stops here
    outer, settings = load_settings(storage_obj, run_name)
    generated = _register_generated(storage_obj, run_name)
    if generated:
        _logger.info("Registered the run's generated mechanisms: %s", generated)
    worker = _rebuild_worker(
        settings,
        storage=storage_obj,
        run_name=run_name,
        outer=outer,
        model=model if model is not None else settings.model,
        progress=progress or (lambda message: None),
        show_progress_bar=show_progress_bar,
    )
    return worker.work()


def _check_sqlite_file(storage: str | BaseStorage | None) -> None:
    """A worker joins a run that exists: a SQLite URL must name a file that is there."""
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        path = storage[len("sqlite:///"):].split("?")[0]
        if not Path(path).exists():
            raise ConfigurationError(
                f"No SQLite file at {path!r}: a worker joins a run that exists. Check the path, "
                "or start the run first with `bilevel-optuna run SPEC --storage URL`."
            )


def _rebuild_worker(
    settings: RunSettings,
    *,
    storage: BaseStorage,
    run_name: str,
    outer: optuna.Study,
    model: ChatModel | str | None,
    progress: Callable[[str], None],
    show_progress_bar: bool,
) -> RunWorker:
    """The run's worker, rebuilt from its stored settings: objectives, outer space and
    sampler, racing and the arms' runner; the model is checked before it claims a task."""
    objectives, heldout = settings.build_objectives()
    missing = [n for n, o in zip(settings.objective_names, objectives, strict=True) if o is None]
    missing += [n for n, o in zip(settings.heldout_names, heldout, strict=True) if o is None]
    if missing:
        _logger.warning(
            "The run's objectives %s were given to run_bilevel_study as Python objects; this "
            "worker leaves their tasks to the process that started the run.",
            missing,
        )
    space = None
    if settings.space is not None:
        try:
            space = OuterSpace.from_config(settings.space)
        except ConfigurationError as err:
            _logger.warning("This worker starts no outer trial: %s", err)
    check_model(model, settings.policy())  # before this worker claims any task
    outer_sampler = settings.outer_sampler
    if outer_sampler is not None:
        outer.sampler = outer_sampler_named(
            outer_sampler, aggregate=settings.aggregate, seed=settings.seed, model=model
        )
    racing = OuterRacing(
        enabled=settings.prune and not settings.cost_objective,
        n_repeats=len(settings.seeds),
        n_objectives=len(settings.objective_names),
        reports=not settings.cost_objective,
    )
    outer.pruner = racing.pruner()
    runner = ArmRunner(
        storage=storage,
        run_name=run_name,
        n_inner_trials=settings.n_inner_trials,
        seeds=list(settings.seeds),
        model=model,
        progress=progress,
        progress_bar=show_progress_bar,
        policy=settings.policy(),
    )
    return RunWorker(
        settings=settings,
        storage=storage,
        run_name=run_name,
        outer=outer,
        objectives=objectives,
        heldout=heldout,
        runner=runner,
        racing=racing,
        space=space,
        outer_sampler=outer_sampler if outer_sampler != "llm" else outer.sampler,
        progress=progress,
        model_label=safe_model_spec(model) or "local",
    )
