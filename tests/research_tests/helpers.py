"""Run one hook of a source in a guarded process, with the layers a test chooses."""

from __future__ import annotations

import numpy as np

from bilevel_optuna.research._check import smoke_study
from bilevel_optuna.research._proxy import guarded_class
from bilevel_optuna.research._proxy import GuardedHookError
from bilevel_optuna.research._proxy import GuardedMechanism
from bilevel_optuna.research._sandbox import Layers
from bilevel_optuna.research._sandbox import Limits
from bilevel_optuna.samplers.mechanisms._loading import source_hash
from bilevel_optuna.samplers.mechanisms._base import ProposalContext


def proxy(source: str, layers: Layers, limits: Limits | None = None) -> GuardedMechanism:
    cls = guarded_class(
        source,
        name="under_test",
        hooks=["prepare"],
        space={},
        sha256=source_hash(source),
        limits=limits or Limits(),
        layers=layers,
    )
    return cls()


def context() -> ProposalContext:
    study = smoke_study()
    trials = study.get_trials(deepcopy=False)
    return ProposalContext(
        study=study,
        trial=trials[-1],
        search_space=dict(trials[0].distributions),
        trials=trials,
        minimize=True,
        history=[t for t in trials if t.value is not None],
        notes=[],
        rng=np.random.default_rng(0),
    )


def prepare_once(
    source: str, layers: Layers, limits: Limits | None = None
) -> tuple[ProposalContext, str | None]:
    """Call ``prepare`` once; return the context and the error text (``None`` if it ran)."""
    mechanism = proxy(source, layers, limits)
    ctx = context()
    try:
        mechanism.prepare(ctx)
        return ctx, None
    except GuardedHookError as err:
        return ctx, str(err)
    finally:
        mechanism.close()
