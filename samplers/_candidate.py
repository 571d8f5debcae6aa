"""A candidate configuration on its way from the model's answer to the stored trial."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Candidate:
    """One configuration, with where it came from and what happened to it on the way.

    Attributes:
        params: The configuration (inside the search space once repaired).
        origin: ``"llm"`` (the model's answer), ``"mechanism"`` (a ``prepare`` hook took the
            trial over) or ``"fallback"`` (the base sampler, after the model failed).
        repairs: What was changed to bring the model's answer into the space, in order, and
            the reasons of the mechanisms that replaced it.
        replaced_by: Mechanisms whose ``review`` replaced it, in order.
        taken_by: The mechanism that took the trial over (``origin == "mechanism"``).
    """

    params: dict[str, Any]
    origin: str = "llm"
    repairs: list[str] = dataclasses.field(default_factory=list)
    replaced_by: list[str] = dataclasses.field(default_factory=list)
    taken_by: str | None = None

    @property
    def source(self) -> str:
        """The trial's ``llm:source``: ``"llm"``, ``"repaired"``, ``"mechanism"`` or
        ``"fallback"``."""
        if self.origin != "llm":
            return self.origin
        if self.replaced_by:
            return "mechanism"
        return "repaired" if self.repairs else "llm"

    def replace(self, params: dict[str, Any], by: str, repairs: list[str], reason: str) -> None:
        """Evaluate ``params`` instead, because mechanism ``by`` said so."""
        self.params = params
        self.repairs = self.repairs + repairs + [f"replaced by {by}: {reason}".strip()]
        self.replaced_by = self.replaced_by + [by]
