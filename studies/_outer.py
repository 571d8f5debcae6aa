"""The outer study's trials: the Level-0 reference point, and how a trial is shown.

An outer trial is one proposer configuration; its repeats are claimed and run by the run's
workers (:mod:`bilevel_optuna.studies._worker`), which also race and settle it (``_settling``).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import optuna

from bilevel_optuna import _attrs
from bilevel_optuna import _optuna_private
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.samplers.mechanisms._loading import load_mechanism
from bilevel_optuna.samplers._presets import preset
from bilevel_optuna.studies._arms import arm_label
from bilevel_optuna.studies._config import OuterSpace
from bilevel_optuna.studies._config import ProposerConfig


def outer_line(trial: optuna.trial.FrozenTrial) -> str:
    """``outer trial 3 complete: cfg-d65f7017 (t=0.7 h=24 tabu) value 0.8123``, with the share of
    inner trials the base sampler proposed where it proposed any."""
    config = trial.user_attrs.get(_attrs.CONFIG)
    arm = str(trial.user_attrs.get(_attrs.ARM, ""))
    label = arm_label(arm, ProposerConfig.from_dict(config) if config else None)
    if trial.values:
        shown = " ".join(f"{v:.4g}" for v in trial.values)
    elif trial.intermediate_values:  # pruned: the last repeat's score
        last = trial.intermediate_values[max(trial.intermediate_values)]
        shown = f"{last:.4g} (after {len(trial.intermediate_values)} instances)"
    else:
        shown = "none"
    share = (trial.user_attrs.get(_attrs.SUMMARY) or {}).get("fallback_share")
    if share:  # the base sampler proposed some of its trials: say how many
        shown += f" ({share:.0%} of inner trials from the fallback)"
    return f"outer trial {trial.number} {trial.state.name.lower()}: {label} value {shown}"


def represents(space: OuterSpace, params: dict[str, Any], config: ProposerConfig) -> bool:
    """Whether ``params`` lie in ``space`` and suggest exactly ``config`` there."""
    for name, dist in space.distributions().items():
        if name not in params:
            return False
        if not _optuna_private.contains(dist, params[name]):
            return False
    try:
        return space.suggest(optuna.trial.FixedTrial(params)) == config
    except (ValueError, TypeError):
        return False


def enqueue_level0(study: optuna.Study, space: OuterSpace) -> None:
    """On a new outer study, the Level-0 configuration as the first trial: a reference point
    for the outer sampler, and free, since its inner studies are the llm-level0 baseline's."""
    enqueue_presets(study, space, ["level0"])


def _spelled_out(config: ProposerConfig, space: OuterSpace) -> ProposerConfig:
    """``config`` with each mechanism's unset parameters at their defaults: a preset names only
    the ones it changes, an outer trial suggests them all."""
    mechanisms = []
    for name, params in config.mechanisms:
        if name in space.mechanisms:
            params = {**load_mechanism(name, **params).params(), **params}
        mechanisms.append((name, params))
    return dataclasses.replace(config, mechanisms=tuple(mechanisms))


def check_presets(names: Sequence[str]) -> list[ProposerConfig]:
    """The named presets' configurations, or an error naming the valid presets."""
    try:
        return [ProposerConfig.from_dict(preset(name)) for name in names]
    except ValueError as err:
        raise ConfigurationError(f"start_from: {err}") from err


def enqueue_presets(study: optuna.Study, space: OuterSpace, names: Sequence[str]) -> None:
    """On a new outer study, the named presets of LLMSampler (``"level0"``, ``"default"``) as
    its first trials, in order: the loop starts from what ships, and every later configuration
    is judged against it. A preset the space cannot express is skipped; one other than
    Level 0 (which most spaces leave out on purpose) with a warning saying why."""
    configs = check_presets(names)
    if study.trials:
        return
    for name, config in zip(names, configs, strict=True):
        config = _spelled_out(config, space)
        params = space.params_of(config)
        if represents(space, params, config):
            reference = "llm-level0" if name == "level0" else f"preset {name}"
            study.enqueue_trial(params, user_attrs={_attrs.REFERENCE: reference})
        elif name != "level0":
            message = (
                f"The outer space cannot express LLMSampler's preset {name!r} "
                f"({config.describe()}), so the run does not start from it; widen the space "
                "to include its settings and mechanisms."
            )
            warnings.warn(message, stacklevel=3)
