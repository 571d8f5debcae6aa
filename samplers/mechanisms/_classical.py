"""Classical sampler in control: TPE or CMA-ES runs the study and the model proposes a share."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution
from optuna.samplers import BaseSampler

from bilevel_optuna._checks import check_int
from bilevel_optuna.samplers._prompt import format_params
from bilevel_optuna.samplers._state import make_cmaes_sampler
from bilevel_optuna.samplers.mechanisms._base import ProposalContext
from bilevel_optuna.samplers.mechanisms._base import Review
from bilevel_optuna.samplers.mechanisms._geometry import distance_matrix
from bilevel_optuna.samplers.mechanisms._geometry import encode
from bilevel_optuna.samplers.mechanisms._hybrid import HybridMechanism

_SAMPLERS = ("tpe", "random", "qmc", "cmaes")
_ROLES = ("propose", "pick")


class ClassicalMechanism(HybridMechanism):
    """A classical Optuna sampler runs the study; the model proposes some of the trials.

    No published model under 1B parameters beats TPE on its own; the one sub-1B result that
    ties it (Centaur: Ferreira, Hutter, Zela et al., arXiv 2603.24647) keeps CMA-ES in control
    and lets a 0.8B model propose 30% of the trials. This mechanism does the same inside
    LLMSampler. For each trial, in order:

    - warm start: trials numbered below ``n_start`` are the model's, in place of the classical
      sampler's random start-up (TPE's start-up is shortened to ``n_start`` trials, so it models
      the model's trials at once);
    - share: of the later trials, a seeded draw gives a ``share`` of them to the model;
    - every other trial is taken over by the classical sampler (``sampler``: ``"tpe"``,
      ``"random"``, ``"qmc"`` or ``"cmaes"``, built per trial as :class:`HybridMechanism` builds
      it, so its state lives in the storage).

    ``"cmaes"`` is Optuna's :class:`~optuna.samplers.CmaEsSampler` (Centaur's choice), whose
    optimizer is pickled into the trials' system attributes. It models the numeric parameters
    only; categorical ones go to its independent sampler, here a seeded TPE (univariate, with
    the same start-up as ``"tpe"``), which learns from the history where random search would
    not. CMA-ES is asked on the model's trials too and its answer dropped: each such trial joins
    CMA-ES's current generation, so the model's proposal is told to CMA-ES with the others
    (Centaur's proposals, like any injected solution, move its mean and covariance). Its
    start-up is one trial: the model's warm start is its first population.

    On the model's trials, ``role`` says what the model does: ``"propose"`` (it writes a
    configuration, as without the mechanism) or ``"pick"`` (the classical sampler draws
    ``n_pick`` candidates, the prompt lists them, and the model's answer is replaced by the
    nearest of them: the model chooses, the sampler proposes; LLAMBO's candidate-sampling
    role, Liu et al., ICLR 2024).

    The share of trials the model proposes is recorded per trial (``record["by"]``:
    ``"model"`` or ``"sampler"``), so a study says who proposed what.

    Args:
        sampler: The classical sampler in control.
        share: Share of the trials after the warm start that the model proposes.
        n_start: Trials, from number 0, that the model proposes first.
        role: ``"propose"`` or ``"pick"``.
        n_pick: Candidates the classical sampler offers per trial when ``role="pick"``.
        seed: Seed of the draws and the sampler (``None``: from the trial's seeded generator,
            so from the LLMSampler's seed).
    """

    name = "classical"
    version = "1"
    trusted = True
    samplers = _SAMPLERS

    def __init__(
        self,
        *,
        sampler: str = "tpe",
        share: float = 0.3,
        n_start: int = 5,
        role: str = "propose",
        n_pick: int = 4,
        seed: int | None = None,
    ) -> None:
        if sampler not in _SAMPLERS:
            raise ValueError(f"sampler must be one of {_SAMPLERS} but got {sampler!r}.")
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be between 0 and 1 but got {share}.")
        if role not in _ROLES:
            raise ValueError(f"role must be one of {_ROLES} but got {role!r}.")
        super().__init__(sampler=sampler, n_warmup=0, fraction=0.0, seed=seed)
        self.share = float(share)
        self.n_start = check_int("n_start", n_start)
        self.role = role
        self.n_pick = check_int("n_pick", n_pick, minimum=2)

    @classmethod
    def search_space(cls) -> dict[str, BaseDistribution]:
        return {
            "sampler": CategoricalDistribution(list(_SAMPLERS)),
            "share": FloatDistribution(0.0, 1.0),
            "n_start": IntDistribution(0, 10),
            "role": CategoricalDistribution(list(_ROLES)),
            "n_pick": IntDistribution(2, 8),
        }

    def build_sampler(self, context: ProposalContext, seed: int) -> BaseSampler:
        if self.sampler in ("tpe", "cmaes"):
            # The model's warm start stands in for TPE's random start-up.
            tpe = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(self.n_start, 1))
            return tpe if self.sampler == "tpe" else make_cmaes_sampler(seed, tpe)
        return super().build_sampler(context, seed)

    def turn(self, context: ProposalContext, draw: float) -> str:
        """Whose trial this is: ``"model"`` or ``"sampler"``."""
        if context.trial.number < self.n_start:
            return "model"
        return "model" if draw < self.share else "sampler"

    def prepare(self, context: ProposalContext) -> None:
        seed = self._trial_seed(context)
        draw = float(np.random.default_rng(seed).random())
        by = self.turn(context, draw)
        record = context.record.setdefault(self.name, {})
        record["by"] = by
        if by == "sampler":
            context.params = self.sample(context, self.build_sampler(context, seed))
            return
        if self.sampler == "cmaes" and self.role != "pick":
            # The trial joins CMA-ES's generation; the model's proposal is what it is told.
            self.sample(context, self.build_sampler(context, seed))
        if self.role != "pick":
            return
        picks = []
        for i in range(self.n_pick):
            sub = int(np.random.SeedSequence([seed, i]).generate_state(1)[0] >> 1)
            params = self.sample(context, self.build_sampler(context, sub))
            if params not in picks:
                picks.append(params)
        record["picks"] = picks
        names = list(context.search_space)
        listed = "; ".join(f"{i + 1}) {format_params(p, names)}" for i, p in enumerate(picks))
        context.notes.append(
            f"Choose the most promising of these candidates and answer with it: {listed}."
        )

    def review(self, candidate: dict[str, Any], context: ProposalContext) -> Review:
        record = context.record.get(self.name, {})
        picks = record.get("picks")
        if not picks or candidate in picks:
            if picks:
                record["picked"] = picks.index(candidate)
            return Review.accept()
        space = context.search_space
        d = distance_matrix(encode([candidate], space), encode(picks, space), space)[0]
        nearest = int(np.argmin(d))
        record["picked"] = nearest
        return Review.replace(
            picks[nearest], reason=f"snapped to the nearest offered candidate {nearest + 1}"
        )


# The name before 0.2 (deprecated with a warning in bilevel_optuna.samplers).
ClassicalControlMechanism = ClassicalMechanism
