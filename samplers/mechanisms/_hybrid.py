"""Hybrid: hand some trials (warm-up, a random share, the refinement phase) to another sampler."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution
from optuna.samplers import BaseSampler
from optuna.samplers import CmaEsSampler

from bilevel_optuna._checks import check_int
from bilevel_optuna._experimental import QMC_SAMPLER
from bilevel_optuna._experimental import experimental
from bilevel_optuna.samplers._state import cmaes_search_space
from bilevel_optuna.samplers.mechanisms._base import Mechanism
from bilevel_optuna.samplers.mechanisms._base import ProposalContext

_SAMPLERS = ("tpe", "random", "qmc")


class HybridMechanism(Mechanism):
    """Let TPE, random or quasi-random sampling propose some of the trials instead of the model.

    An LLM proposer is weakest where it has nothing to read (the first trials) and where small
    numeric steps matter (late refinement); a model-based or space-filling sampler is cheap and
    sound there. Hybrid LLM/BO schemes such as LLAMBO (Liu et al., "Large Language Models to
    Enhance Bayesian Optimization", ICLR 2024) and SLLMBO (Mahammadli and Ertekin, 2024) hand
    phases of the search to TPE for that reason. ``prepare`` takes a trial over (sets
    ``context.params``) when any of these holds:

    - warm-up: the trial's number is below ``n_warmup``;
    - share: a draw seeded by the trial's number falls below ``fraction``;
    - refinement: the trial's number is at least ``refine_after`` (``0`` never).

    Sampler state: no sampler object is kept between trials. ``"tpe"`` builds an
    :class:`optuna.samplers.TPESampler` per trial, seeded from ``(seed, trial number)``: TPE
    holds nothing but its random generator and reads the history from the study's storage, so
    a fresh seeded instance gives the same proposal in every process and in RDB studies, and
    threads never share one. It is called as Optuna calls a sampler:
    ``sample_relative(study, trial, search_space)`` over the sampler's search space (multivariate
    TPE, Optuna 5's default for one objective), then ``sample_independent`` for any parameter
    left (all of them during TPE's random start-up of 10 trials). ``"random"`` is a
    :class:`optuna.samplers.RandomSampler` seeded the same way. ``"qmc"`` is a scrambled Sobol
    :class:`optuna.samplers.QMCSampler` whose seed must be the same for the whole study (one
    sequence); its position in the sequence is the counter QMCSampler keeps in the study's
    system attributes, so it too lives in the storage.

    Args:
        sampler: ``"tpe"``, ``"random"`` or ``"qmc"``.
        n_warmup: Trials, from number 0, handed over for warm-up.
        fraction: Share of the later trials handed over, drawn per trial.
        refine_after: From this trial number on every trial is handed over; ``0`` never.
        seed: Seed of the draws and the sampler. ``None`` derives the draws and TPE's or random's
            seed from the trial's seeded generator (so from the LLMSampler's seed), and QMC's
            from the study's name.
    """

    name = "hybrid"
    version = "1"
    trusted = True
    #: The samplers this class builds (a subclass that builds more widens it).
    samplers: tuple[str, ...] = _SAMPLERS

    def __init__(
        self,
        *,
        sampler: str = "tpe",
        n_warmup: int = 5,
        fraction: float = 0.0,
        refine_after: int = 0,
        seed: int | None = None,
    ) -> None:
        if sampler not in self.samplers:
            raise ValueError(f"sampler must be one of {self.samplers} but got {sampler!r}.")
        check_int("n_warmup", n_warmup)
        check_int("refine_after", refine_after)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be between 0 and 1 but got {fraction}.")
        check_int("seed", seed, allow_none=True)
        if sampler == "qmc":
            # QMCSampler imports scipy.stats.qmc on first use: do it now, not inside a hook
            # where a slow first import could overrun the sampler's hook_timeout.
            import scipy.stats.qmc  # noqa: F401

        self.sampler = sampler
        self.n_warmup = int(n_warmup)
        self.fraction = float(fraction)
        self.refine_after = int(refine_after)
        self.seed = seed

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:
        return {
            "sampler": CategoricalDistribution(list(_SAMPLERS)),
            "n_warmup": IntDistribution(0, 20),
            "fraction": FloatDistribution(0.0, 0.5),
            "refine_after": IntDistribution(0, 100),
        }

    def reason(self, context: ProposalContext, draw: float) -> str | None:
        """Why this trial is handed over (``"warmup"``, ``"fraction"``, ``"refine"``), or None."""
        number = context.trial.number
        if number < self.n_warmup:
            return "warmup"
        if self.refine_after > 0 and number >= self.refine_after:
            return "refine"
        if draw < self.fraction:
            return "fraction"
        return None

    def _trial_seed(self, context: ProposalContext) -> int:
        if self.seed is None:
            return int(context.rng.integers(2**31))
        seq = np.random.SeedSequence([self.seed, context.trial.number])
        return int(seq.generate_state(1)[0] >> 1)

    def build_sampler(self, context: ProposalContext, seed: int) -> BaseSampler:
        if self.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=seed)
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        study_seed = self.seed
        if study_seed is None:
            study_seed = zlib.crc32(context.study.study_name.encode("utf-8"))
        with experimental(QMC_SAMPLER):  # the mechanism's choice, not the user's: no warning
            return optuna.samplers.QMCSampler(
                qmc_type="sobol",
                scramble=True,
                seed=study_seed,
                warn_independent_sampling=False,
            )

    def prepare(self, context: ProposalContext) -> None:
        seed = self._trial_seed(context)
        draw = float(np.random.default_rng(seed).random())
        reason = self.reason(context, draw)
        record = context.record.setdefault(self.name, {})
        record["reason"] = reason
        if reason is None:
            return
        context.params = self.sample(context, self.build_sampler(context, seed))
        record["sampler"] = self.sampler

    @staticmethod
    def sample(context: ProposalContext, sampler: BaseSampler) -> dict[str, Any]:
        """Ask ``sampler`` for this trial's parameters, as Optuna would: ``sample_relative`` over
        the search space (its numeric part for CMA-ES), then ``sample_independent`` for what it
        left out."""
        space = dict(context.search_space)
        relative = cmaes_search_space(space) if isinstance(sampler, CmaEsSampler) else space
        params: dict[str, Any] = dict(
            sampler.sample_relative(context.study, context.trial, relative)
        )
        for name, dist in space.items():
            if name not in params:
                params[name] = sampler.sample_independent(context.study, context.trial, name, dist)
        return {name: params[name] for name in space}
