"""Generated mechanisms in the run's own storage, readable by any worker from there alone.

Each bilevel run gets a research study ``<run>/research`` (``bilevel:kind = "research"``). One
trial per generated source: COMPLETE (value 1) when the gate accepted it, FAIL when it rejected
it; its user attributes hold the source, its SHA-256, the round, the idea, the generation mode,
the gate's result and the prompts behind it, so optuna-dashboard shows each one (and a note with
the source). The study's user attributes hold each round's record and each accepted mechanism's
measured effect; its system attributes hold every prompt and answer, for replay.

A worker calls :func:`register_stored_mechanisms` with the storage URL and the run: every
accepted mechanism becomes a registered name whose hooks run in a guarded process.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna import _optuna_private
from bilevel_optuna._logging import get_logger
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.research._check import CheckResult
from bilevel_optuna.research._decode import REGISTERED_PATTERN
from bilevel_optuna.research._decode import clean_text
from bilevel_optuna.research._decode import is_name
from bilevel_optuna.research._decode import is_registered_name
from bilevel_optuna.research._proxy import GuardedMechanism
from bilevel_optuna.research._proxy import guarded_class
from bilevel_optuna.samplers.mechanisms._loading import register_mechanism
from bilevel_optuna.samplers.mechanisms._loading import source_hash

_logger = get_logger(__name__)


@dataclasses.dataclass
class GeneratedMechanism:
    """One stored source and what became of it."""

    name: str
    sha256: str
    source: str
    round: int
    idea: str
    mode: str
    status: str
    check: CheckResult
    attempt: int = 0
    prompts: list[str] = dataclasses.field(default_factory=list)
    trial_number: int = -1
    effect: dict[str, Any] | None = None

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"

    def guarded_class(self) -> type[GuardedMechanism]:
        if not self.accepted:
            raise ConfigurationError(
                f"Generated mechanism {self.name!r} was rejected ({self.check.summary()}); only "
                "accepted ones can run."
            )
        return guarded_class(
            self.source,
            name=self.name,
            hooks=self.check.hooks,
            space=self.check.space,
            version=self.check.version,
            sha256=self.sha256,
            declared_name=self.check.name,
        )


def registered_name(check: CheckResult) -> str:
    """The name a generated mechanism is registered under: its own name and its hash, so two
    rounds that chose the same name (or a built-in's) never collide. Names are data: one that
    does not match the strict pattern is refused, never registered."""
    base = check.name or "rejected"
    name = f"{base}_{str(check.sha256)[:8]}"
    if not is_registered_name(name):
        raise ConfigurationError(
            f"Generated mechanism name {name[:80]!r} does not match "
            f"{REGISTERED_PATTERN.pattern}; it is not registered."
        )
    return name


def _storage(storage: str | BaseStorage) -> BaseStorage:
    if isinstance(storage, BaseStorage):
        return storage
    if "://" not in str(storage):
        raise ConfigurationError(
            f"storage must be a database URL such as 'sqlite:///bilevel.db' but got {storage!r}."
        )
    return optuna.storages.RDBStorage(str(storage))


class MechanismStore:
    """The research study of one bilevel run."""

    def __init__(self, storage: str | BaseStorage, run: str, *, create: bool = True) -> None:
        self.storage = _storage(storage)
        self.run = run
        self.study_name = run + _attrs.RESEARCH_SUFFIX
        if create:
            self.study = optuna.create_study(
                storage=self.storage,
                study_name=self.study_name,
                direction="maximize",
                load_if_exists=True,
            )
            if self.study.user_attrs.get(_attrs.KIND) != "research":
                self.study.set_user_attr(_attrs.KIND, "research")
                self.study.set_user_attr(_attrs.RUN, run)
        else:
            try:
                self.study = optuna.load_study(study_name=self.study_name, storage=self.storage)
            except KeyError:
                raise ConfigurationError(
                    f"Run {run!r} has no generated mechanisms in this storage (no study "
                    f"{self.study_name!r}); run `bilevel-optuna research run SPEC.toml` first."
                ) from None

    # ------------------------------------------------------------- mechanisms
    def add(
        self,
        source: str,
        check: CheckResult,
        *,
        round: int,
        idea: str,
        mode: str,
        attempt: int = 0,
        prompts: list[str] | None = None,
    ) -> GeneratedMechanism:
        """Store one checked source (accepted or not); the same source at the same step of the
        same round (a replay, a resumed run) is not stored twice."""
        digest = source_hash(source)
        for item in self.list():
            if (item.sha256, item.round, item.mode, item.attempt) == (
                digest,
                round,
                mode,
                attempt,
            ):
                return item
        status = "accepted" if check.accepted else "rejected"
        if check.accepted and not is_registered_name(f"{check.name}_{digest[:8]}"):
            check = dataclasses.replace(
                check,
                accepted=False,
                stage="load",
                reasons=[f"the name {check.name[:80]!r} is not a valid mechanism name"],
            )
            status = "rejected"
        name = registered_name(check) if check.accepted else ""
        trial = self.study.ask()
        attrs = {
            _attrs.GEN_NAME: name,
            _attrs.GEN_SOURCE: source,
            _attrs.GEN_SHA: digest,
            _attrs.GEN_ROUND: round,
            _attrs.GEN_IDEA: idea[:500],
            _attrs.GEN_MODE: mode,
            _attrs.GEN_STATUS: status,
            _attrs.GEN_CHECK: check.to_dict(),
            _attrs.GEN_ATTEMPT: attempt,
            _attrs.GEN_PROMPTS: list(prompts or []),
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        try:
            import optuna_dashboard

            optuna_dashboard.save_note(trial, _note(name, round, idea, mode, check, source))
        except Exception as err:  # noqa: BLE001 - the note is a convenience
            _logger.debug("Could not save the dashboard note: %s", err)
        if check.accepted:
            self.study.tell(trial, 1.0)
        else:
            self.study.tell(trial, state=TrialState.FAIL)
        storage = _optuna_private.storage_of(self.study)
        return self._from_trial(storage.get_trial(_optuna_private.trial_id_of(trial)))

    def list(self) -> list[GeneratedMechanism]:
        effects = {
            k[len(_attrs.RESEARCH_EFFECT_PREFIX) :]: v
            for k, v in self.study.user_attrs.items()
            if k.startswith(_attrs.RESEARCH_EFFECT_PREFIX)
        }
        out = []
        for t in self.study.get_trials(deepcopy=False):
            if _attrs.GEN_SOURCE not in t.user_attrs or not t.state.is_finished():
                continue
            item = self._from_trial(t)
            item.effect = effects.get(item.name)
            out.append(item)
        return out

    def get(self, key: str) -> GeneratedMechanism:
        """A stored mechanism by registered name, or by a prefix of its hash."""
        items = self.list()
        found = [i for i in items if i.name == key] or [
            i for i in items if key and i.sha256.startswith(key)
        ]
        if not found:
            raise ConfigurationError(
                f"No generated mechanism {key!r} in run {self.run!r}; stored ones are "
                f"{[i.name or i.sha256[:12] for i in items]}."
            )
        return found[0]

    @staticmethod
    def _from_trial(t: optuna.trial.FrozenTrial) -> GeneratedMechanism:
        a = t.user_attrs
        return GeneratedMechanism(
            name=a[_attrs.GEN_NAME],
            sha256=a[_attrs.GEN_SHA],
            source=a[_attrs.GEN_SOURCE],
            round=int(a[_attrs.GEN_ROUND]),
            idea=a[_attrs.GEN_IDEA],
            mode=a[_attrs.GEN_MODE],
            status=a[_attrs.GEN_STATUS],
            check=CheckResult.from_dict(a[_attrs.GEN_CHECK]),
            attempt=int(a.get(_attrs.GEN_ATTEMPT, 0)),
            prompts=list(a.get(_attrs.GEN_PROMPTS, [])),
            trial_number=t.number,
        )

    def register(self) -> list[str]:
        """Register every accepted mechanism (guarded) and return their names.

        What the storage holds is checked again (a storage written by an older version, or
        by hand, is data like any other): a name that is not ``<name>_<sha8>`` of its own
        source's hash and declared name is skipped with a warning, never registered.
        """
        names = []
        for item in self.list():
            if not item.accepted:
                continue
            problem = _stored_problem(item)
            if problem:
                _logger.warning("Generated mechanism not registered: %s.", problem)
                continue
            register_mechanism(item.guarded_class())
            names.append(item.name)
        return names

    # --------------------------------------------------------- rounds, effects
    def set_effect(self, name: str, effect: dict[str, Any]) -> None:
        self.study.set_user_attr(_attrs.RESEARCH_EFFECT_PREFIX + name, effect)

    def set_round(self, number: int, record: dict[str, Any]) -> None:
        self.study.set_user_attr(f"{_attrs.RESEARCH_ROUND_PREFIX}{number:03d}", record)

    def rounds(self) -> dict[int, dict[str, Any]]:
        out = {}
        for key, value in self.study.user_attrs.items():
            if key.startswith(_attrs.RESEARCH_ROUND_PREFIX):
                out[int(key[len(_attrs.RESEARCH_ROUND_PREFIX) :])] = value
        return dict(sorted(out.items()))

    # ---------------------------------------------------------------- replay
    def record_exchange(
        self, request_hash: str, request: dict[str, Any], reply: dict[str, Any]
    ) -> None:
        self.storage.set_study_system_attr(
            _optuna_private.study_id_of(self.study),
            _attrs.RESEARCH_EXCHANGE_PREFIX + request_hash,
            {"request": request, "reply": reply},
        )

    def exchanges(self) -> dict[str, dict[str, Any]]:
        attrs = self.storage.get_study_system_attrs(_optuna_private.study_id_of(self.study))
        return {
            k[len(_attrs.RESEARCH_EXCHANGE_PREFIX) :]: v
            for k, v in attrs.items()
            if k.startswith(_attrs.RESEARCH_EXCHANGE_PREFIX)
        }


def _stored_problem(item: GeneratedMechanism) -> str | None:
    """Why a stored accepted mechanism must not be registered (``None``: it may be)."""
    shown = clean_text(repr(item.name)[:80], 80)
    if not is_registered_name(item.name) or not is_name(item.check.name):
        return f"the stored name {shown} is not a valid mechanism name"
    if source_hash(item.source) != item.sha256:
        return f"{shown}: the stored source does not match its SHA-256"
    if item.name != f"{item.check.name}_{item.sha256[:8]}":
        return f"{shown} is not its declared name and source hash"
    return None


def register_stored_mechanisms(storage: str | BaseStorage, run: str) -> list[str]:
    """Register the accepted generated mechanisms of ``run`` from the storage alone.

    Call it on every worker before it joins a study that uses them; each name then loads a
    :class:`~bilevel_optuna.research.GuardedMechanism` whose hooks run behind the boundary.

    Returns:
        The registered names.
    """
    return MechanismStore(storage, run, create=False).register()


def _note(name: str, round: int, idea: str, mode: str, check: CheckResult, source: str) -> str:
    status = "accepted" if check.accepted else f"rejected at {check.stage}"
    lines = [
        f"# Generated mechanism {name or check.sha256[:12]} ({status})",
        "",
        f"- Round {round}, mode `{mode}`, source sha256 `{check.sha256}`",
        f"- Idea: {idea}",
        f"- Gate: {check.summary()}",
        "",
        "```python",
        source.rstrip(),
        "```",
    ]
    return "\n".join(lines)
