"""What happened in a bilevel run, read from its stored trials: the first step of a round.

Per inner study of the run (LLM arms only): the share of proposals that repeat an earlier
configuration, how many trials ran since the last improvement, which parameters were never
explored (few of ten bins of their range visited), the share of fallback proposals, and what
each mechanism's records say (calls, changes, errors).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from typing import Any

import numpy as np
import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from bilevel_optuna import _attrs
from bilevel_optuna.samplers.mechanisms._base import normalize


@dataclasses.dataclass
class Diagnosis:
    """Facts from the stored traces, and the same as lines for a prompt."""

    n_studies: int = 0
    n_trials: int = 0
    repeat_share: float = 0.0
    stagnation: float = 0.0
    unexplored: list[str] = dataclasses.field(default_factory=list)
    fallback_share: float = 0.0
    mechanisms: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

    def lines(self) -> list[str]:
        if not self.n_trials:
            return ["No LLM-proposed trial is stored yet."]
        out = [
            f"{self.n_trials} trials of {self.n_studies} studies proposed by the language model.",
            f"{self.repeat_share:.0%} of the proposals repeat an earlier configuration.",
            f"Median trials since the last improvement at the end of a study: {self.stagnation:.0f}.",
            f"{self.fallback_share:.0%} of the proposals fell back to the base sampler.",
        ]
        if self.unexplored:
            out.append("Parameters barely explored: " + ", ".join(self.unexplored) + ".")
        for name, rec in sorted(self.mechanisms.items()):
            out.append(
                f"Mechanism {name}: {rec['calls']} hook calls, {rec['changed']} changes, "
                f"{rec['errors']} errors."
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def diagnose(storage: str | BaseStorage, run: str) -> Diagnosis:
    """Read the LLM arms' inner studies of ``run`` and summarize what went wrong."""
    summaries = optuna.get_all_study_summaries(storage=storage, include_best_trial=False)
    names = [
        s.study_name
        for s in summaries
        if s.user_attrs.get(_attrs.RUN) == run
        and s.user_attrs.get(_attrs.KIND) in ("inner", "baseline", "heldout")
        and s.user_attrs.get(_attrs.ARM) not in ("random", "tpe")
    ]
    d = Diagnosis()
    repeats = fallbacks = total = 0
    stagnations: list[int] = []
    coverage: dict[str, list[float]] = {}
    mechanisms: dict[str, Counter[str]] = {}
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        if not trials:
            continue
        d.n_studies += 1
        seen: set[str] = set()
        best, since = None, 0
        minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
        space = trials[0].distributions
        points = []
        for t in trials:
            total += 1
            key = repr(sorted(t.params.items()))
            repeats += key in seen
            seen.add(key)
            fallbacks += t.user_attrs.get(_attrs.SOURCE) == "fallback"
            if t.state == TrialState.COMPLETE and t.value is not None:
                if best is None or (t.value < best if minimize else t.value > best):
                    best, since = t.value, 0
                else:
                    since += 1
            if all(n in t.params for n in space):
                points.append(normalize(t.params, space))
            for mech, rec in (t.user_attrs.get(_attrs.MECHANISMS) or {}).items():
                c = mechanisms.setdefault(mech, Counter())
                c["calls"] += sum((rec.get("hooks") or {}).values())
                c["changed"] += int(rec.get("changed", 0))
                c["errors"] += len(rec.get("errors") or [])
        stagnations.append(since)
        if points:
            arr = np.array(points)
            for i, pname in enumerate(space):
                bins = np.unique(np.minimum((arr[:, i] * 10).astype(int), 9))
                coverage.setdefault(pname, []).append(len(bins) / 10)
    d.n_trials = total
    if total:
        d.repeat_share = repeats / total
        d.fallback_share = fallbacks / total
    d.stagnation = float(statistics.median(stagnations)) if stagnations else 0.0
    d.unexplored = sorted(p for p, c in coverage.items() if statistics.fmean(c) < 0.3)
    d.mechanisms = {k: dict(v) for k, v in mechanisms.items()}
    return d
