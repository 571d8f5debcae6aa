"""Benchmark results that accumulate: one CSV row per finished cell, under benchmarks/results/.

A *cell* is one study of a grid: (benchmark, arm, objective, seed, n_trials[, outer_seed]). A
runner reads the rows already in its file, skips those cells, runs the others and appends one
row as each finishes, so any later run (on this machine or another, through a shared RDB)
continues where the last stopped. ``benchmarks/tables.py`` turns the files into BENCHMARKS.md's
tables.

Appending is safe across processes: each row is one ``os.write`` of whole lines on a file opened
with ``O_APPEND``, under an exclusive ``flock`` (the header is written under the same lock when
the file is empty), then ``fsync``.

The module also exports the finished studies of a storage written by the older runners (which
wrote no rows) into rows:

    python benchmarks/_results.py export --storage sqlite:////work/bench/heldout.db \\
        --benchmark heldout --commit 521615f

An SQLite file is copied first (SQLite's online backup), so a grid that is still writing to it
is never locked or changed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:  # POSIX; elsewhere O_APPEND single writes alone keep lines whole
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"

#: The columns of every results file, in order. ``curve`` is the best-so-far regret at each
#: improvement, ``trial:elapsed_s:regret`` joined by ``;`` (elapsed: summed trial durations), so
#: a table can read an arm's regret after any number of trials or seconds.
FIELDS = [
    "benchmark",
    "arm",
    "objective",
    "seed",
    "n_trials",
    "outer_seed",
    "best_value",
    "regret",
    "wall_s",
    "model_share",
    "fallback_share",
    "distinct",
    "tuning_evals",
    "commit",
    "date",
    "machine",
    "extra",
    "curve",
]
KEY = ("benchmark", "arm", "objective", "seed", "n_trials", "outer_seed")

#: Arm names of the older runners' study names -> the plain names of the rows.
ARM_NAMES = {"llm": "level0", "llm-level0": "level0"}

SOURCE = "llm:source"
TRUE_VALUE = "bilevel:true_value"
MECHANISMS = "llm:mechanisms"


def results_path(benchmark: str) -> Path:
    """benchmarks/results/<benchmark>.csv."""
    return RESULTS_DIR / f"{benchmark}.csv"


def cell_key(row: dict[str, Any]) -> tuple[str, ...]:
    """The cell a row belongs to (the columns that name it, as text)."""
    return tuple(_text(row.get(k, "")) for k in KEY)


# ------------------------------------------------------------------------------- reading


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a results file (empty when it does not exist).

    A row with a wrong number of fields (a line cut by a crash mid-write) is skipped with a
    message on stderr rather than read wrong.
    """
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return []
        rows = []
        for line_number, fields in enumerate(reader, 2):
            if len(fields) != len(header):
                print(
                    f"{path}:{line_number}: {len(fields)} fields, not {len(header)}: skipped",
                    file=sys.stderr,
                )
                continue
            rows.append(dict(zip(header, fields)))
    return rows


def done_cells(path: str | os.PathLike[str]) -> set[tuple[str, ...]]:
    """The keys of the cells a results file already holds."""
    return {cell_key(r) for r in read_rows(path)}


def parse_curve(text: str) -> list[tuple[int, float, float]]:
    """``curve`` -> [(trial, elapsed_s, regret)] in trial order."""
    points = []
    for item in filter(None, text.split(";")):
        trial, elapsed, regret = item.split(":")
        points.append((int(trial), float(elapsed), float(regret)))
    return points


def regret_at(curve: Sequence[tuple[int, float, float]], *, trials: int | None = None,
              seconds: float | None = None) -> float:
    """Best-so-far regret after ``trials`` trials or ``seconds`` of summed trial time.

    ``inf`` when no trial finished within the budget: an optimizer that has not answered yet
    has found nothing.
    """
    best = math.inf
    for trial, elapsed, regret in curve:
        if trials is not None and trial >= trials:
            break
        if seconds is not None and elapsed > seconds:
            break
        best = regret
    return best


# ------------------------------------------------------------------------------- writing


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def format_rows(rows: Iterable[dict[str, Any]]) -> str:
    """Rows as CSV lines (no header), every field of :data:`FIELDS` in order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        unknown = set(row) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown result columns {sorted(unknown)}; known: {FIELDS}")
        writer.writerow([_text(row.get(k)) for k in FIELDS])
    return buffer.getvalue()


@contextlib.contextmanager
def _locked_append(path: Path) -> Iterator[int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


def append_rows(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> int:
    """Append rows to a results file (the header first if it is new); return how many.

    Whole lines in one write under an exclusive lock, then fsync: two processes appending to
    one file never interleave, and a crash never leaves half a row behind a whole one.
    """
    path = Path(path)
    rows = list(rows)
    if not rows:
        return 0
    with _locked_append(path) as fd:
        data = format_rows(rows)
        if os.fstat(fd).st_size == 0:
            data = ",".join(FIELDS) + "\n" + data
        else:
            with path.open(encoding="utf-8", newline="") as f:
                header = f.readline().rstrip("\r\n").split(",")
            if header != FIELDS:
                raise ValueError(
                    f"{path} has columns {header}, not {FIELDS}; move it aside or rewrite it "
                    "with the current columns before appending."
                )
        os.write(fd, data.encode("utf-8"))
    return len(rows)


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The JSON records of a JSON-lines results file (none when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(dict(json.loads(line)))
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"{path}, line {number}, is not a JSON record ({err}); fix or delete that line."
            ) from None
    return records


def append_record(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one record to a JSON-lines results file (the lock of :func:`append_rows`)."""
    with _locked_append(Path(path)) as fd:
        os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))


# ------------------------------------------------------------------ where and when it ran


def commit_id(repo: Path = ROOT) -> str:
    """The short commit of the checkout running the benchmark, ``+dirty`` if its code differs.

    Changes under benchmarks/results/ (the rows themselves) do not count as dirty.
    """
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=7", "HEAD"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()  # fmt: skip
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "-uno", "--", ".",
             ":!benchmarks/results"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if status else "")


def machine() -> str:
    """A short description of this machine: cores, CPU model, Python."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    model = " ".join(model.replace("(R)", "").replace("(TM)", "").split())
    return f"{os.cpu_count()} cores {model}, Python {platform.python_version()}"


# ------------------------------------------------------------------------ rows from studies


def _seconds(trial: Any) -> float:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return 0.0
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def study_row(
    study: Any,
    objective: Any,
    *,
    benchmark: str,
    arm: str,
    objective_name: str,
    seed: int,
    n_trials: int,
    commit: str,
    machine_name: str | None = None,
    **columns: Any,
) -> dict[str, Any] | None:
    """The row of one finished study, or None while it has fewer than ``n_trials`` complete.

    Counts the first ``n_trials`` complete trials. Regret is the objective's regret of the
    noise-free value (``bilevel:true_value``, else ``objective.true_value``) of the trial with
    the best observed value; wall time is the sum of the trials' durations (start to complete,
    so the sampler's time is in it and a resumed study's pause is not); ``date`` is the day the
    last counted trial finished. Where the trials carry mechanism records (``llm:mechanisms``),
    ``extra["records"]`` says per mechanism its status and the trials it changed, as
    ``summarize_mechanisms`` reads them: the proof that it ran.
    """
    from optuna.trial import TrialState

    trials = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE),
        key=lambda t: t.number,
    )[:n_trials]
    if len(trials) < n_trials or not trials:
        return None
    sign = 1.0 if objective.direction == "minimize" else -1.0
    has_optimum = getattr(objective, "optimum", None) is not None

    def regret_of(trial: Any) -> float:
        true = trial.user_attrs.get(TRUE_VALUE)
        if true is None:
            true = objective.true_value(dict(trial.params))
        return float(objective.regret(float(true))) if has_optimum else math.nan

    best = None
    elapsed = 0.0
    points = []
    for i, trial in enumerate(trials):
        elapsed += _seconds(trial)
        if best is None or sign * float(trial.value) < sign * float(best.value):
            best = trial
            if has_optimum:
                # Elapsed as wall_s is rounded, so a budget equal to a study's wall time
                # includes its last trial.
                points.append(f"{i}:{round(elapsed, 2)!r}:{regret_of(trial):.4g}")
    assert best is not None
    sources = [t.user_attrs.get(SOURCE) for t in trials]
    n = len(trials)
    llm = any(s is not None for s in sources)
    finished = max(t.datetime_complete for t in trials if t.datetime_complete is not None)
    row: dict[str, Any] = {
        "benchmark": benchmark,
        "arm": ARM_NAMES.get(arm, arm),
        "objective": objective_name,
        "seed": int(seed),
        "n_trials": int(n_trials),
        "best_value": float(best.value),
        "regret": regret_of(best) if has_optimum else None,
        "wall_s": round(elapsed, 2),
        "model_share": round(sum(s in ("llm", "repaired") for s in sources) / n, 4)
        if llm else None,
        "fallback_share": round(sum(s == "fallback" for s in sources) / n, 4) if llm else None,
        "distinct": round(len({tuple(sorted(t.params.items())) for t in trials}) / n, 4),
        "commit": commit,
        "date": finished.date().isoformat(),
        "machine": machine_name or machine(),
        "curve": ";".join(points),
    }  # fmt: skip
    records = _mechanism_records(study) if any(MECHANISMS in t.user_attrs for t in trials) else {}
    if records:
        columns["extra"] = {"records": records, **(columns.get("extra") or {})}
    row.update(columns)
    return row


def _mechanism_records(study: Any) -> dict[str, str]:
    """Mechanism -> ``"<status> <changed>/<trials with a record>"`` over the study's trials."""
    import warnings

    from bilevel_optuna.samplers._summary import summarize_mechanisms

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = summarize_mechanisms(study, warn=False)
    return {name: f"{s.status} {s.n_changed}/{s.n_trials}" for name, s in sorted(summary.items())}


# ----------------------------------------------------------------------- export from storage


def _snapshot(url: str, workdir: str) -> str:
    """A private copy of an SQLite storage (online backup: safe while another process writes)."""
    path = url.split(":///", 1)[1]
    copy = os.path.join(workdir, "snapshot.db")
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=120)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return f"sqlite:///{copy}"


def parse_study_name(name: str, prefix: str) -> tuple[str, str, int] | None:
    """``<prefix>/<objective>/<arm>/seed<NNN>`` -> (objective, arm, seed); None otherwise."""
    if not name.startswith(prefix + "/"):
        return None
    parts = name[len(prefix) + 1 :].rsplit("/", 2)
    if len(parts) != 3 or not parts[2].startswith("seed") or not parts[2][4:].isdigit():
        return None
    return parts[0], parts[1], int(parts[2][4:])


def export_storage(
    url: str,
    *,
    benchmark: str,
    commit: str,
    n_trials: int,
    path: str | os.PathLike[str] | None = None,
    prefix: str = "mech-bench",
    machine_name: str | None = None,
    snapshot: bool = True,
) -> tuple[int, int]:
    """Append the rows of the finished studies of a storage written by a runner.

    Studies are named ``<prefix>/<objective>/<arm>/seed<NNN>`` (benchmarks/mechanisms.py and
    heldout.py); the study's ``bilevel:*`` attributes win over the name where present. Cells
    already in the file and studies with fewer than ``n_trials`` complete trials are skipped.

    Returns:
        (rows appended, finished studies seen).
    """
    import optuna

    from bilevel_optuna.objectives import get_objective

    path = Path(path) if path is not None else results_path(benchmark)
    done = done_cells(path)
    with tempfile.TemporaryDirectory() as workdir:
        if snapshot and url.startswith("sqlite:///"):
            url = _snapshot(url, workdir)
        storage = optuna.storages.RDBStorage(url)
        try:
            rows: list[dict[str, Any]] = []
            seen = 0
            objectives: dict[str, Any] = {}
            for summary in sorted(
                optuna.get_all_study_summaries(storage, include_best_trial=False),
                key=lambda s: s.study_name,
            ):
                parsed = parse_study_name(summary.study_name, prefix)
                if parsed is None:
                    continue
                attrs = summary.user_attrs
                objective_name = str(attrs.get("bilevel:objective", parsed[0]))
                arm = str(attrs.get("bilevel:arm", parsed[1]))
                seed = int(attrs.get("bilevel:seed", parsed[2]))
                key = cell_key({
                    "benchmark": benchmark, "arm": ARM_NAMES.get(arm, arm),
                    "objective": objective_name, "seed": seed, "n_trials": n_trials,
                })  # fmt: skip
                if key in done:
                    seen += 1
                    continue
                if objective_name not in objectives:
                    objectives[objective_name] = get_objective(objective_name)
                study = optuna.load_study(study_name=summary.study_name, storage=storage)
                row = study_row(
                    study, objectives[objective_name], benchmark=benchmark, arm=arm,
                    objective_name=objective_name, seed=seed, n_trials=n_trials, commit=commit,
                    machine_name=machine_name,
                )  # fmt: skip
                if row is None:
                    continue
                seen += 1
                rows.append(row)
                done.add(key)
            appended = append_rows(path, rows)
        finally:
            storage.remove_session()
            storage.engine.dispose()
    return appended, seen


# -------------------------------------------------------------------------- grid slicing


def parse_seeds(text: str) -> list[int]:
    """``"10"`` -> 0..9 (the older runners' count); ``"3-5"`` -> 3, 4, 5; ``"0,4-6"`` -> 0, 4-6.

    A bare number is a count, as it always was; one seed alone is ``"5-5"``.
    """
    text = text.strip()
    if text.isdigit():
        if int(text) == 0:
            raise ValueError("seeds '0' is a count of none; one seed alone is '0-0'")
        return list(range(int(text)))
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, sep, high = part.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError(f"seeds must look like '10', '3-5' or '0,4-6' but got {text!r}")
        seeds.extend(range(int(low), int(high or low) + 1) if sep else [int(low)])
    return sorted(set(seeds))


def parse_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def add_results_arguments(parser: argparse.ArgumentParser, benchmark: str) -> None:
    """The options every runner shares: where its rows go and what they record."""
    parser.add_argument(
        "--results",
        default=str(results_path(benchmark)),
        help="CSV file the rows are appended to; cells already in it are skipped",
    )
    parser.add_argument(
        "--commit",
        default=None,
        help="commit recorded in the rows (default: this checkout's, +dirty if changed)",
    )
    parser.add_argument(
        "--machine", default=None, help="machine recorded in the rows (default: this one)"
    )


# ---------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="rows from the finished studies of a storage")
    export.add_argument("--storage", required=True, help="database URL the runner wrote to")
    export.add_argument("--benchmark", required=True, help="heldout, mechanisms, ...")
    export.add_argument("--commit", required=True, help="commit the studies ran at")
    export.add_argument("--trials", type=int, default=30, help="trials of a finished study")
    export.add_argument("--prefix", default="mech-bench", help="study name prefix")
    export.add_argument("--results", default=None, help="default: results/<benchmark>.csv")
    export.add_argument("--machine", default=None, help="default: this machine")
    args = parser.parse_args(argv)
    import warnings

    warnings.simplefilter("ignore")
    appended, seen = export_storage(
        args.storage, benchmark=args.benchmark, commit=args.commit, n_trials=args.trials,
        path=args.results, prefix=args.prefix, machine_name=args.machine,
    )  # fmt: skip
    target = args.results or results_path(args.benchmark)
    print(f"{appended} rows appended to {target} ({seen} finished studies in the storage)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
