"""The arms of a bilevel run: their names, the one sampler factory, and running an arm's study.

An arm is a group of inner studies run the same way: a baseline sampler (``random``, ``tpe``,
``cmaes``, ``gp``), the Level-0 proposer (``llm-level0``) or one proposer configuration
(``cfg-<hash>``).
Every sampler the package builds by name comes from :func:`make_sampler`, so a baseline is the
same in the bilevel run, a single-study spec and the outer study.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage

from bilevel_optuna import _attrs
from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.objectives._base import Objective
from bilevel_optuna.samplers import LLMSampler
from bilevel_optuna.studies._config import LEVEL0
from bilevel_optuna.studies._config import ProposerConfig
from bilevel_optuna.studies._inner import InnerResult
from bilevel_optuna.studies._inner import run_inner_study
from bilevel_optuna.studies._spend import ModelPolicy
from bilevel_optuna.studies._spend import run_spend
from bilevel_optuna.studies._spend import total

#: Samplers :func:`make_sampler` builds by name.
SAMPLERS = ("random", "tpe", "cmaes", "gp", "llm")
#: Baseline arms a bilevel run accepts.
BASELINE_CHOICES = ("random", "tpe", "cmaes", "gp", "llm-level0")
#: Arms that are a plain Optuna sampler.
CLASSICAL_ARMS = ("random", "tpe", "cmaes", "gp")
#: Baseline arms run by default. GP is opt-in: on 2 CPU cores it costs seconds per trial where
#: TPE costs milliseconds (BENCHMARKS.md, "GP baseline"), and it needs torch.
BASELINES = ("random", "tpe", "llm-level0")
LEVEL0_ARM = "llm-level0"

Progress = Callable[[str], None]


def make_sampler(
    name: str,
    *,
    seed: int | None,
    model: ChatModel | str | None = None,
    description: str = "",
    search_space: dict[str, Any] | None = None,
    **llm_settings: Any,
) -> BaseSampler:
    """The sampler called ``name``, seeded.

    ``"random"``, ``"tpe"`` (Optuna 5's defaults: multivariate, constant liar), ``"cmaes"``
    (Optuna's CmaEsSampler, its defaults: categorical parameters go to its RandomSampler, here
    without its warning on every trial), ``"gp"`` (Optuna's GPSampler, its defaults) or
    ``"llm"`` (:class:`LLMSampler` with ``model``, ``description``, ``search_space`` and
    ``llm_settings``).
    """
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        try:
            import torch  # noqa: F401 - GPSampler imports it lazily, at the first trial
        except ImportError as err:
            raise ConfigurationError(
                "The 'gp' sampler is Optuna's GPSampler, which needs torch: pip install torch."
            ) from err
        return optuna.samplers.GPSampler(seed=seed)
    if name == "llm":
        return LLMSampler(
            model=model,
            description=description,
            search_space=search_space or None,
            seed=seed,
            **llm_settings,
        )
    raise ConfigurationError(f"sampler must be one of {SAMPLERS} but got {name!r}.")


def sampler_pin(name: str, seed: int | None) -> str | None:
    """What a baseline's settings are, written beside its studies (Optuna's defaults drift)."""
    if name == "tpe":
        return f"TPESampler(seed={seed}) with optuna {optuna.__version__} defaults"
    if name == "cmaes":
        return f"CmaEsSampler(seed={seed}) with optuna {optuna.__version__} defaults"
    if name == "gp":
        return f"GPSampler(seed={seed}) with optuna {optuna.__version__} defaults"
    return None


def arm_of(config: ProposerConfig) -> str:
    """The arm name of a proposer configuration (stored: its studies are named after it)."""
    return LEVEL0_ARM if config == LEVEL0 else f"cfg-{config.key()}"


def arm_label(arm: str, config: ProposerConfig | None = None) -> str:
    """The arm name with what its configuration is, for people: ``cfg-d65f7017 (t=0.7 h=24
    tabu+orth)``. Baselines and arms without a configuration are their name."""
    if config is None or not arm.startswith("cfg-"):
        return arm
    return f"{arm} ({config.describe()})"


def check_baselines(baselines: Sequence[str]) -> list[str]:
    """``baselines`` as a list, or an error naming the unknown ones."""
    unknown = sorted(set(baselines) - set(BASELINE_CHOICES))
    if unknown:
        raise ConfigurationError(
            f"Unknown baselines {unknown}; valid ones are {list(BASELINE_CHOICES)}."
        )
    return list(baselines)


class ArmRunner:
    """Runs (or reads back) one inner study of an arm, named and labelled in the storage."""

    def __init__(
        self,
        *,
        storage: BaseStorage,
        run_name: str,
        n_inner_trials: int,
        seeds: list[int],
        model: ChatModel | str | None,
        progress: Progress | None = None,
        progress_bar: bool = False,
        callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
        policy: ModelPolicy | None = None,
    ) -> None:
        self.storage = storage
        self.policy = policy or ModelPolicy()
        self.run_name = run_name
        self.n_inner_trials = n_inner_trials
        self.seeds = seeds
        self.model = model
        self.progress: Progress = progress or (lambda message: None)
        self.progress_bar = progress_bar
        self.callbacks = list(callbacks)

    def study_name(self, arm: str, objective: Objective, seed: int) -> str:
        return self.study_name_of(arm, objective.name, seed)

    def study_name_of(self, arm: str, objective_name: str, seed: int) -> str:
        """``<run>/<arm>/<objective>/seed-<seed>``: the inner study, and its task's key."""
        return f"{self.run_name}/{arm}/{objective_name}/seed-{seed}"

    def sampler_for(
        self, arm: str, objective: Objective, seed: int, config: ProposerConfig | None
    ) -> BaseSampler:
        if arm in CLASSICAL_ARMS:
            return make_sampler(arm, seed=seed)
        assert config is not None
        spent_elsewhere = None
        if self.policy.capped:  # the run's cap, less what its other studies spent
            name = self.study_name(arm, objective, seed)
            spent_elsewhere = total(run_spend(self.storage, self.run_name), excluding=name)
        return make_sampler(
            "llm",
            seed=seed,
            model=self.model,
            description=objective.description,
            search_space=objective.search_space,
            **config.sampler_kwargs(),
            **self.policy.sampler_kwargs(spent_elsewhere),
        )

    def attrs(
        self,
        arm: str,
        objective: Objective,
        seed: int,
        *,
        kind: str,
        config: ProposerConfig | None,
        outer_trial: int | None,
    ) -> dict[str, Any]:
        """The study user attributes of the storage data model (README, "Storage data model")."""
        # The role first: the dashboard lists study attributes in the order they were set.
        role = self.role(arm, objective.name, seed, kind=kind, outer_trial=outer_trial)
        attrs: dict[str, Any] = {_attrs.ROLE: role} if role is not None else {}
        attrs |= {
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
            attrs[_attrs.OUTER_TRIAL] = int(outer_trial)
        pin = sampler_pin(arm, seed)
        if pin is not None:
            attrs[_attrs.SAMPLER] = pin
        return attrs

    def role(
        self, arm: str, objective_name: str, seed: int, *, kind: str, outer_trial: int | None
    ) -> str | None:
        """What the study is, in words, for the dashboard's study list (``bilevel:role``).

        None for the best configuration's training studies queued again at the end: they are
        its outer trial's studies, and keep the role that trial gave them.
        """
        repeat = (
            f"repeat {self.seeds.index(seed) + 1} of {len(self.seeds)}"
            if seed in self.seeds
            else f"seed {seed}"
        )
        if kind == "baseline":
            return f"baseline {arm} on {objective_name}, {repeat}"
        if kind == "heldout":
            return f"held-out check of the chosen {arm} on {objective_name}, seed {seed}"
        if outer_trial is None:
            return None
        return f"inner study of outer trial {outer_trial} ({arm}) on {objective_name}, {repeat}"

    def run(
        self,
        arm: str,
        objective: Objective,
        seed: int,
        *,
        kind: str,
        config: ProposerConfig | None = None,
        outer_trial: int | None = None,
        guard: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
        worker: str | None = None,
    ) -> InnerResult:
        """Run the arm's study on ``objective`` with ``seed`` until it has every trial.

        ``guard`` is called after each trial (a worker stops the study there when it lost its
        claim); ``worker`` is written on each trial it runs (``bilevel:worker``).
        """
        start = time.perf_counter()
        result = run_inner_study(
            storage=self.storage,
            study_name=self.study_name(arm, objective, seed),
            objective=objective,
            sampler=self.sampler_for(arm, objective, seed, config),
            n_trials=self.n_inner_trials,
            user_attrs=self.attrs(
                arm, objective, seed, kind=kind, config=config, outer_trial=outer_trial
            ),
            progress_bar=self.progress_bar,
            callbacks=self.callbacks + ([guard] if guard is not None else []),
            worker=worker,
        )
        if result.n_new:  # not when finished before (a rerun): nothing new to say
            shown = "regret" if objective.optimum is not None else "best"
            value = result.regret if objective.optimum is not None else result.best_value
            self.progress(
                f"{arm_label(arm, config)} {objective.name} seed {seed}: {shown} {value:.4g} "
                f"({result.n_complete} trials, {time.perf_counter() - start:.1f} s)"
            )
        return result

    def run_baselines(
        self, baselines: Sequence[str], objectives: Sequence[Objective], seeds: Sequence[int]
    ) -> dict[str, dict[str, list[InnerResult]]]:
        """``{arm: {objective: [result per seed]}}`` for every baseline arm."""
        return {
            arm: {
                objective.name: [
                    self.run(
                        arm,
                        objective,
                        seed,
                        kind="baseline",
                        config=LEVEL0 if arm == LEVEL0_ARM else None,
                    )
                    for seed in seeds
                ]
                for objective in objectives
            }
            for arm in baselines
        }
