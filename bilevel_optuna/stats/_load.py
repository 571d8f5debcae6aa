"""Choose studies from a storage and read their trial values: the input of :func:`compare`.

Values always come from the storage (never from a Study object a caller holds), so a report
describes exactly what was stored.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

from bilevel_optuna import _optuna_private
from bilevel_optuna import _attrs
from bilevel_optuna._checks import check_int
from bilevel_optuna._logging import get_logger
from bilevel_optuna._storage import open_storage
from bilevel_optuna.exceptions import ConfigurationError

if TYPE_CHECKING:
    import optuna
    from bilevel_optuna._optuna_private import FrozenStudy

_logger = get_logger(__name__)

# Trial user attribute with the noise-free value of a noisy objective, where one is known.
TRUE_VALUE = _attrs.TRUE_VALUE

ArmsSpec = Sequence[str] | Mapping[str, str | Sequence[str]] | None


@dataclass(frozen=True)
class StudyRecord:
    """What :func:`compare` read from one study.

    Attributes:
        name: Study name.
        arm: Arm label the study was assigned to.
        direction: ``"minimize"`` or ``"maximize"``, the study's own direction.
        objective: ``bilevel:objective`` user attribute, or None.
        seed: ``bilevel:seed`` user attribute, or None; equal (objective, seed) pairs studies.
        optimum: ``bilevel:optimum`` user attribute, or None.
        values: Objective value per trial, in trial-number order, within the budget; NaN for a
            trial that is not complete (failed, pruned, running).
        true_values: ``bilevel:true_value`` per trial where any trial stores one, else None.
        n_complete: Complete trials within the budget.
        n_failed: Failed trials within the budget.
        n_pruned: Pruned trials within the budget.
        n_unfinished: Running or waiting trials within the budget.
        n_stored: All trials of the study, budget or not.
    """

    name: str
    arm: str
    direction: str
    objective: str | None
    seed: Any
    optimum: float | None
    values: np.ndarray = field(repr=False)
    true_values: np.ndarray | None = field(repr=False)
    n_complete: int
    n_failed: int
    n_pruned: int
    n_unfinished: int
    n_stored: int

    @property
    def key(self) -> tuple[Any, Any]:
        """The pairing key; studies of different arms with the same key are paired."""
        return (self.objective, self.seed)

    @property
    def missing(self) -> bool:
        """True when the study has no complete trial within the budget."""
        return self.n_complete == 0


def _kinds(kind: str | Sequence[str] | None) -> set[str] | None:
    """One name, several names or None (no filter), as a set or None."""
    if kind is None:
        return None
    return {kind} if isinstance(kind, str) else set(kind)


def select_studies(
    storage: optuna.storages.BaseStorage,
    *,
    run: str | None = None,
    arms: ArmsSpec = None,
    kind: str | Sequence[str] | None = None,
    objective: str | Sequence[str] | None = None,
) -> dict[str, list[FrozenStudy]]:
    """Group the storage's studies into arms.

    Three ways to choose, as :func:`compare` documents: ``run`` (arms from the ``bilevel:arm``
    attribute, optionally restricted by a list of arm names or glob patterns), a mapping of
    labels to a glob pattern on study names, or a mapping of labels to lists of study names.
    Outer studies (``bilevel:kind == "outer"``) are never arms unless ``kind`` asks for them.
    ``objective`` keeps only studies whose ``bilevel:objective`` is that name (or one of those).
    """
    kinds = _kinds(kind)
    objectives = _kinds(objective)  # the same shape: a name, several, or None
    studies = storage.get_all_studies()
    if run is not None:
        _check_known("run", [run], [s.user_attrs.get(_attrs.RUN) for s in studies])
    if objectives is not None:
        in_scope = [s for s in studies if run is None or s.user_attrs.get(_attrs.RUN) == run]
        _check_known(
            "objective",
            sorted(objectives),
            [s.user_attrs.get(_attrs.OBJECTIVE) for s in in_scope],
            where=f" in run {run!r}" if run is not None else "",
        )

    def kind_ok(study: FrozenStudy) -> bool:
        if objectives is not None and study.user_attrs.get(_attrs.OBJECTIVE) not in objectives:
            return False
        k = study.user_attrs.get(_attrs.KIND)
        return k != "outer" if kinds is None else k in kinds

    if run is not None:
        # Arms of a run come sorted by name; a mapping keeps the caller's order.
        groups = _arms_of_run(studies, run, arms, kind_ok, kinds, objectives)
        return dict(sorted(groups.items()))
    if isinstance(arms, Mapping):
        return _arms_by_name(studies, arms, kind_ok)
    raise ConfigurationError(
        "Choose studies with run='NAME' (arms from the bilevel:arm attribute) or "
        "arms={'label': 'glob-pattern' or ['study', ...], ...}."
    )


def _arms_of_run(
    studies: list[FrozenStudy],
    run: str,
    arms: ArmsSpec,
    kind_ok: Callable[[FrozenStudy], bool],
    kinds: set[str] | None,
    objectives: set[str] | None,
) -> dict[str, list[FrozenStudy]]:
    """The studies of ``run`` by their ``bilevel:arm``, kept where ``arms`` matches."""
    if isinstance(arms, Mapping):
        raise ConfigurationError(
            "With run=..., arms must be a list of arm names (or glob patterns), not a mapping."
        )
    in_run = [s for s in studies if s.user_attrs.get(_attrs.RUN) == run and kind_ok(s)]
    if not in_run:  # the run is there (checked by the caller): the filters left nothing
        of_run = [s for s in studies if s.user_attrs.get(_attrs.RUN) == run]
        found = sorted({str(s.user_attrs.get(_attrs.KIND)) for s in of_run})
        raise ConfigurationError(
            f"Run {run!r} has no study of kind {sorted(kinds) if kinds else 'but outer'}"
            + (f" and objective {sorted(objectives)}" if objectives else "")
            + f"; its studies are of kind {', '.join(found)}."
        )
    groups: dict[str, list[FrozenStudy]] = {}
    for s in in_run:
        arm = s.user_attrs.get(_attrs.ARM)
        if arm is None:
            _logger.info("Study %s of run %s has no %s; skipped.", s.study_name, run, _attrs.ARM)
            continue
        arm = str(arm)
        if arms is not None and not any(fnmatch.fnmatchcase(arm, p) for p in arms):
            continue
        groups.setdefault(arm, []).append(s)
    for pattern in arms or ():
        if not any(fnmatch.fnmatchcase(a, pattern) for a in groups):
            found = sorted({str(s.user_attrs.get(_attrs.ARM)) for s in in_run})
            close = difflib.get_close_matches(pattern, found, n=3)
            hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ConfigurationError(
                f"No arm of run {run!r} matches {pattern!r}.{hint} Arms found: {found}."
            )
    return groups


def _arms_by_name(
    studies: list[FrozenStudy],
    arms: Mapping[str, str | Sequence[str]],
    kind_ok: Callable[[FrozenStudy], bool],
) -> dict[str, list[FrozenStudy]]:
    """Arms by study name: a label to a glob pattern, or to a list of names."""
    by_name = {s.study_name: s for s in studies}
    groups: dict[str, list[FrozenStudy]] = {}
    for label, spec in arms.items():
        if isinstance(spec, str):
            chosen = [s for s in studies if fnmatch.fnmatchcase(s.study_name, spec) and kind_ok(s)]
            if not chosen:
                raise ConfigurationError(
                    f"Arm {label!r}: no study name matches the pattern {spec!r}."
                )
        else:
            absent = [name for name in spec if name not in by_name]
            if absent:
                raise ConfigurationError(f"Arm {label!r}: studies not in the storage: {absent}.")
            chosen = [by_name[name] for name in spec]
        groups[str(label)] = chosen
    return groups


def _check_known(
    what: str, asked: Sequence[str], found: Sequence[Any], *, where: str = ""
) -> None:
    """An error naming each of ``asked`` not among ``found``, with the closest names found."""
    known = sorted({str(f) for f in found if f is not None})
    for name in asked:
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigurationError(
            f"No study of {what} {name!r}{where} in the storage.{hint} "
            f"{what.capitalize()}s found: {', '.join(known) or 'none'}."
        )


def _direction(study: FrozenStudy) -> str:
    directions = study.directions
    if len(directions) != 1:
        raise ConfigurationError(
            f"Study {study.study_name!r} has {len(directions)} objectives; compare() handles "
            "single-objective studies only."
        )
    return "maximize" if directions[0].name == "MAXIMIZE" else "minimize"


def read_study(
    storage: optuna.storages.BaseStorage,
    study: FrozenStudy,
    *,
    arm: str,
    n_trials: int | None = None,
) -> StudyRecord:
    """Read one study's trial values from the storage (one ``get_all_trials`` call).

    Only trials numbered below ``n_trials`` count (all trials when None): the budget counts
    failed and pruned trials too, because they spent an evaluation.
    """
    from optuna.trial import TrialState

    study_id = _optuna_private.study_id_of(study)
    trials = storage.get_all_trials(study_id, deepcopy=False)
    n_stored = len(trials)
    trials = sorted(trials, key=lambda t: t.number)
    if n_trials is not None:
        trials = [t for t in trials if t.number < n_trials]
    length = trials[-1].number + 1 if trials else 0
    values = np.full(length, np.nan)
    true_values = np.full(length, np.nan)
    counts = {"complete": 0, "failed": 0, "pruned": 0, "unfinished": 0}
    for t in trials:
        if t.state == TrialState.COMPLETE and t.values is not None and len(t.values) == 1:
            values[t.number] = t.values[0]
            counts["complete"] += 1
            true = t.user_attrs.get(TRUE_VALUE)
            if true is not None:
                true_values[t.number] = float(true)
        elif t.state == TrialState.FAIL:
            counts["failed"] += 1
        elif t.state == TrialState.PRUNED:
            counts["pruned"] += 1
        else:
            counts["unfinished"] += 1
    optimum = study.user_attrs.get(_attrs.OPTIMUM)
    return StudyRecord(
        name=study.study_name,
        arm=arm,
        direction=_direction(study),
        objective=study.user_attrs.get(_attrs.OBJECTIVE),
        seed=study.user_attrs.get(_attrs.SEED),
        optimum=None if optimum is None else float(optimum),
        values=values,
        true_values=true_values if not np.all(np.isnan(true_values)) else None,
        n_complete=counts["complete"],
        n_failed=counts["failed"],
        n_pruned=counts["pruned"],
        n_unfinished=counts["unfinished"],
        n_stored=n_stored,
    )


def load_arms(
    storage: str | optuna.storages.BaseStorage,
    *,
    run: str | None = None,
    arms: ArmsSpec = None,
    kind: str | Sequence[str] | None = None,
    objective: str | Sequence[str] | None = None,
    n_trials: int | None = None,
) -> dict[str, list[StudyRecord]]:
    """Select studies and read them: ``{arm label: [StudyRecord, ...]}``."""
    check_int("n_trials", n_trials, minimum=1, allow_none=True)
    backend = open_storage(storage, read_only=True)
    groups = select_studies(backend, run=run, arms=arms, kind=kind, objective=objective)
    return {
        label: [read_study(backend, s, arm=label, n_trials=n_trials) for s in chosen]
        for label, chosen in groups.items()
    }
