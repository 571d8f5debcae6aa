"""Joining a bilevel run from the storage alone: what ``bilevel-optuna worker`` calls."""

from __future__ import annotations

from collections.abc import Callable

from optuna.storages import BaseStorage

from bilevel_optuna._logging import get_logger
from bilevel_optuna._storage import open_storage
from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.studies._arms import ArmRunner
from bilevel_optuna.studies._bilevel import outer_sampler_named
from bilevel_optuna.studies._config import OuterSpace
from bilevel_optuna.studies._racing import OuterRacing
from bilevel_optuna.studies._settings import load_settings
from bilevel_optuna.studies._settings import safe_model_spec
from bilevel_optuna.studies._spend import check_model
from bilevel_optuna.studies._worker import RunWorker

_logger = get_logger(__name__)


def _register_generated(storage: BaseStorage, run_name: str) -> list[str]:
    """Register the run's accepted generated mechanisms (Level 2), if it has any."""
    import optuna

    from bilevel_optuna import _attrs

    name = run_name + _attrs.RESEARCH_SUFFIX
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    names = {s.study_name for s in summaries}
    if name not in names:
        return []
    from bilevel_optuna.research import register_stored_mechanisms

    return register_stored_mechanisms(storage, run_name)


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
        RunFailed: A task failed (its objective raised).
        ChatModelError: The model's endpoint is down, refuses the key or does not serve the
            model (checked before any task, unless the run says ``on_model_error="fallback"``).
    """
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        from pathlib import Path

        path = storage[len("sqlite:///"):].split("?")[0]
        if not Path(path).exists():
            raise ConfigurationError(
                f"No SQLite file at {path!r}: a worker joins a run that exists. Check the path, "
                "or start the run first with `bilevel-optuna run SPEC --storage URL`."
            )
    storage_obj = open_storage(storage, heartbeat=True)
    outer, settings = load_settings(storage_obj, run_name)
    generated = _register_generated(storage_obj, run_name)
    if generated:
        _logger.info("Registered the run's generated mechanisms: %s", generated)
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
    chosen_model = model if model is not None else settings.model
    check_model(chosen_model, settings.policy())  # before this worker claims any task
    outer_sampler = settings.outer_sampler
    if outer_sampler is not None:
        outer.sampler = outer_sampler_named(
            outer_sampler, aggregate=settings.aggregate, seed=settings.seed, model=chosen_model
        )
    racing = OuterRacing(
        enabled=settings.prune and not settings.cost_objective,
        n_repeats=len(settings.seeds),
        n_objectives=len(settings.objective_names),
        reports=not settings.cost_objective,
    )
    outer.pruner = racing.pruner()
    say = progress or (lambda message: None)
    runner = ArmRunner(
        storage=storage_obj,
        run_name=run_name,
        n_inner_trials=settings.n_inner_trials,
        seeds=list(settings.seeds),
        model=chosen_model,
        progress=say,
        progress_bar=show_progress_bar,
        policy=settings.policy(),
    )
    worker = RunWorker(
        settings=settings,
        storage=storage_obj,
        run_name=run_name,
        outer=outer,
        objectives=objectives,
        heldout=heldout,
        runner=runner,
        racing=racing,
        space=space,
        outer_sampler=outer_sampler if outer_sampler != "llm" else outer.sampler,
        progress=say,
        model_label=safe_model_spec(chosen_model) or "local",
    )
    return worker.work()
