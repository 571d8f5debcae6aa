"""The per-trial proof of what each mechanism did: written, merged and read in one place.

LLMSampler stores it on every trial it proposes, under the trial user attribute
:data:`bilevel_optuna._attrs.MECHANISMS`, as ``{name: entry}`` where an entry is::

    {"version": "2", "hooks": {"review": 3, ...}, "changed": 1, "errors": [...], "off": false,
     ...whatever the mechanism wrote into ``context.record[name]``}

``hooks`` counts the calls of each hook the mechanism's class defines (zero for a defined hook
that was never called), ``changed`` how many times it changed the proposal, ``errors`` the
hooks that raised or overran, ``off`` whether it was switched off for the rest of the trial.
The ``after_trial`` calls are merged into the same record when the trial finishes.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from bilevel_optuna import _attrs
from bilevel_optuna.samplers.mechanisms._base import Mechanism
from bilevel_optuna.samplers.mechanisms._base import overridden_hooks

#: Keys of an entry that the record itself owns; anything else is the mechanism's own.
OWN_KEYS = ("version", "hooks", "changed", "errors", "off")


class MechanismRecord:
    """The record of one trial: an entry per configured mechanism."""

    def __init__(self, entries: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        for name, entry in (entries or {}).items():
            if isinstance(entry, Mapping):
                e = dict(entry)
                e["hooks"] = dict(e.get("hooks") or {})
                e["errors"] = list(e.get("errors") or [])
                e.setdefault("changed", 0)
                e.setdefault("off", False)
                self.entries[str(name)] = e

    @classmethod
    def for_mechanisms(cls, mechanisms: Iterable[Mechanism]) -> "MechanismRecord":
        """A fresh record: every hook a mechanism defines at zero calls."""
        return cls(
            {
                m.name: {
                    "version": m.version,
                    "hooks": {h: 0 for h in overridden_hooks(m)},
                    "changed": 0,
                    "errors": [],
                    "off": False,
                }
                for m in mechanisms
            }
        )

    @classmethod
    def of_trial(cls, user_attrs: Mapping[str, Any]) -> "MechanismRecord":
        """The record stored in a trial's user attributes (empty where there is none)."""
        stored = user_attrs.get(_attrs.MECHANISMS)
        return cls(stored if isinstance(stored, Mapping) else None)

    # ------------------------------------------------------------------ writing
    def defines(self, name: str, hook: str) -> bool:
        return hook in self.entries[name]["hooks"]

    def is_off(self, name: str) -> bool:
        return bool(self.entries[name]["off"])

    def count_call(self, name: str, hook: str) -> None:
        hooks = self.entries[name]["hooks"]
        hooks[hook] = hooks.get(hook, 0) + 1

    def count_change(self, name: str) -> None:
        self.entries[name]["changed"] += 1

    def fail(self, name: str, message: str) -> None:
        """Record an error and switch the mechanism off for the rest of the trial."""
        self.entries[name]["errors"].append(message)
        self.entries[name]["off"] = True

    def add_extra(self, extra: Mapping[str, Mapping[str, Any]]) -> None:
        """Add what mechanisms wrote into ``context.record`` (never over the record's keys)."""
        for name, values in extra.items():
            if name in self.entries:
                for key, value in values.items():
                    if key not in OWN_KEYS:
                        self.entries[name][key] = value

    def merge_after_trial(self, finished: "MechanismRecord") -> None:
        """Merge the ``after_trial`` calls and errors of ``finished`` into this record."""
        for name, entry in finished.entries.items():
            mine = self.entries.setdefault(
                name,
                {"version": entry["version"], "hooks": {}, "changed": 0, "errors": [], "off": False},
            )
            mine["hooks"]["after_trial"] = entry["hooks"].get("after_trial", 0)
            mine["errors"].extend(entry["errors"])

    def to_attr(self) -> dict[str, dict[str, Any]]:
        """The JSON-able value stored under :data:`~bilevel_optuna._attrs.MECHANISMS`."""
        return {name: dict(entry) for name, entry in self.entries.items()}

    # ------------------------------------------------------------------ reading
    def calls(self, name: str) -> dict[str, int]:
        return {h: int(n) for h, n in self.entries[name]["hooks"].items()}

    def changes(self, name: str) -> int:
        return int(self.entries[name].get("changed", 0))

    def errors(self, name: str) -> list[str]:
        return [str(m) for m in self.entries[name]["errors"]]

    def version(self, name: str) -> str:
        return str(self.entries[name].get("version", ""))
