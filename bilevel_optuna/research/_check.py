"""check_source(): the whole gate, static checks then a smoke run behind the boundary.

The smoke run loads the source in a guarded process (:mod:`._boundary`) and calls every hook it
defines against a recorded study (a fixed, seeded study of a mixed search space, or one the
caller gives), through the same proxy that runs it later in studies. Every hook must be called
and give valid results: ``params`` and replacements inside the search space, ``choose`` a
reordering of its candidates.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from bilevel_optuna import _optuna_private
from bilevel_optuna.research import _gate
from bilevel_optuna.research._sandbox import FULL
from bilevel_optuna.research._sandbox import Layers
from bilevel_optuna.research._sandbox import Limits
from bilevel_optuna.research._sandbox import boundary_problems
from bilevel_optuna.research._decode import LoadInfo
from bilevel_optuna.research._decode import ProtocolError
from bilevel_optuna.research._decode import decode_load
from bilevel_optuna.research._proxy import GuardedHookError
from bilevel_optuna.research._proxy import GuardedMechanism
from bilevel_optuna.research._proxy import guarded_class
from bilevel_optuna.samplers._answer import AnswerError
from bilevel_optuna.samplers._answer import repair_params
from bilevel_optuna.samplers.mechanisms._loading import source_hash
from bilevel_optuna.samplers.mechanisms._base import HOOKS
from bilevel_optuna.samplers.mechanisms._base import Mechanism
from bilevel_optuna.samplers.mechanisms._base import ProposalContext
from bilevel_optuna.samplers.mechanisms._base import Review
from bilevel_optuna.samplers._prompt import order_history

#: Gate stages in order; a result's ``stage`` is where it stopped, ``"accepted"`` if nowhere.
STAGES = ("parse", "policy", "contract", "boundary", "load", "smoke", "accepted")


@dataclasses.dataclass
class CheckResult:
    """What the gate decided about one source.

    Attributes:
        accepted: Whether the source passed every stage.
        stage: Where it stopped (one of ``STAGES``: parse, policy, contract, boundary, load,
            smoke), ``"accepted"`` if it passed.
        reasons: Why it stopped there, each naming what was found (fed back to the model).
        sha256: The source's SHA-256.
        name: The mechanism's ``name`` as written in the source.
        class_name: Its class.
        version: Its ``version``.
        hooks: The hooks it defines.
        space: Its hyperparameters (Optuna distribution JSON).
        hook_calls: Calls per hook in the smoke run, and how many changed something.
        seconds: Time the check took.
    """

    accepted: bool
    stage: str
    reasons: list[str]
    sha256: str
    name: str = ""
    class_name: str = ""
    version: str = "1"
    hooks: list[str] = dataclasses.field(default_factory=list)
    space: dict[str, str] = dataclasses.field(default_factory=dict)
    hook_calls: dict[str, int] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line: ``accepted NAME (hooks ...)`` or ``rejected at STAGE: reason``."""
        if self.accepted:
            calls = ", ".join(f"{h} x{n}" for h, n in self.hook_calls.items())
            return (
                f"accepted {self.name} ({self.class_name}, {self.sha256[:12]}): smoke run {calls}"
            )
        return f"rejected at {self.stage}: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CheckResult":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


def smoke_study(n_trials: int = 12, seed: int = 0) -> optuna.Study:
    """The recorded study the smoke run uses: a seeded mixed space, complete and failed trials."""
    space = {
        "x": FloatDistribution(-5.0, 5.0),
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "layers": IntDistribution(1, 8),
        "kind": CategoricalDistribution(["a", "b", "c"]),
    }
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    rng = np.random.default_rng(seed)
    for i in range(n_trials):
        trial = study.ask(space)
        if i == 3:
            study.tell(trial, state=TrialState.FAIL)
            continue
        p = trial.params
        value = p["x"] ** 2 + abs(np.log10(p["lr"]) + 2) + 0.1 * p["layers"] + rng.normal(0, 0.01)
        study.tell(trial, float(value))
    return study


def check_source(
    source: str,
    *,
    limits: Limits | None = None,
    layers: Layers = FULL,
    study: optuna.Study | None = None,
    _prefilter: bool = True,
) -> CheckResult:
    """Run the gate on mechanism source text.

    Args:
        source: Python source defining one :class:`~bilevel_optuna.samplers.Mechanism` subclass.
        limits: Limits of the guarded process for the smoke run.
        layers: The boundary's layers (all of them; tests switch single layers on).
        study: The recorded study the smoke run reads (default: a seeded study of 12 recorded
            trials).

    Returns:
        A :class:`CheckResult`; ``accepted`` is ``False`` with the stage and reasons on any
        failure. Nothing here raises for bad source.
    """
    start = time.perf_counter()
    digest = source_hash(source) if isinstance(source, str) else ""
    result = _run_stages(
        source, digest, limits or Limits(), layers, study, prefilter=_prefilter
    )
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def _run_stages(
    source: str,
    digest: str,
    limits: Limits,
    layers: Layers,
    study: optuna.Study | None,
    *,
    prefilter: bool,
) -> CheckResult:
    """The stages in order (static, boundary, load, smoke); the first that rejects ends it."""
    report = _gate.static_check(source)
    if prefilter and not report.ok:
        return CheckResult(
            False, report.stage, report.reasons, digest, class_name=report.class_name
        )
    problems = boundary_problems(layers)
    if problems:
        return CheckResult(
            False,
            "boundary",
            ["generated code is not run without its boundary: " + "; ".join(problems)],
            digest,
        )
    info = _load(source, digest, limits, layers)
    if isinstance(info, CheckResult):
        return info
    result = CheckResult(
        False,
        "smoke",
        [],
        digest,
        name=info.name,
        class_name=info.class_name,
        version=info.version,
        hooks=list(info.hooks),
        space=dict(info.space),
    )
    mismatch = _mismatch(report, result)
    if mismatch is not None:
        result.stage, result.reasons = mismatch
        return result
    cls = guarded_class(
        source,
        name=result.name,
        hooks=result.hooks,
        space=result.space,
        version=result.version,
        sha256=digest,
        limits=limits,
        layers=layers,
        declared_name=result.name,
    )
    reasons, calls = smoke_run(cls, _copy(study) if study is not None else smoke_study())
    result.hook_calls = calls
    if reasons:
        result.reasons = reasons
        return result
    result.accepted, result.stage = True, "accepted"
    return result


def _load(source: str, digest: str, limits: Limits, layers: Layers) -> LoadInfo | CheckResult:
    """Load the source in a guarded process to learn its name, hooks and space as Python sees
    them; a rejection at the load stage where that fails."""
    probe_cls = guarded_class(
        source, name="probe", hooks=[], space={}, sha256=digest, limits=limits, layers=layers
    )
    probe = probe_cls()
    try:
        try:
            process = probe._ensure_process()
            reply = process.request(
                {"op": "load", "source": source, "sha256": digest, "params": {}},
                timeout=limits.start_timeout,
            )
        except Exception as err:  # noqa: BLE001 - BoundaryError, or a death at import
            return CheckResult(False, "load", [str(err)], digest)
        # Everything the child says passes the decoder before anything here reads it.
        try:
            return decode_load(reply, limits)
        except ProtocolError as err:
            return CheckResult(False, "load", [str(err)], digest)
    finally:
        probe.close()


def _mismatch(report: _gate.StaticReport, loaded: CheckResult) -> tuple[str, list[str]] | None:
    """Where what the class is when loaded differs from what its source says: (stage, reasons).

    Names are data: the name the class reports when run must be the one read statically.
    """
    if report.ok and loaded.name != report.name:
        return "load", [
            f"the class reports the name {loaded.name!r} when loaded but sets {report.name!r} "
            "in its source; set `name` once, as a constant"
        ]
    if report.ok and set(report.hooks) != set(loaded.hooks):
        return "load", [
            f"the class defines hooks {loaded.hooks} when loaded but {list(report.hooks)} in "
            "its source"
        ]
    if not loaded.hooks:
        return "contract", ["the class defines no hook"]
    return None


def _copy(study: optuna.Study) -> optuna.Study:
    """An in-memory copy, so the smoke run's own trial never lands in a stored study."""
    copy = optuna.create_study(direction=study.direction)
    copy.add_trials([t for t in study.get_trials(deepcopy=True) if t.state.is_finished()])
    return copy


def smoke_run(
    cls: type[GuardedMechanism], study: optuna.Study
) -> tuple[list[str], dict[str, int]]:
    """Call every hook ``cls`` defines against ``study``; return (reasons, calls per hook)."""
    mechanism = cls()
    calls = {h: 0 for h in cls_hooks(cls)}
    reasons: list[str] = []
    trials = study.get_trials(deepcopy=False)
    space = {k: v for k, v in trials[0].distributions.items()}
    minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
    running = study.ask(space)
    frozen = _optuna_private.storage_of(study).get_trial(_optuna_private.trial_id_of(running))
    rng = np.random.default_rng(0)
    candidates = [
        {n: d.to_external_repr(d.to_internal_repr(v)) for n, d, v in _sample(space, rng)}
        for _ in range(3)
    ]

    def context() -> ProposalContext:
        all_trials = study.get_trials(deepcopy=False)
        return ProposalContext(
            study=study,
            trial=frozen,
            search_space=space,
            trials=all_trials,
            minimize=minimize,
            history=order_history(
                [t for t in all_trials if all(n in t.params for n in space)],
                order="best",
                size=10,
                minimize=minimize,
            ),
            notes=[],
            rng=np.random.default_rng(1),
        )

    def call(hook: str, *args: Any) -> Any:
        calls[hook] += 1
        try:
            return getattr(mechanism, hook)(*args)
        except GuardedHookError as err:
            reasons.append(f"{hook}: {err}")
            return None

    try:
        if "prepare" in calls:
            ctx = context()
            call("prepare", ctx)
            if ctx.params is not None:
                try:
                    repair_params(ctx.params, space)
                except AnswerError as err:
                    reasons.append(f"prepare set params outside the search space: {err}")
        if "review" in calls:
            ctx = context()
            for candidate in candidates:
                review = call("review", dict(candidate), ctx)
                if isinstance(review, Review) and review.action == "replace":
                    try:
                        repair_params(review.params or {}, space)
                    except AnswerError as err:
                        reasons.append(f"review replaced with parameters outside the space: {err}")
        if "choose" in calls:
            ordered = call("choose", [dict(c) for c in candidates], context())
            if ordered is not None and (not ordered or any(c not in candidates for c in ordered)):
                reasons.append("choose must return a non-empty reordering of its candidates")
        if "after_trial" in calls:
            done_trial = [t for t in trials if t.state == TrialState.COMPLETE][-1]
            call("after_trial", study, done_trial, done_trial.state, done_trial.values)
    finally:
        mechanism.close()
        study.tell(running, state=TrialState.FAIL)
    return list(dict.fromkeys(reasons)), calls


def cls_hooks(cls: type[GuardedMechanism]) -> list[str]:
    """The hooks ``cls`` defines itself (those that differ from :class:`Mechanism`'s)."""
    return [h for h in HOOKS if getattr(cls, h) is not getattr(Mechanism, h)]


def _sample(space: dict[str, Any], rng: np.random.Generator) -> list[tuple[str, Any, Any]]:
    out = []
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            value = dist.choices[int(rng.integers(len(dist.choices)))]
        elif isinstance(dist, IntDistribution):
            value = int(rng.integers(dist.low, dist.high + 1))
        else:
            low, high = dist.low, dist.high
            if dist.log:
                value = float(np.exp(rng.uniform(np.log(low), np.log(high))))
            else:
                value = float(rng.uniform(low, high))
        out.append((name, dist, value))
    return out
