"""Verified injection: what each configured mechanism did, read back from the stored trials.

LLMSampler stores, on every trial it proposes, a record per configured mechanism under the
trial user attribute :data:`bilevel_optuna._attrs.MECHANISMS` (its shape is
:class:`~bilevel_optuna.samplers._record.MechanismRecord`'s): hook call counts, how many times
it changed the proposal, its errors, and whether it was switched off. This module adds the
records up per mechanism, and says loudly (a :class:`MechanismInactiveWarning` and a logger
warning) when a configured mechanism never ran or never changed anything: an injected class
that is never called must not pass for an ablation.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING
from typing import Any

from bilevel_optuna import _attrs
from bilevel_optuna._logging import get_logger
from bilevel_optuna.exceptions import MechanismInactiveWarning
from bilevel_optuna.samplers._record import MechanismRecord

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

_logger = get_logger(__name__)

#: User attribute naming the mechanism that took a trial over in ``prepare``.
TAKEN_BY = _attrs.TAKEN_BY


@dataclasses.dataclass
class MechanismSummary:
    """What one mechanism did over a study's trials.

    Attributes:
        name: The mechanism's registry name.
        status: ``"ok"`` (it ran and changed at least one proposal), ``"never_ran"`` (no hook
            was ever called) or ``"never_changed"`` (hooks ran, nothing changed).
        n_trials: Trials carrying a record for it (it was configured on their sampler).
        n_active: Trials on which at least one of its hooks was called.
        n_changed: Trials on which it changed the proposal (a note, the history, a rejection,
            a replacement, an order or a take-over).
        changes: Changes summed over trials.
        n_taken: Trials it took over entirely (``prepare`` set the parameters).
        calls: Calls per hook, summed over trials.
        n_errors: Errors summed over trials (raised or timed-out hooks).
        errors: ``(trial number, message)`` per error.
        n_off: Trials on which it was switched off after an error.
        versions: The versions recorded.
    """

    name: str
    status: str
    n_trials: int
    n_active: int
    n_changed: int
    changes: int
    n_taken: int
    calls: dict[str, int]
    n_errors: int
    errors: list[tuple[int, str]]
    n_off: int
    versions: list[str]

    @property
    def verified(self) -> bool:
        """Whether the mechanism provably ran and changed at least one proposal."""
        return self.status == "ok"


def _studies(study: Any) -> list[Any]:
    if isinstance(study, Iterable) and not isinstance(study, (str, bytes)):
        return list(study)
    return [study]


def summarize_mechanisms(
    study: "optuna.Study | Iterable[optuna.Study]",
    *,
    mechanisms: Iterable[str] | None = None,
    warn: bool = True,
) -> dict[str, MechanismSummary]:
    """Add up the stored per-trial records of each mechanism.

    Args:
        study: A study, or several (for instance the inner studies of one outer trial), read
            from their storage.
        mechanisms: Names that were configured; a name with no record at all is reported as
            ``"never_ran"``. By default, every name found in the records.
        warn: Warn with :class:`MechanismInactiveWarning` (and log) for each mechanism that
            never ran or never changed anything.

    Returns:
        A :class:`MechanismSummary` per mechanism, by name.

    Example:

        .. code-block:: python

            from bilevel_optuna.samplers import summarize_mechanisms

            for name, s in summarize_mechanisms(study).items():
                print(name, s.status, s.n_changed, "of", s.n_trials, s.calls)
    """
    tallies: dict[str, _Tally] = {name: _Tally() for name in mechanisms or ()}
    for s in _studies(study):
        for trial in s.get_trials(deepcopy=False):
            record = MechanismRecord.of_trial(trial.user_attrs)
            for name in record.entries:
                tallies.setdefault(name, _Tally()).add(trial, record, name)
    out: dict[str, MechanismSummary] = {}
    for name, tally in tallies.items():
        summary = out[name] = tally.summary(name)
        if summary.errors:
            _logger.warning(
                "Mechanism %r raised or timed out %d time(s); first: trial %d: %s",
                name,
                summary.n_errors,
                *summary.errors[0],
            )
        if warn and summary.status != "ok":
            message = _inactive_message(summary)
            _logger.warning(message)
            warnings.warn(message, MechanismInactiveWarning, stacklevel=2)
    return out


@dataclasses.dataclass
class _Tally:
    """One mechanism's records, added up trial by trial."""

    n_trials: int = 0
    n_active: int = 0
    n_changed: int = 0
    changes: int = 0
    n_taken: int = 0
    calls: dict[str, int] = dataclasses.field(default_factory=dict)
    errors: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    n_off: int = 0
    versions: list[str] = dataclasses.field(default_factory=list)

    def add(self, trial: FrozenTrial, record: MechanismRecord, name: str) -> None:
        self.n_trials += 1
        calls = record.calls(name)
        for hook, n in calls.items():
            self.calls[hook] = self.calls.get(hook, 0) + n
        if any(n > 0 for n in calls.values()):
            self.n_active += 1
        changed = record.changes(name)
        self.changes += changed
        taken = trial.user_attrs.get(TAKEN_BY) == name
        self.n_taken += taken
        self.n_changed += changed > 0 or taken
        self.errors.extend((trial.number, m) for m in record.errors(name))
        self.n_off += record.is_off(name)
        version = record.version(name)
        if version and version not in self.versions:
            self.versions.append(version)

    def summary(self, name: str) -> MechanismSummary:
        if sum(self.calls.values()) == 0:
            status = "never_ran"
        elif self.n_changed == 0:
            status = "never_changed"
        else:
            status = "ok"
        return MechanismSummary(
            name=name,
            status=status,
            n_trials=self.n_trials,
            n_active=self.n_active,
            n_changed=self.n_changed,
            changes=self.changes,
            n_taken=self.n_taken,
            calls=self.calls,
            n_errors=len(self.errors),
            errors=self.errors,
            n_off=self.n_off,
            versions=self.versions,
        )


def _inactive_message(s: MechanismSummary) -> str:
    if s.status == "never_ran":
        if s.n_trials == 0:
            what = "has no record on any trial: it was not configured on this study's sampler"
        else:
            what = f"was configured on {s.n_trials} trial(s) but none of its hooks ever ran"
        hint = (
            " (a choose hook runs only when a call returns 2 or more accepted candidates: "
            "set n_candidates >= 2)"
            if set(s.calls) == {"choose"}
            else ""
        )
    else:
        what = f"ran on {s.n_active} trial(s) ({s.calls}) but never changed a proposal"
        hint = ""
    return f"Mechanism {s.name!r} {what}{hint}; it had no effect on this study."
