"""The grids issue 24 asks for, cell by cell, and what of them is left to run.

A grid is the full size of one benchmark (the held-out tables, the mechanism floor, the
ablation's groups and tunings, the LM task), named by the same cell keys its rows carry
(``_results.KEY``). :func:`progress` sets the grids against the rows and kept tunings in
``benchmarks/results/``: cells done, cells left, and the CPU-hours the left ones should take at
the pace their arm's finished cells recorded. ``python benchmarks/tables.py`` writes it as
BENCHMARKS.md's ``progress`` block, so what is left of the evidence is read off the data, not
off a closing note.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _arms import STATE_ARMS  # noqa: E402
import _results  # noqa: E402
from ablation import SIZES  # noqa: E402
from ablation import TUNED  # noqa: E402
from ablation import outer_seed_for  # noqa: E402
from heldout import HELDOUT_TABLES  # noqa: E402
from lm import ARMS as LM_ARMS  # noqa: E402
from lm import STEPS as LM_STEPS  # noqa: E402
from lm import TRIALS as LM_TRIALS  # noqa: E402
from mechanisms import ALL_ARMS as MECHANISM_ARMS  # noqa: E402
from mechanisms import DEFAULT_OBJECTIVES as MECHANISM_OBJECTIVES  # noqa: E402

#: The held-out benchmark's arms: the shipped default, Level 0, the classical samplers and the
#: optimizer's state in the prompt (issue 24 items 2 and 4).
HELDOUT_ARMS = ["default", "level0", "tpe", "random", "cmaes", "gp", *STATE_ARMS]
SEEDS = tuple(range(10))
TRIALS = 30


@dataclass(frozen=True)
class Row:
    """One line of the progress table: a benchmark's arm (or its tunings)."""

    benchmark: str
    arm: str
    done: int
    planned: int
    seconds_each: float | None  # median wall time of the finished cells; None when none

    @property
    def left(self) -> int:
        return self.planned - self.done

    @property
    def hours_left(self) -> float | None:
        if self.left == 0:
            return 0.0
        return None if self.seconds_each is None else self.left * self.seconds_each / 3600


def _key(benchmark: str, arm: str, objective: str, seed: int, n_trials: int,
         outer_seed: int | str = "") -> tuple[str, ...]:  # fmt: skip
    return _results.cell_key({
        "benchmark": benchmark, "arm": arm, "objective": objective, "seed": seed,
        "n_trials": n_trials, "outer_seed": outer_seed,
    })  # fmt: skip


def planned_cells() -> dict[str, dict[str, set[tuple[str, ...]]]]:
    """benchmark -> arm -> the cell keys of its full grid."""
    grids: dict[str, dict[str, set[tuple[str, ...]]]] = {}
    grids["heldout"] = {
        arm: {_key("heldout", arm, t, s, TRIALS) for t in HELDOUT_TABLES for s in SEEDS}
        for arm in HELDOUT_ARMS
    }
    grids["mechanisms"] = {
        _results.ARM_NAMES.get(arm, arm): {
            _key("mechanisms", _results.ARM_NAMES.get(arm, arm), o, s, TRIALS)
            for o in MECHANISM_OBJECTIVES
            for s in SEEDS
        }
        for arm in MECHANISM_ARMS
    }
    full = SIZES["full"]
    ablation: dict[str, set[tuple[str, ...]]] = {}
    for arm in ["A", "tpe", "random"]:
        ablation[arm] = {
            _key("ablation", arm, t, s, full.heldout_trials)
            for t in full.tables
            for s in full.heldout_seeds
        }
    for group in TUNED:  # each held-out cell is judged with one outer seed's choice
        ablation[group] = {
            _key("ablation", group, t, s, full.heldout_trials,
                 outer_seed_for(t, s, full.outer_seeds))
            for t in full.tables
            for s in full.heldout_seeds
        }  # fmt: skip
    grids["ablation"] = ablation
    grids["lm"] = {
        arm: {_key("lm", arm, f"lm/{LM_STEPS}steps", s, LM_TRIALS) for s in SEEDS}
        for arm in LM_ARMS
    }
    return grids


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def progress(
    data: dict[str, list[dict[str, str]]], tunings: Sequence[dict[str, Any]]
) -> list[Row]:
    """Each grid's arms against the rows in ``data`` (benchmark -> rows) and the kept
    ``tunings`` (benchmarks/results/ablation_tuning.jsonl's records)."""
    out = []
    for benchmark, arms in planned_cells().items():
        rows = data.get(benchmark, [])
        for arm, planned in arms.items():
            mine = [r for r in rows if _results.cell_key(r) in planned]
            walls = [float(r["wall_s"]) for r in mine if r.get("wall_s")]
            done = len({_results.cell_key(r) for r in mine})
            out.append(Row(benchmark, arm, done, len(planned), _median(walls)))
        if benchmark == "ablation":
            full = SIZES["full"]
            for group in TUNED:
                kept = [
                    t for t in tunings
                    if t.get("size") == "full" and t.get("group") == group
                    and int(t.get("outer_seed", -1)) in full.outer_seeds
                ]  # fmt: skip
                seeds = {int(t["outer_seed"]) for t in kept}
                seconds = [float(t["choice"]["tuning_s"]) for t in kept
                           if t.get("choice", {}).get("tuning_s")]  # fmt: skip
                out.append(Row("ablation", f"{group} tuning", len(seeds),
                               len(full.outer_seeds), _median(seconds)))  # fmt: skip
    return out


def render_progress(data: dict[str, list[dict[str, str]]], tunings_path: Path) -> list[str]:
    """The progress block: per benchmark, the arms complete and each arm with cells left."""
    rows = progress(data, _results.read_records(tunings_path))
    lines = [
        "| benchmark | arm | cells done / planned | left | wall s per cell, median of the done "
        "| CPU-hours left, at that pace |",
        "|---|---|---|---|---|---|",
    ]
    for benchmark in dict.fromkeys(r.benchmark for r in rows):
        mine = [r for r in rows if r.benchmark == benchmark]
        complete = [r for r in mine if r.left == 0]
        if complete:
            names = ", ".join(r.arm for r in complete)
            done = sum(r.done for r in complete)
            lines.append(f"| {benchmark} | complete: {names} | {done} / {done} | 0 | - | 0 |")
        for r in mine:
            if r.left == 0:
                continue
            each = "-" if r.seconds_each is None else f"{r.seconds_each:.0f}"
            hours = "unknown (no cell done)" if r.hours_left is None else f"{r.hours_left:.1f}"
            lines.append(
                f"| {benchmark} | {r.arm} | {r.done} / {r.planned} | {r.left} | {each} "
                f"| {hours} |"
            )
    known = sum(r.hours_left or 0.0 for r in rows)
    unknown = [f"{r.benchmark} {r.arm}" for r in rows if r.hours_left is None]
    total = f"{known:.0f} CPU-hours left at the recorded pace"
    if unknown:
        verb = "has" if len(unknown) == 1 else "have"
        total += f", plus {', '.join(unknown)}, which {verb} no finished cell to time"
    left = sum(r.left for r in rows)
    lines += ["", f"{left} cells and tunings left; {total}." if left else "Every grid complete."]
    return lines
