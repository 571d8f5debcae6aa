"""The benchmarks' arms: an arm's name to its sampler, one definition for every runner.

The mechanism floor, the held-out benchmark and the classical-state benchmark name the same
arms; the runners take their samplers from here, so an arm means one thing in every table.
"""

from __future__ import annotations

import os
from typing import Any

import optuna

from bilevel_optuna.samplers.mechanisms._loading import builtin_mechanism_names


#: One arm per built-in mechanism: Level 0 with that mechanism alone.
MECHANISM_ARMS = builtin_mechanism_names()
#: The default with CMA-ES in control (``cl-cmaes``), plus CMA-ES's state beside the history
#: (``cl-cmaes+state``: Centaur's setup), or TPE's state (``default+state``).
STATE_ARMS = ["cl-cmaes", "cl-cmaes+state", "default+state"]


def chat_model(threads: int = 1) -> Any:
    """The benchmarks' chat model: ``$BILEVEL_OPTUNA_CHAT_MODEL`` (tests name a double), else the
    embedded model on ``threads`` threads (one: jobs run side by side)."""
    model: Any = os.environ.get("BILEVEL_OPTUNA_CHAT_MODEL")
    if not model:
        from bilevel_optuna.chat._local import LocalChatModel

        model = LocalChatModel(n_threads=threads)
    return model


def make_sampler(
    arm: str, seed: int, objective: Any, threads: int = 1
) -> optuna.samplers.BaseSampler:
    """The sampler of a mechanism-floor or held-out arm, seeded by the cell's seed.

    ``llm`` is Level 0; each mechanism arm is Level 0 with that one mechanism, so its effect is
    the mechanism's; ``default`` is what ``LLMSampler()`` gives; ``tpe``, ``random``, ``gp`` and
    ``cmaes`` are Optuna's samplers alone; the state arms are :func:`classical_state_sampler`'s.
    """
    if arm == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if arm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if arm == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if arm == "cmaes":  # needs the `cmaes` package; categorical parameters go to random search
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if arm in STATE_ARMS:
        return classical_state_sampler(arm, seed, objective)
    from bilevel_optuna.samplers import LLMSampler

    kwargs: dict[str, Any] = {"preset": "default" if arm == "default" else "level0"}
    mechanisms: list[Any] | None = None if arm == "default" else []
    if arm == "candidate_choice":
        kwargs["n_candidates"] = 3  # its `choose` hook needs candidates to choose from
    if arm in MECHANISM_ARMS:
        assert mechanisms is not None
        mechanisms.append(arm)
    return LLMSampler(
        model=chat_model(threads),
        description=objective.description,
        search_space=objective.search_space,
        mechanisms=mechanisms,
        seed=seed,
        **kwargs,
    )


def classical_state_sampler(arm: str, seed: int, objective: Any) -> optuna.samplers.BaseSampler:
    """The sampler of a classical-state arm (issue 24 item 2), or of its baselines.

    ``tpe``, ``cmaes`` and ``random`` are the study arms' own; ``default`` is the shipped preset;
    ``cl-cmaes`` puts CMA-ES in control in its ``classical`` mechanism; ``+state`` adds the
    optimizer's state (CMA-ES's, or TPE's for ``default+state``) beside the history.
    """
    from bilevel_optuna.samplers._presets import preset
    from bilevel_optuna.studies._arms import make_sampler as study_arm_sampler

    if arm in ("tpe", "cmaes", "random"):
        return study_arm_sampler(arm, seed=seed)
    mechanisms = preset("default")["mechanisms"]
    if arm.startswith("cl-cmaes"):
        mechanisms = [
            (n, {**p, "sampler": "cmaes"}) if n == "classical" else (n, p) for n, p in mechanisms
        ]
    state = None
    if arm.endswith("+state"):
        state = "cmaes" if arm.startswith("cl-cmaes") else "tpe"
    return study_arm_sampler(
        "llm",
        seed=seed,
        model=chat_model(),
        description=objective.description,
        search_space=objective.search_space,
        mechanisms=mechanisms,
        optimizer_state=state,
    )
