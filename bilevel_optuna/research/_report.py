"""The report of a research run, built from the storage alone."""

from __future__ import annotations

import dataclasses
from typing import Any

from bilevel_optuna.research._diagnose import Diagnosis
from bilevel_optuna.research._store import GeneratedMechanism
from bilevel_optuna.research._store import MechanismStore


@dataclasses.dataclass
class ResearchReport:
    """What a research run produced.

    Attributes:
        run: The bilevel run.
        rounds: Each round's record (diagnosis, ideas, choice, spec, outcome, evaluation).
        mechanisms: Every stored source, accepted or rejected.
        acceptance: Per generation mode: sources written, accepted, and the accepted share.
    """

    run: str
    rounds: dict[int, dict[str, Any]]
    mechanisms: list[GeneratedMechanism]
    acceptance: dict[str, dict[str, float]]

    @property
    def accepted(self) -> list[GeneratedMechanism]:
        return [m for m in self.mechanisms if m.accepted]

    def to_markdown(self) -> str:
        lines = [f"# Mechanism research on run `{self.run}`", ""]
        lines += [
            "## Acceptance by generation mode",
            "",
            "| mode | sources | accepted | share |",
            "|---|---|---|---|",
        ]
        for mode, a in sorted(self.acceptance.items()):
            lines.append(
                f"| {mode} | {a['written']:.0f} | {a['accepted']:.0f} | {a['share']:.0%} |"
            )
        for number, record in self.rounds.items():
            lines += ["", f"## Round {number}", ""]
            for line in _diagnosis_lines(record.get("diagnosis", {})):
                lines.append(f"- {line}")
            lines += ["", "Ideas:"]
            for k, idea in enumerate(record.get("ideas", [])):
                mark = " (chosen)" if k == record.get("choice") else ""
                lines.append(f"{k}. [{idea.get('field')}] {idea.get('idea')}{mark}")
            if record.get("defaulted"):
                lines.append(
                    f"\nSteps that fell back to a default (no usable answer): {record['defaulted']}"
                )
            lines.append(
                f"\n{record.get('model_calls', 0)} model calls, {record.get('seconds', 0):.1f} s."
            )
        lines += ["", "## Generated code", ""]
        lines += [
            "| round | mode | try | status | name or stage | reasons |",
            "|---|---|---|---|---|---|",
        ]
        for m in self.mechanisms:
            what = m.name if m.accepted else m.check.stage
            reasons = "; ".join(m.check.reasons)[:200].replace("|", "/").replace("\n", " ")
            lines.append(
                f"| {m.round} | {m.mode} | {m.attempt} | {m.status} | {what} | {reasons} |"
            )
        lines += ["", "## Measured effect against the incumbent and the baselines", ""]
        rows = [m for m in self.accepted if m.effect]
        if not rows:
            lines.append("No accepted mechanism was measured (no evaluation was run).")
        else:
            lines += [
                "| mechanism | against | n | test | p (Holm) | A12 | verdict | activity |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for m in rows:
                e = dict(m.effect or {})
                if e.get("disabled"):
                    e["activity"] = (
                        f"{e.get('activity')}; disabled in {e['disabled'].get('studies')} "
                        f"studies: {e['disabled'].get('reason')}"
                    )
                if e.get("note"):
                    lines.append(
                        f"| {m.name} | - | - | - | - | - | {e['note']} | {e.get('activity')} |"
                    )
                    continue
                against = {e.get("incumbent_arm", "incumbent"): e.get("vs_incumbent") or {}}
                against.update(e.get("vs_baselines") or {})
                for arm, c in against.items():
                    lines.append(
                        f"| {m.name} | {arm} | {c.get('n', '-')} | {c.get('test', '-')} | "
                        f"{_fmt(c.get('pvalue_holm'))} | {_fmt(c.get('a12'))} | {c.get('verdict', '-')} | "
                        f"{e.get('activity')} |"
                    )
                if e.get("noise_floor_sd") is not None:
                    lines.append(
                        f"\nNoise floor of {m.name}'s comparison: the incumbent's spread over its "
                        f"seeds, sd {e['noise_floor_sd']:.4g} ({e.get('metric')})."
                    )
            lines.append(
                "\nA12 above 0.5 means the generated mechanism's arm did better. A mechanism whose "
                "activity is `never_ran` or `never_changed` did not influence its studies."
            )
        return "\n".join(lines) + "\n"


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3g}"


def _diagnosis_lines(d: dict[str, Any]) -> list[str]:
    fields = {f.name for f in dataclasses.fields(Diagnosis)}
    return Diagnosis(**{k: v for k, v in d.items() if k in fields}).lines() if d else []


def build_report(store: MechanismStore) -> ResearchReport:
    mechanisms = store.list()
    acceptance: dict[str, dict[str, float]] = {}
    for m in mechanisms:
        a = acceptance.setdefault(m.mode, {"written": 0, "accepted": 0, "share": 0.0})
        a["written"] += 1
        a["accepted"] += m.accepted
    for a in acceptance.values():
        a["share"] = a["accepted"] / a["written"] if a["written"] else 0.0
    return ResearchReport(
        run=store.run, rounds=store.rounds(), mechanisms=mechanisms, acceptance=acceptance
    )
