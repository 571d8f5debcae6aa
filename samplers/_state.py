"""A classical optimizer's state, read from the study and written for the model's prompt.

Centaur (Ferreira, Hutter, Zela et al., arXiv 2603.24647) is the one sub-1B result level with
TPE: a 0.8B model shown CMA-ES's mean, step size and covariance beside the top trials. This
module gives the prompt the same: CMA-ES's search distribution, or TPE's good/bad split and its
best candidates by the density ratio l(x)/g(x), in the parameters' own names and units.

Both are read through Optuna's samplers, not re-implemented, so what the model reads is what
the sampler would use. Optuna has no public API for either, so the private names each relies on
are read through ``bilevel_optuna/_optuna_private.py``; a change in Optuna breaks that adapter
and its tests, with an error that says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.samplers import CmaEsSampler
from optuna.samplers import TPESampler
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from bilevel_optuna import _optuna_private
from bilevel_optuna.samplers._prompt import format_params
from bilevel_optuna.samplers._prompt import format_value

if TYPE_CHECKING:
    from optuna import Study

#: What a prompt may carry: the state of CMA-ES or of TPE.
OPTIMIZER_STATES = ("cmaes", "tpe")
#: ``"beside"``: the state follows the history window; ``"instead"``: it replaces the window,
#: and only the best :data:`INSTEAD_TOP` trials are shown with it (Centaur's prompt).
STATE_MODES = ("beside", "instead")
INSTEAD_TOP = 3

#: Caps that keep the state block short: parameters listed, correlations named (only those of
#: at least :data:`MIN_CORRELATION` in size), TPE candidates shown.
MAX_STATE_PARAMS = 12
MAX_CORRELATIONS = 3
MIN_CORRELATION = 0.3
N_TPE_CANDIDATES = 2
#: Candidates TPE draws from l(x) to rank by l(x)/g(x) (TPESampler's ``n_ei_candidates``).
N_TPE_DRAWS = 24
#: Completed trials before TPE's split says anything (one good trial of three).
MIN_TPE_TRIALS = 3

#: CmaEsSampler's key of the generation a trial was asked in (its ``_attr_prefix``
#: ``"cma:"`` plus ``"generation"``); a trial that holds it is one of CMA-ES's population.
CMA_GENERATION_KEY = "cma:generation"


def cmaes_search_space(space: Mapping[str, BaseDistribution]) -> dict[str, BaseDistribution]:
    """The parameters CMA-ES models: the numeric ones of more than one value, in order.

    CmaEsSampler leaves categorical parameters to its independent sampler.
    """
    return {
        name: dist
        for name, dist in space.items()
        if not isinstance(dist, CategoricalDistribution) and not dist.single()
    }


def make_cmaes_sampler(seed: int, independent_sampler: BaseSampler | None = None) -> CmaEsSampler:
    """The CmaEsSampler that runs in control and the one whose state the prompt reads: one
    configuration, so both read and write the same optimizer in the storage (``cma:`` keys).

    Categorical parameters go to ``independent_sampler`` (seeded random by default), without
    CmaEsSampler's warning on every trial: leaving them to it is the intended behaviour.
    """
    return CmaEsSampler(
        seed=seed,
        n_startup_trials=1,
        independent_sampler=independent_sampler or optuna.samplers.RandomSampler(seed=seed),
        warn_independent_sampling=False,
    )


# --------------------------------------------------------------------------- CMA-ES


@dataclasses.dataclass(frozen=True)
class CmaesState:
    """CMA-ES's search distribution N(mean, sigma^2 C), in the parameters' units.

    Attributes:
        mean: The distribution's centre, per parameter (rounded as the sampler rounds it).
        low, high: Where one standard deviation either side of the centre falls, per parameter
            (clipped to the range; geometric for log-scale parameters).
        sigma: The step size, in units of each parameter's range (its log range for log-scale
            parameters): CMA-ES works on the unit cube.
        std: Per-parameter standard deviation on the unit cube, ``sigma * sqrt(C_ii)``.
        correlations: ``(a, b, r)`` for the strongest correlations of C, strongest first.
        generation: Generations CMA-ES has finished (at least one).
        population_size: Trials per generation.
        cov: The covariance matrix C, on the unit cube.
    """

    mean: dict[str, Any]
    low: dict[str, Any]
    high: dict[str, Any]
    sigma: float
    std: dict[str, float]
    correlations: list[tuple[str, str, float]]
    generation: int
    population_size: int
    cov: np.ndarray = dataclasses.field(repr=False)


def read_cmaes_state(
    study: "Study",
    trial: FrozenTrial,
    search_space: Mapping[str, BaseDistribution],
    *,
    seed: int,
) -> CmaesState | None:
    """CMA-ES's state for ``trial``, keeping a CMA-ES beside the model if none runs yet.

    If ``trial`` is not yet one of CMA-ES's population (no ``cma:generation``), CmaEsSampler is
    asked for it once and its answer dropped: the trial joins the current generation, so
    whatever is evaluated on it (the model's proposal) is told to CMA-ES when the generation is
    full, and the optimizer the storage holds moves on. The state is then the newest optimizer
    stored on this trial or a finished one. ``None`` when CMA-ES has nothing to show: fewer
    than two numeric parameters (CmaEsSampler falls back to its independent sampler there), no
    generation finished yet (its distribution is still the one it starts from: the centre of
    the space), or a space of another dimension than the stored optimizer's.

    Relies on Optuna's privates (Optuna 5.0 and 5.1; read in ``_optuna_private``):
    ``CmaEsSampler._restore_optimizer``
    (unpickles the optimizer it stores in trial system attributes, in chunks ``cma:optimizer:i``)
    and ``optuna._transform._SearchSpaceTransform`` (CmaEsSampler's map to the unit cube); and
    on the ``cmaes`` package's ``CMA._sigma`` and ``CMA._C`` (the step size and covariance;
    ``mean``, ``generation`` and ``population_size`` are public).
    """
    space = cmaes_search_space(search_space)
    if len(space) < 2:
        return None
    sampler = make_cmaes_sampler(seed)
    if CMA_GENERATION_KEY not in trial.system_attrs:
        sampler.sample_relative(study, trial, space)
    # The optimizer a tell just stored lives on this (running) trial: read it fresh.
    current = _optuna_private.storage_of(study).get_trial(_optuna_private.trial_id_of(trial))
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.number != trial.number
    ]
    optimizer = _optuna_private.restore_cmaes_optimizer(sampler, complete + [current])
    if optimizer is None or optimizer.dim != len(space):
        return None
    trans = _optuna_private.search_space_transform(space)
    mean = np.asarray(optimizer.mean, dtype=float)
    sigma, cov = _optuna_private.cmaes_step_size_and_covariance(optimizer)
    std = sigma * np.sqrt(np.clip(np.diag(cov), 0.0, None))
    lower = np.clip(mean - std, trans.bounds[:, 0], trans.bounds[:, 1])
    upper = np.clip(mean + std, trans.bounds[:, 0], trans.bounds[:, 1])
    names = list(space)
    return CmaesState(
        mean=trans.untransform(np.clip(mean, trans.bounds[:, 0], trans.bounds[:, 1])),
        low=trans.untransform(lower),
        high=trans.untransform(upper),
        sigma=sigma,
        std={n: float(s) for n, s in zip(names, std)},
        correlations=_strongest_correlations(names, cov),
        generation=int(optimizer.generation),
        population_size=int(optimizer.population_size),
        cov=cov,
    )


def _strongest_correlations(names: Sequence[str], cov: np.ndarray) -> list[tuple[str, str, float]]:
    d = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
    corr = cov / np.outer(d, d)
    pairs = [
        (names[i], names[j], float(corr[i, j]))
        for i in range(len(names))
        for j in range(i + 1, len(names))
        if abs(corr[i, j]) >= MIN_CORRELATION
    ]
    pairs.sort(key=lambda p: (-abs(p[2]), p[0], p[1]))
    return pairs[:MAX_CORRELATIONS]


def format_cmaes_state(
    state: CmaesState, search_space: Mapping[str, BaseDistribution]
) -> list[str]:
    """The CMA-ES block of the prompt: a header, one line a parameter, the correlations."""
    names = list(state.mean)
    lines = [
        f"CMA-ES search distribution (generation {state.generation}, "
        f"{state.population_size} trials each; step size {state.sigma:.2g} of each range):"
    ]
    for name in names[:MAX_STATE_PARAMS]:
        lines.append(
            f"- {name}: centre {format_value(state.mean[name])}, likely "
            f"{format_value(state.low[name])} to {format_value(state.high[name])}"
        )
    if len(names) > MAX_STATE_PARAMS:
        lines.append(f"- ({len(names) - MAX_STATE_PARAMS} more not shown)")
    if state.correlations:
        lines.append(
            "Correlated: "
            + "; ".join(
                f"{a} and {b} {'rise together' if r > 0 else 'move oppositely'} ({r:+.2f})"
                for a, b, r in state.correlations
            )
            + "."
        )
    other = [n for n in search_space if n not in state.mean]
    if other:
        lines.append(f"(CMA-ES leaves {', '.join(other[:MAX_STATE_PARAMS])} to another sampler.)")
    return lines


# ----------------------------------------------------------------------------- TPE


@dataclasses.dataclass(frozen=True)
class ParamSplit:
    """One parameter's values in TPE's good and bad groups.

    For numeric parameters ``good`` is ``(low, median, high)`` of the good trials and ``bad``
    the median of the others; for categorical ones each is ``(most common choice, its count)``.
    """

    good: tuple[Any, ...]
    bad: tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class TpeState:
    """TPE's split of the finished trials and its best candidates.

    Attributes:
        n_good: Trials in the good group (TPE's ``gamma(n)``).
        n_trials: Trials split.
        params: Per parameter, the good group's values against the others'.
        candidates: TPE's draws from l(x) with the highest l(x)/g(x), best first, as
            configurations (at most :data:`N_TPE_CANDIDATES`).
    """

    n_good: int
    n_trials: int
    params: dict[str, ParamSplit]
    candidates: list[dict[str, Any]]


def read_tpe_state(
    study: "Study",
    trials: Sequence[FrozenTrial],
    search_space: Mapping[str, BaseDistribution],
    *,
    seed: int,
) -> TpeState | None:
    """TPE's state over ``trials`` (complete and pruned ones that have every parameter), as
    Optuna 5's default TPESampler (multivariate) would split and rank them; ``None`` below
    :data:`MIN_TPE_TRIALS` completed trials.

    Relies on Optuna's privates (Optuna 5.0 and 5.1; read in ``_optuna_private``), in
    ``optuna.samplers._tpe.sampler``:
    ``default_gamma`` (the good group's size), ``_split_trials`` (the split itself),
    ``TPESampler._build_parzen_estimator`` (l(x) and g(x)) and
    ``TPESampler._compute_acquisition_func`` (log l(x) - log g(x)).
    """
    space = dict(search_space)
    names = set(space)
    split = [
        t
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and names <= t.params.keys()
    ]
    n = sum(t.state == TrialState.COMPLETE for t in split)
    if n < MIN_TPE_TRIALS or not space:
        return None
    n_good = _optuna_private.tpe_default_gamma(len(split))
    good, bad = _optuna_private.tpe_split_trials(study, split, n_good)
    if not good or not bad:
        return None
    sampler = TPESampler(seed=seed)
    l_x = _optuna_private.tpe_parzen_estimator(sampler, study, space, good, handle_below=True)
    g_x = _optuna_private.tpe_parzen_estimator(sampler, study, space, bad, handle_below=False)
    draws = l_x.sample(np.random.RandomState(seed), N_TPE_DRAWS)
    score = _optuna_private.tpe_acquisition(sampler, draws, l_x, g_x)
    candidates: list[dict[str, Any]] = []
    for i in np.argsort(-score, kind="stable"):
        params = {n: d.to_external_repr(draws[n][i].item()) for n, d in space.items()}
        if params not in candidates:
            candidates.append(params)
        if len(candidates) == N_TPE_CANDIDATES:
            break
    return TpeState(
        n_good=len(good),
        n_trials=len(split),
        params={name: _param_split(name, dist, good, bad) for name, dist in space.items()},
        candidates=candidates,
    )


def _param_split(
    name: str, dist: BaseDistribution, good: Sequence[FrozenTrial], bad: Sequence[FrozenTrial]
) -> ParamSplit:
    g = [t.params[name] for t in good]
    b = [t.params[name] for t in bad]
    if isinstance(dist, CategoricalDistribution):
        return ParamSplit(good=_mode(g), bad=_mode(b))
    return ParamSplit(good=(min(g), _median(g), max(g)), bad=(_median(b),))


def _median(values: Sequence[Any]) -> Any:
    """The middle value (the lower of the two middle ones): a value the parameter can take."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def _mode(values: Sequence[Any]) -> tuple[Any, int]:
    counts: dict[Any, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    best = max(counts.items(), key=lambda kv: kv[1])
    return best[0], best[1]


def format_tpe_state(state: TpeState, names: Sequence[str]) -> list[str]:
    """The TPE block of the prompt: the split, one line a parameter, the best candidates."""
    lines = [
        f"TPE's split: the best {state.n_good} of {state.n_trials} evaluated are good, the rest "
        "bad:"
    ]
    shown = [n for n in names if n in state.params]
    for name in shown[:MAX_STATE_PARAMS]:
        s = state.params[name]
        if len(s.good) == 2:
            lines.append(
                f"- {name}: good mostly {format_value(s.good[0])} ({s.good[1]} of "
                f"{state.n_good}); bad mostly {format_value(s.bad[0])}"
            )
            continue
        low, median, high = s.good
        good = format_value(median)
        if low != high:
            good = f"{format_value(low)} to {format_value(high)}, median {good}"
        lines.append(f"- {name}: good {good}; bad median {format_value(s.bad[0])}")
    if len(shown) > MAX_STATE_PARAMS:
        lines.append(f"- ({len(shown) - MAX_STATE_PARAMS} more not shown)")
    if state.candidates:
        lines.append(
            "TPE's best candidates by l(x)/g(x): "
            + "; ".join(format_params(c, names) for c in state.candidates)
        )
    return lines


# --------------------------------------------------------------------------- the block


def state_lines(
    kind: str,
    study: "Study",
    trial: FrozenTrial,
    trials: Sequence[FrozenTrial],
    search_space: Mapping[str, BaseDistribution],
    *,
    seed: int,
) -> list[str]:
    """The prompt's state block for ``kind`` (``"cmaes"`` or ``"tpe"``); empty when the
    optimizer has nothing to show yet."""
    if kind == "cmaes":
        cma = read_cmaes_state(study, trial, search_space, seed=seed)
        return [] if cma is None else format_cmaes_state(cma, search_space)
    if kind == "tpe":
        tpe = read_tpe_state(study, trials, search_space, seed=seed)
        return [] if tpe is None else format_tpe_state(tpe, list(search_space))
    raise ValueError(f"optimizer_state must be one of {OPTIMIZER_STATES} but got {kind!r}.")


def check_state(optimizer_state: str | None, state_mode: str) -> str | None:
    """``optimizer_state`` as the sampler keeps it (``None``, ``"cmaes"``, ``"tpe"``; ``"none"``
    is ``None``, for TOML specs), or an error naming the valid values."""
    if optimizer_state == "none":
        optimizer_state = None
    if optimizer_state is not None and optimizer_state not in OPTIMIZER_STATES:
        raise ValueError(
            f"optimizer_state must be one of {OPTIMIZER_STATES}, 'none' or None but got "
            f"{optimizer_state!r}."
        )
    if state_mode not in STATE_MODES:
        raise ValueError(f"state_mode must be one of {STATE_MODES} but got {state_mode!r}.")
    return optimizer_state
