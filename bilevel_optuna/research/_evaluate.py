"""Injection into the outer search, and the measured effect of each accepted mechanism.

Optuna fixes a categorical parameter's choices for a study's life, so a round never adds a
choice to an existing outer study. Each round gets a new outer study, ``<run>/round-NNN``, run by
the public :func:`~bilevel_optuna.run_bilevel_study`: its space is the incumbent configuration's
settings (fixed) with the incumbent's mechanisms and the round's accepted ones as switches
(``mech.<name>``, with their own hyperparameters). The incumbent and the incumbent plus each new
mechanism are enqueued first, so every new mechanism is measured against the incumbent on the
same seeds before the outer sampler explores; the rest of the round's outer trials search the
combinations. Its inner trials carry the same proof records as the built-in mechanisms; a
mechanism that never ran or never changed a proposal is reported so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna.research._store import MechanismStore
from bilevel_optuna.stats import PairwiseComparison
from bilevel_optuna.stats import StudySelection
from bilevel_optuna.stats import compare
from bilevel_optuna.stats import noise_floor
from bilevel_optuna.studies import LEVEL0
from bilevel_optuna.studies import BilevelSettings
from bilevel_optuna.studies import OuterSettings
from bilevel_optuna.studies import OuterSpace
from bilevel_optuna.studies import ProposerConfig
from bilevel_optuna.studies import run_bilevel_study
from bilevel_optuna.samplers.mechanisms._loading import get_mechanism_class


def _incumbent(store: MechanismStore, run: str, number: int) -> Any:
    for k in range(number - 1, 0, -1):
        best = (store.rounds().get(k) or {}).get("evaluation", {}).get("best_config")
        if best:
            return ProposerConfig.from_dict(best)
    outer = optuna.load_study(study_name=run, storage=store.storage)
    best = outer.user_attrs.get("bilevel:best_config")
    return ProposerConfig.from_dict(best) if best else LEVEL0


def _objectives(store: MechanismStore, run: str) -> list[str]:
    names = []
    for s in optuna.get_all_study_summaries(storage=store.storage, include_best_trial=False):
        if s.user_attrs.get(_attrs.RUN) == run and s.user_attrs.get(_attrs.KIND) == "inner":
            name = s.user_attrs.get(_attrs.OBJECTIVE)
            if name and name not in names:
                names.append(name)
    return names


def evaluate_round(
    store: MechanismStore,
    spec: Any,
    number: int,
    names: list[str],
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the round's outer study and measure each of ``names`` against the incumbent."""
    store.register()
    incumbent = _incumbent(store, spec.run, number)
    objectives = list(spec.objectives) or _objectives(store, spec.run)
    if not objectives:
        return {"error": "no objective: set `objectives` in [evaluate]"}
    space, study_name = _round_study(store, spec, number, names, incumbent)
    result = run_bilevel_study(
        objectives,
        storage=store.storage,
        run_name=study_name,
        settings=BilevelSettings(
            outer=OuterSettings(space=space, baselines=tuple(spec.baselines), prune=False)
        ),
        n_outer_trials=max(int(spec.n_outer_trials), 1 + len(names)),
        n_inner_trials=spec.n_inner_trials,
        n_repeats=spec.n_repeats,
        model=spec.model,
        seed=spec.seed,
        progress=progress,
    )
    trials = [
        t for t in result.outer_study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE
    ]
    effects: dict[str, Any] = {}
    for name in names:
        effects[name] = _effect(store, spec, number, study_name, name, trials)
        store.set_effect(name, effects[name])
    return {
        "study": study_name,
        "incumbent": incumbent.to_dict(),
        "best_config": result.best_config.to_dict() if result.best_config else incumbent.to_dict(),
        "effects": effects,
    }


def _round_study(
    store: MechanismStore, spec: Any, number: int, names: list[str], incumbent: ProposerConfig
) -> tuple[OuterSpace, str]:
    """The round's outer space and study, the incumbent and each new mechanism enqueued first."""
    inc_names = [n for n, _ in incumbent.mechanisms]
    space = OuterSpace(
        temperature=incumbent.temperature,
        history_size=incumbent.history_size,
        history_order=incumbent.history_order,
        template=incumbent.template,
        n_candidates=incumbent.n_candidates,
        # Names from the storage are looked up as registered names, never loaded as source.
        mechanisms=[get_mechanism_class(n) for n in [*inc_names, *names]],
        max_mechanisms=len(inc_names) + 1,
    )
    study_name = f"{spec.run}/round-{number:03d}"
    outer = optuna.create_study(
        storage=store.storage, study_name=study_name, direction="minimize", load_if_exists=True
    )
    if not outer.trials:
        base = space.params_of(incumbent)
        outer.enqueue_trial(base, user_attrs={"research:role": "incumbent"})
        for name in names:
            outer.enqueue_trial({**base, f"mech.{name}": True}, user_attrs={"research:role": name})
    return space, study_name


def _effect(
    store: MechanismStore,
    spec: Any,
    number: int,
    study_name: str,
    name: str,
    trials: list[optuna.trial.FrozenTrial],
) -> dict[str, Any]:
    """One new mechanism's measured effect: its activity, and its arm against the incumbent's
    and the baselines' (or a note saying why there is no comparison)."""
    role_arm = {t.user_attrs.get("research:role"): t.user_attrs.get(_attrs.ARM) for t in trials}
    inc_arm = role_arm.get("incumbent")
    arm = role_arm.get(name)
    trial = next((t for t in trials if t.user_attrs.get("research:role") == name), None)
    activity = (
        ((trial.user_attrs.get(_attrs.SUMMARY) or {}).get("mechanisms") or {}).get(name)
        if trial
        else None
    )
    effect: dict[str, Any] = {
        "round": number,
        "study": study_name,
        "arm": arm,
        "incumbent_arm": inc_arm,
        "activity": activity or "never_ran",
    }
    disabled = _disabled(store.storage, trial, name) if trial else None
    if disabled:
        effect["disabled"] = disabled
    if arm is None or inc_arm is None or arm == inc_arm:
        effect["note"] = "no separate arm to compare (its outer trial did not complete)"
        return effect
    arms = [arm, inc_arm, *[b for b in spec.baselines if b != inc_arm]]
    try:
        cmp = compare(
            store.storage, run=study_name, arms=arms, control=arm,
            n_trials=spec.n_inner_trials,
            selection=StudySelection(kind=("inner", "baseline")),
        )  # fmt: skip
    except Exception as err:  # noqa: BLE001 - reported in the effect, the run goes on
        effect["note"] = f"no comparison: {type(err).__name__}: {err}"[:300]
        return effect
    per = {_other(c, arm): _versus(c, arm) for c in cmp.comparisons if arm in (c.arm_a, c.arm_b)}
    inc_values = [float(v) for v in cmp.arms[inc_arm].values] if inc_arm in cmp.arms else []
    if len(inc_values) >= 2:
        floor = noise_floor(inc_values)
        effect["noise_floor_sd"] = _num(floor.statistic)
    effect["metric"] = cmp.metric
    effect["vs_incumbent"] = per.get(inc_arm)
    effect["vs_baselines"] = {k: v for k, v in per.items() if k != inc_arm}
    if effect["vs_incumbent"]:
        effect.update({k: effect["vs_incumbent"][k] for k in ("n", "test", "pvalue", "a12")})
    return effect


def _other(c: PairwiseComparison, arm: str) -> str:
    return c.arm_b if c.arm_a == arm else c.arm_a


def _versus(c: PairwiseComparison, arm: str) -> dict[str, Any]:
    """A comparison of ``arm`` with another, from ``arm``'s side."""
    mine = c.arm_a == arm
    return {
        "n": int(min(c.n_a, c.n_b)),
        "test": c.test,
        "pvalue": _num(c.pvalue),
        "pvalue_holm": _num(c.pvalue_holm),
        "a12": _num(c.a12.statistic if mine else 1.0 - c.a12.statistic),
        "median": _num(c.median_a if mine else c.median_b),
        "median_other": _num(c.median_b if mine else c.median_a),
        "verdict": c.verdict,
    }


def _num(x: Any) -> float | None:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _disabled(storage: Any, trial: Any, name: str) -> dict[str, Any] | None:
    """In how many of the trial's inner studies ``name`` was disabled (its guarded process
    restarted too often), and the first reason; ``None`` when in none."""
    reasons = []
    for study_name in trial.user_attrs.get(_attrs.INNER_STUDIES) or []:
        try:
            attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(study_name))
        except KeyError:
            continue
        reason = attrs.get(_attrs.RESEARCH_DISABLED_PREFIX + name)
        if reason:
            reasons.append(str(reason))
    if not reasons:
        return None
    return {"studies": len(reasons), "reason": reasons[0][:300]}
