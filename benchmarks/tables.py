"""Write BENCHMARKS.md's tables (and the README's headline) from benchmarks/results/*.csv.

Every generated table sits between ``<!-- tables:begin NAME -->`` and ``<!-- tables:end NAME
-->``; nothing between the markers is typed by hand. ``NAME`` is a results file's benchmark
(``heldout``, ``mechanisms``, ``ablation``, ``lm``, ...), ``headline`` or ``progress`` (what
is left of each grid, benchmarks/_grids.py). README.md's ``headline`` block is filled when the
README has the markers, and skipped otherwise.

    python benchmarks/tables.py            # rewrite the blocks
    python benchmarks/tables.py --check    # exit 1 when a file and the data disagree

Each block says the machine, the dates, the commits and the command behind it. Regret is read
twice, because users pay for trials and for time: after the study's trials ("equal trials"),
and within the median wall time of TPE's study on the same objective ("equal wall time": the
best-so-far regret of the trials finished within that many seconds of summed trial time; an arm
that finished no trial by then has found nothing and ranks below every arm that did). Tests:
two-sided Wilcoxon signed-rank on seed-paired regrets, Holm-adjusted within a family (one per
opponent and reading, across objectives), and Vargha-Delaney A12 (the probability that the arm's
regret is lower) with a 95% paired bootstrap interval, from ``bilevel_optuna.stats``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import warnings
from collections import defaultdict
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _results  # noqa: E402
from _grids import HELDOUT_ARMS  # noqa: E402
from _grids import render_progress  # noqa: E402

ROOT = _results.ROOT
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
README_MD = ROOT / "README.md"
ALPHA = 0.05

#: Reproduce a benchmark's rows, then its tables.
COMMANDS = {
    "heldout": "nice -n 10 python benchmarks/heldout.py --storage sqlite:///heldout.db --seeds 10 "
    f"--jobs 2 --arms {','.join(HELDOUT_ARMS)}",
    "mechanisms": "nice -n 10 python benchmarks/mechanisms.py --storage sqlite:///mech.db "
    "--seeds 10 --jobs 2",
    "ablation": "nice -n 10 python benchmarks/ablation.py --storage sqlite:///ablation.db",
    "lm": "nice -n 10 python benchmarks/lm.py --storage sqlite:///lm.db --seeds 10 --jobs 2",
}
#: The arm each benchmark is about, and what it is compared with.
FOCAL = {
    "heldout": ("default", ["tpe", "random", "level0", "cmaes", "gp"]),
    "lm": ("bilevel", ["default", "tpe", "random"]),
}
#: Further pairs a benchmark tests where both arms have rows, each pair its own Holm family: the
#: optimizer's state in the prompt, held out (issue 24 item 2; arms in benchmarks/mechanisms.py).
EXTRA_PAIRS = {
    "heldout": [
        ("cl-cmaes+state", "tpe"),
        ("cl-cmaes+state", "cmaes"),
        ("cl-cmaes+state", "default"),
        ("cl-cmaes+state", "cl-cmaes"),
        ("cl-cmaes", "tpe"),
        ("cl-cmaes", "cmaes"),
        ("cl-cmaes", "default"),
        ("default+state", "tpe"),
        ("default+state", "default"),
    ],
}
#: Where the focal arm has no rows yet, the next one takes its place.
STAND_IN = {"bilevel": "default"}
REFERENCE_ARM = "tpe"  # whose median wall time sets the equal-wall-time budget


# ---------------------------------------------------------------------------- the numbers


@dataclass(frozen=True)
class Cell:
    arm: str
    objective: str
    seed: int
    outer_seed: str
    regret: float
    wall: float
    model: float
    fallback: float
    tuning: float
    curve: list[tuple[int, float, float]]
    extra: str = ""


def _float(text: str) -> float:
    return float(text) if text not in ("", None) else math.nan


def cells_of(rows: Sequence[dict[str, str]]) -> list[Cell]:
    """Rows as cells; where a cell appears twice (two runs raced), the first row counts."""
    seen: set[tuple[str, ...]] = set()
    cells = []
    for row in rows:
        key = _results.cell_key(row)
        if key in seen:
            continue
        seen.add(key)
        cells.append(
            Cell(
                arm=row["arm"],
                objective=row["objective"],
                seed=int(row["seed"]),
                outer_seed=row.get("outer_seed", ""),
                regret=_float(row["regret"]),
                wall=_float(row["wall_s"]),
                model=_float(row["model_share"]),
                fallback=_float(row["fallback_share"]),
                tuning=_float(row.get("tuning_evals", "")),
                curve=_results.parse_curve(row.get("curve", "")),
                extra=row.get("extra", ""),
            )
        )
    return cells


def wall_budgets(cells: Sequence[Cell]) -> dict[str, float]:
    """Objective -> the median wall time of the reference arm's studies on it."""
    walls: dict[str, list[float]] = defaultdict(list)
    for c in cells:
        if c.arm == REFERENCE_ARM and math.isfinite(c.wall):
            walls[c.objective].append(c.wall)
    return {o: float(np.median(w)) for o, w in walls.items()}


def measure(cell: Cell, reading: str, budgets: dict[str, float]) -> float:
    """The cell's regret at equal trials (``"trials"``) or equal wall time (``"wall"``)."""
    if reading == "trials":
        return cell.regret
    budget = budgets.get(cell.objective)
    if budget is None:
        return math.nan
    return _results.regret_at(cell.curve, seconds=budget)


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "none yet"
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _quartiles(values: Sequence[float]) -> str:
    v = [x for x in values if not math.isnan(x)]
    if not v:
        return "-"
    array = np.asarray(v, dtype=float)
    # With "none yet" (inf) among them, interpolation would give NaN: take observed values.
    method = "linear" if np.isfinite(array).all() else "nearest"
    q = np.percentile(array, [25, 50, 75], method=method)
    return f"{_fmt(q[1])} [{_fmt(q[0])}, {_fmt(q[2])}]"


def _ranks_only(a: list[float], b: list[float]) -> tuple[list[float], list[float]]:
    """Infinite regrets (no trial yet) -> a value above every finite one, for rank tests."""
    finite = [abs(x) for x in a + b if math.isfinite(x)]
    big = (max(finite) + 1.0) * 1e6 if finite else 1.0
    return [big if math.isinf(x) else x for x in a], [big if math.isinf(x) else x for x in b]


@dataclass(frozen=True)
class Test:
    n: int
    p: float
    a12: float
    low: float
    high: float


def paired(a: list[float], b: list[float]) -> Test | None:
    """Wilcoxon signed-rank p and A12 (a better) with its bootstrap interval; None if < 2 pairs."""
    from bilevel_optuna.stats import paired_test
    from bilevel_optuna.stats import vargha_delaney_a12

    keep = [(x, y) for x, y in zip(a, b) if not (math.isnan(x) or math.isnan(y))]
    if len(keep) < 2:
        return None
    x, y = _ranks_only([k[0] for k in keep], [k[1] for k in keep])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(paired_test(x, y).pvalue)
        a12 = vargha_delaney_a12(x, y, direction="minimize", paired=True)
    return Test(len(keep), p, a12.statistic, a12.ci_low, a12.ci_high)


def by_pair(cells: Sequence[Cell], arm: str, reading: str, budgets: dict[str, float],
            objective: str | None = None) -> dict[tuple[str, int], float]:
    """(objective, seed) -> the arm's regret; an arm with several outer seeds is averaged."""
    values: dict[tuple[str, int], list[float]] = defaultdict(list)
    for c in cells:
        if c.arm == arm and (objective is None or c.objective == objective):
            values[(c.objective, c.seed)].append(measure(c, reading, budgets))
    return {k: float(np.mean(v)) for k, v in values.items()}


def verdict(test: Test, p_holm: float, arm: str) -> str:
    if math.isnan(p_holm):
        return "no power"
    if p_holm < ALPHA:
        return f"{arm} better" if test.a12 > 0.5 else f"{arm} worse"
    return "no significant difference"


# ------------------------------------------------------------------------------- rendering


def provenance(rows: Sequence[dict[str, str]], command: str) -> list[str]:
    dates = sorted(r["date"] for r in rows if r["date"])
    commits = sorted({r["commit"] for r in rows})
    machines = sorted({r["machine"] for r in rows})
    trials = sorted({r["n_trials"] for r in rows}, key=int)
    return [
        f"{len(rows)} finished cells ({', '.join(trials)} trials per study), "
        f"{dates[0]} to {dates[-1]}, commit {', '.join(commits)}; "
        f"machine: {'; '.join(machines)}.",
        "",
        f"Reproduce: `{command}`, then `python benchmarks/tables.py` (cells already in "
        "benchmarks/results/ are skipped).",
    ]


def summary_table(cells: Sequence[Cell], budgets: dict[str, float], arms: Sequence[str],
                  objectives: Sequence[str]) -> list[str]:
    lines = [
        "| objective | arm | n | regret at equal trials, median [IQR] | regret at equal wall "
        "time, median [IQR] (reached) | model / fallback share | wall s per study, median |",
        "|---|---|---|---|---|---|---|",
    ]
    for objective in objectives:
        budget = budgets.get(objective)
        for arm in arms:
            mine = [c for c in cells if c.arm == arm and c.objective == objective]
            if not mine:
                continue
            trials = [c.regret for c in mine]
            wall = [measure(c, "wall", budgets) for c in mine]
            reached = sum(math.isfinite(x) for x in wall)
            at_wall = "-" if budget is None else f"{_quartiles(wall)} ({reached}/{len(mine)})"
            model = [c.model for c in mine if not math.isnan(c.model)]
            share = "-"
            if model:
                share = (
                    f"{np.mean(model):.2f} / "
                    f"{np.mean([c.fallback for c in mine if not math.isnan(c.fallback)]):.2f}"
                )
            lines.append(
                f"| {objective} | {arm} | {len(mine)} | {_quartiles(trials)} | {at_wall} "
                f"| {share} | {np.median([c.wall for c in mine]):.3g} |"
            )
    return lines


Family = Callable[[str, str, str], tuple[str, ...]]


def test_table(cells: Sequence[Cell], budgets: dict[str, float],
               pairs: Sequence[tuple[str, str]], objectives: Sequence[str],
               family: Family) -> list[str]:
    """One line per (focal, opponent, objective, reading); Holm within ``family``."""
    found: list[tuple[tuple[str, ...], str, str, str, str, Test]] = []
    for reading in ("trials", "wall"):
        for focal, opponent in pairs:
            for objective in objectives:
                mine = by_pair(cells, focal, reading, budgets, objective)
                theirs = by_pair(cells, opponent, reading, budgets, objective)
                common = sorted(set(mine) & set(theirs))
                test = paired([mine[k] for k in common], [theirs[k] for k in common])
                if test is not None:
                    key = family(focal, opponent, objective) + (reading,)
                    found.append((key, reading, focal, opponent, objective, test))
    if not found:
        return ["No pair of arms shares two seeds yet."]
    from bilevel_optuna.stats import holm

    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, item in enumerate(found):
        groups[item[0]].append(i)
    adjusted = [math.nan] * len(found)
    for members in groups.values():
        for i, p in zip(members, holm([found[i][5].p for i in members])):
            adjusted[i] = float(p)
    lines = [
        "| reading | arm | opponent | objective | n pairs | Wilcoxon p | Holm p "
        "| A12, arm better [95% CI] | verdict (alpha 0.05, Holm) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (_, reading, focal, opponent, objective, t), p_holm in zip(found, adjusted):
        lines.append(
            f"| equal {reading} | {focal} | {opponent} | {objective} | {t.n} | {_fmt(t.p)} "
            f"| {_fmt(p_holm)} | {t.a12:.2f} [{t.low:.2f}, {t.high:.2f}] "
            f"| {verdict(t, p_holm, focal)} |"
        )
    return lines


def pooled(cells: Sequence[Cell], focal: str, opponent: str,
           objectives: Sequence[str]) -> Test | None:
    """Across objectives at equal trials: each regret over the objective's median random-search
    regret, paired by (objective, seed)."""
    a, b = [], []
    for objective in objectives:
        scale = [c.regret for c in cells if c.arm == "random" and c.objective == objective]
        scale_value = float(np.median(scale)) if scale else math.nan
        if not scale_value > 0:
            continue
        mine = by_pair(cells, focal, "trials", {}, objective)
        theirs = by_pair(cells, opponent, "trials", {}, objective)
        for key in sorted(set(mine) & set(theirs)):
            a.append(mine[key] / scale_value)
            b.append(theirs[key] / scale_value)
    return paired(a, b)


def _arms_in_order(cells: Sequence[Cell], preferred: Sequence[str]) -> list[str]:
    present = {c.arm for c in cells}
    return [a for a in preferred if a in present] + sorted(present - set(preferred))


def _objectives(cells: Sequence[Cell]) -> list[str]:
    return sorted({c.objective for c in cells})


def render_versus(name: str, rows: Sequence[dict[str, str]]) -> list[str]:
    """A benchmark about one arm against baselines, per objective (heldout, lm)."""
    cells = cells_of(rows)
    budgets = wall_budgets(cells)
    focal, opponents = FOCAL[name]
    if focal not in {c.arm for c in cells} and focal in STAND_IN:
        focal = STAND_IN[focal]
        opponents = [o for o in opponents if o != focal]
    arms = _arms_in_order(cells, [focal, *opponents])
    objectives = _objectives(cells)
    pairs = [(focal, o) for o in opponents if o in arms]
    pairs += [(a, b) for a, b in EXTRA_PAIRS.get(name, []) if a in arms and b in arms]
    lines = provenance(rows, COMMANDS[name]) + [""]
    lines += summary_table(cells, budgets, arms, objectives) + [""]
    lines += test_table(
        cells, budgets, pairs, objectives, family=lambda f, o, _objective: (f, o)
    ) + [""]  # fmt: skip
    return lines + pooled_table(cells, pairs, objectives)


def pooled_table(cells: Sequence[Cell], pairs: Sequence[tuple[str, str]],
                 objectives: Sequence[str]) -> list[str]:
    """One line per pair: :func:`pooled`'s test, where the pair shares two cells."""
    lines = [
        "Pooled over objectives at equal trials (regret / the objective's median random-search "
        "regret, paired by objective and seed):",
        "",
        "| arm | opponent | n pairs | Wilcoxon p | A12, arm better [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for arm, opponent in pairs:
        t = pooled(cells, arm, opponent, objectives)
        if t is not None:
            lines.append(
                f"| {arm} | {opponent} | {t.n} | {_fmt(t.p)} "
                f"| {t.a12:.2f} [{t.low:.2f}, {t.high:.2f}] |"
            )
    return lines


def render_mechanisms(rows: Sequence[dict[str, str]]) -> list[str]:
    """Each mechanism (and the default, TPE, random) against Level 0, per objective."""
    cells = cells_of(rows)
    budgets = wall_budgets(cells)
    arms = _arms_in_order(cells, ["level0", "default"])
    objectives = _objectives(cells)
    lines = provenance(rows, COMMANDS["mechanisms"]) + [""]
    lines += summary_table(cells, budgets, arms, objectives) + [""]
    lines += test_table(
        cells, budgets, [(a, "level0") for a in arms if a != "level0"], objectives,
        family=lambda _f, _o, objective: (objective,),
    ) + [""]  # fmt: skip
    lines += [
        "Proof that each mechanism ran (its records on the trials, all seeds and objectives):",
        "",
        "| arm | mechanism | trials it changed / trials with its record | studies by status |",
        "|---|---|---|---|",
    ]
    for arm in arms:
        totals: dict[str, list[int]] = {}
        statuses: dict[str, dict[str, int]] = {}
        for c in cells:
            if c.arm != arm or not c.extra:
                continue
            for name, text in (json.loads(c.extra).get("records") or {}).items():
                status, _, counts = text.partition(" ")
                changed, _, total = counts.partition("/")
                t = totals.setdefault(name, [0, 0])
                t[0] += int(changed)
                t[1] += int(total)
                s = statuses.setdefault(name, {})
                s[status] = s.get(status, 0) + 1
        for name, (changed, total) in sorted(totals.items()):
            by_status = ", ".join(f"{k} {v}" for k, v in sorted(statuses[name].items()))
            lines.append(f"| {arm} | {name} | {changed} / {total} | {by_status} |")
    return lines


def _proof(choice: dict[str, object]) -> tuple[str, str]:
    """From a tuning's choice (or a row's ``extra``): how many offered mechanisms ran (naming
    those that did not), and the Level-2 sources accepted of those written."""
    statuses = dict(choice.get("mechanisms") or {})  # type: ignore[call-overload]
    ran = "-"
    if statuses:
        never = sorted(n for n, s in statuses.items() if s == "never_ran")
        ran = f"{len(statuses) - len(never)} of {len(statuses)}"
        ran += f" (never: {', '.join(never)})" if never else ""
    research = dict(choice.get("research") or {})  # type: ignore[call-overload]
    written = research.get("written")
    accepted = research.get("accepted") or []
    return ran, "-" if written is None else f"{len(accepted)} / {written}"


def _tuning_proof(cells: Sequence[Cell]) -> tuple[str, str]:
    """:func:`_proof` of a group's cells (their ``extra``)."""
    return _proof(next((json.loads(c.extra) for c in cells if c.extra), {}))


def _config_summary(config: dict[str, object]) -> str:
    """A kept configuration in one line: the proposer's settings, then its mechanisms."""
    keys = ("temperature", "history_size", "history_order", "template", "n_candidates")
    parts = []
    for key in keys:
        value = config.get(key)
        if value is not None:
            parts.append(f"{key} {value:.2f}" if isinstance(value, float) else f"{key} {value}")
    mechanisms = [m[0] if isinstance(m, list) else str(m) for m in config.get("mechanisms") or []]
    return ", ".join(parts) + f"; mechanisms: {' + '.join(mechanisms) or 'none'}"


def render_tunings(path: Path) -> list[str]:
    """The ablation's kept tunings (benchmarks/ablation.py, one JSON line each): what each group
    chose on each outer seed, what it cost, and the proof that every offered mechanism ran."""
    records = _results.read_records(path)
    if not records:
        return []
    lines = [
        "",
        f"Tunings kept ({path.name}; a held-out cell is judged with one of them):",
        "",
        "| group | outer seed | size | tuning evaluations (inner trials) | tuning time (s) "
        "| chosen configuration | offered mechanisms that ran (trial records) "
        "| Level 2 sources accepted / written | commit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for record in records:
        choice = record["choice"]
        ran, research = _proof(choice)
        lines.append(
            f"| {record['group']} | {record['outer_seed']} | {record['size']} "
            f"| {choice.get('tuning_evals', '-')} | {choice.get('tuning_s', '-')} "
            f"| {_config_summary(choice.get('config') or {})} | {ran} "
            f"| {research} | {record.get('commit', '-')} |"
        )
    return lines


def render_ablation(rows: Sequence[dict[str, str]]) -> list[str]:
    """Groups A-D held out: per group and outer seed, then the groups against each other."""
    cells = cells_of(rows)
    budgets = wall_budgets(cells)
    groups = _arms_in_order(cells, ["A", "B", "C", "D", "tpe", "random"])
    objectives = _objectives(cells)
    lines = provenance(rows, COMMANDS["ablation"]) + [
        "",
        "| group | outer seed | held-out cells | regret at equal trials, median [IQR] "
        "| tuning evaluations (inner trials) | model / fallback share | offered mechanisms "
        "that ran in tuning (trial records) | Level 2 sources accepted / written |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for group in groups:
        outer = sorted({c.outer_seed for c in cells if c.arm == group})
        for o in outer:
            mine = [c for c in cells if c.arm == group and c.outer_seed == o]
            tuning = sorted({c.tuning for c in mine if not math.isnan(c.tuning)})
            model = [c.model for c in mine if not math.isnan(c.model)]
            ran, research = _tuning_proof(mine)
            lines.append(
                f"| {group} | {o or '-'} | {len(mine)} | {_quartiles([c.regret for c in mine])} "
                f"| {', '.join(f'{t:.0f}' for t in tuning) or '0'} "
                f"| {f'{np.mean(model):.2f}' if model else '-'} / "
                f"{_fmt(float(np.mean([c.fallback for c in mine])))} | {ran} | {research} |"
            )
    # A against TPE first: the reference every group is read against, rerun inside the ablation.
    order = [("A", "tpe"), ("B", "A"), ("C", "B"), ("D", "C"), ("D", "A"), ("B", "tpe"),
             ("D", "tpe")]  # fmt: skip
    pairs = [(g, o) for g, o in order if g in groups and o in groups]
    lines += [
        "",
        "Groups against each other, held out (each cell judged with one outer seed's choice, "
        "taken in turn, so a group's cells carry the outer loop's variance; paired by table and "
        "seed; Holm across the tables of each pair):",
        "",
    ]
    lines += test_table(
        cells, budgets, pairs, objectives, family=lambda f, o, _objective: (f, o)
    )
    return lines + [""] + pooled_table(cells, pairs, objectives)


def render_generic(name: str, rows: Sequence[dict[str, str]]) -> list[str]:
    cells = cells_of(rows)
    budgets = wall_budgets(cells)
    lines = provenance(rows, f"python benchmarks/{name}.py") + [""]
    return lines + summary_table(cells, budgets, _arms_in_order(cells, []), _objectives(cells))


def render(name: str, rows: Sequence[dict[str, str]]) -> str:
    if not rows:
        return f"No finished cells yet: `{COMMANDS.get(name, f'python benchmarks/{name}.py')}`."
    if name in FOCAL:
        lines = render_versus(name, rows)
    elif name == "mechanisms":
        lines = render_mechanisms(rows)
    elif name == "ablation":
        lines = render_ablation(rows)
    else:
        lines = render_generic(name, rows)
    return "\n".join(lines)


def render_headline(data: dict[str, list[dict[str, str]]]) -> str:
    """One line per question the project exists to answer, from whatever rows exist."""
    questions = [
        ("heldout", "default", "tpe", "The shipped default against TPE, held-out tables"),
        ("heldout", "default", "random", "The shipped default against random search, held out"),
        ("heldout", "default", "level0", "The shipped default against Level 0, held out"),
        ("heldout", "default", "gp", "The shipped default against Optuna's GPSampler, held out"),
        (
            "heldout",
            "cl-cmaes+state",
            "tpe",
            "CMA-ES in control, its state in the prompt (Centaur's setup), against TPE, held out",
        ),
        (
            "heldout",
            "default+state",
            "tpe",
            "The shipped default with TPE's state in the prompt, against TPE, held out",
        ),
        ("ablation", "D", "A", "Ablation: everything (D) against the default sampler alone (A)"),
        ("lm", "bilevel", "tpe", "LM task: the bilevel-chosen configuration against TPE"),
        ("lm", "default", "tpe", "LM task: the shipped default against TPE"),
    ]
    lines = [
        "| question | reading | objectives: arm better / no significant difference / worse "
        "(Holm, alpha 0.05) | pooled A12, arm better [95% CI] | n pairs | source |",
        "|---|---|---|---|---|---|",
    ]
    from bilevel_optuna.stats import holm

    for name, focal, opponent, label in questions:
        cells = cells_of(data.get(name, []))
        arms = {c.arm for c in cells}
        if focal not in arms or opponent not in arms:
            continue
        budgets = wall_budgets(cells)
        objectives = _objectives(cells)
        for reading in ("trials", "wall"):
            tests = []
            for objective in objectives:
                mine = by_pair(cells, focal, reading, budgets, objective)
                theirs = by_pair(cells, opponent, reading, budgets, objective)
                common = sorted(set(mine) & set(theirs))
                t = paired([mine[k] for k in common], [theirs[k] for k in common])
                if t is not None:
                    tests.append(t)
            if not tests:
                continue
            adjusted = holm([t.p for t in tests])
            better = sum(p < ALPHA and t.a12 > 0.5 for t, p in zip(tests, adjusted))
            worse = sum(p < ALPHA and t.a12 < 0.5 for t, p in zip(tests, adjusted))
            level = len(tests) - better - worse
            pool = pooled(cells, focal, opponent, objectives) if reading == "trials" else None
            a12 = f"{pool.a12:.2f} [{pool.low:.2f}, {pool.high:.2f}]" if pool else "-"
            n = str(pool.n) if pool else str(sum(t.n for t in tests))
            lines.append(
                f"| {label} | equal {reading} | {better} / {level} / {worse} | {a12} | {n} "
                f"| benchmarks/results/{name}.csv |"
            )
    if len(lines) == 2:
        n = sum(len(rows) for rows in data.values())
        if n == 0:
            return "No finished cells yet."
        return (
            f"No question has two seeds with both arms finished yet ({n} cells so far in "
            "benchmarks/results/; BENCHMARKS.md has their tables)."
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------- the files


def _block(name: str) -> re.Pattern[str]:
    name = re.escape(name)
    return re.compile(
        rf"(<!-- tables:begin {name} -->\n)(.*?)(<!-- tables:end {name} -->)", re.DOTALL
    )


def fill(text: str, name: str, body: str) -> str | None:
    """``text`` with block ``name`` replaced by ``body``; None when it has no such block."""
    pattern = _block(name)
    if not pattern.search(text):
        return None
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(3), text)


def load_results(directory: Path = _results.RESULTS_DIR) -> dict[str, list[dict[str, str]]]:
    return {p.stem: _results.read_rows(p) for p in sorted(directory.glob("*.csv"))}


def generate(
    benchmarks_md: Path = BENCHMARKS_MD,
    readme_md: Path = README_MD,
    directory: Path = _results.RESULTS_DIR,
) -> tuple[dict[Path, str], list[str]]:
    """The new text of each file, and the problems (a results file without its block)."""
    data = load_results(directory)
    problems: list[str] = []
    text = benchmarks_md.read_text(encoding="utf-8")
    names = sorted(set(COMMANDS) | set(data))
    blocks = {name: render(name, data.get(name, [])) for name in names}
    tunings = render_tunings(directory / "ablation_tuning.jsonl")
    if tunings:
        blocks["ablation"] += "\n" + "\n".join(tunings)
    blocks["headline"] = render_headline(data)
    blocks["progress"] = "\n".join(render_progress(data, directory / "ablation_tuning.jsonl"))
    for name, body in blocks.items():
        new = fill(text, name, body)
        if new is None:
            problems.append(
                f"{benchmarks_md.name} has no block '{name}': add the lines "
                f"'<!-- tables:begin {name} -->' and '<!-- tables:end {name} -->' where its "
                "table belongs."
            )
        else:
            text = new
    out = {benchmarks_md: text}
    if readme_md.exists():
        readme = fill(readme_md.read_text(encoding="utf-8"), "headline", blocks["headline"])
        if readme is not None:
            out[readme_md] = readme
    return out, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 when a file is stale"
    )
    parser.add_argument("--benchmarks-md", type=Path, default=BENCHMARKS_MD)
    parser.add_argument("--readme", type=Path, default=README_MD)
    parser.add_argument("--results-dir", type=Path, default=_results.RESULTS_DIR)
    args = parser.parse_args(argv)
    files, problems = generate(args.benchmarks_md, args.readme, args.results_dir)
    for problem in problems:
        print(problem, file=sys.stderr)
    stale = [p for p, text in files.items() if p.read_text(encoding="utf-8") != text]
    if args.check:
        for path in stale:
            print(
                f"{path.name} disagrees with benchmarks/results/: run python benchmarks/tables.py",
                file=sys.stderr,
            )
        return 1 if stale or problems else 0
    for path in stale:
        path.write_text(files[path], encoding="utf-8")
        print(f"wrote {path.name}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
