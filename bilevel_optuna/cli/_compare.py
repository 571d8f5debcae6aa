"""``bilevel-optuna compare``: statistics across stored studies, as a table, a report, plots."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from bilevel_optuna import _attrs
from bilevel_optuna._storage import open_storage
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.stats import DegenerateDataWarning
from bilevel_optuna.stats import CompareSettings
from bilevel_optuna.stats import NoPowerWarning
from bilevel_optuna.stats import StudySelection
from bilevel_optuna.stats import compare
from bilevel_optuna.stats._load import select_studies

_EXAMPLES = """\
examples:
  bilevel-optuna compare --storage sqlite:///runs.db --run branin-01
  bilevel-optuna compare --storage sqlite:///runs.db --run branin-01 --arm tpe --arm 'outer-*'
  bilevel-optuna compare --storage sqlite:///runs.db \\
      --arms tpe='tpe-*' random='random-*' --n-trials 50 --report report.md --plots plots/
  bilevel-optuna compare --storage sqlite:///runs.db --arms a=s1,s2,s3 b=s4,s5,s6
"""


def _parse_arm_spec(text: str) -> tuple[str, str | list[str]]:
    """``label=PATTERN`` (a glob on study names) or ``label=s1,s2,...`` (exact study names)."""
    label, sep, spec = text.partition("=")
    if not sep or not label or not spec:
        raise argparse.ArgumentTypeError(
            f"--arms takes label=PATTERN or label=study1,study2 but got {text!r}."
        )
    if "," in spec:
        return label, [name for name in spec.split(",") if name]
    return label, spec


def _parse_noise_floor(text: str) -> Any:
    """A number is a standard deviation; a comma list is values; anything else a study name."""
    try:
        return float(text)
    except ValueError:
        pass
    if "," in text:
        try:
            return [float(v) for v in text.split(",") if v]
        except ValueError:
            pass
    return text


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare arms of stored studies (tests, effect sizes, report, plots)",
        description=(
            "Compare arms of studies stored in one storage: per-arm summaries, Wilcoxon or "
            "Mann-Whitney tests with Holm's correction, Friedman across 3+ arms, "
            "Vargha-Delaney A12, anytime curves, a noise floor. Values are read from the "
            "storage."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--storage", required=True, help="storage URL, e.g. sqlite:///runs.db")
    _add_selection_arguments(parser)
    _add_test_arguments(parser)
    _add_output_arguments(parser)
    parser.set_defaults(func=run)


def _add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """Which studies, as which arms: the fields of :class:`StudySelection`."""
    choose = parser.add_mutually_exclusive_group(required=True)
    choose.add_argument("--run", help="bilevel run name: arms from each study's bilevel:arm")
    choose.add_argument(
        "--arms",
        nargs="+",
        type=_parse_arm_spec,
        metavar="LABEL=PATTERN",
        help="arms by study name: label=GLOB or label=study1,study2,...",
    )
    parser.add_argument(
        "--arm",
        action="append",
        dest="arm_filter",
        metavar="ARM",
        help="with --run: keep this arm (name or glob; repeat the option)",
    )
    parser.add_argument(
        "--kind",
        action="append",
        help="keep studies of this bilevel:kind (repeatable); default all but outer",
    )
    parser.add_argument(
        "--objective",
        action="append",
        help="keep studies of this bilevel:objective (repeatable; each is tested on its own "
        "unless --pool); default all",
    )
    parser.add_argument(
        "--pool",
        action="store_true",
        help="test the objectives together, as one sample (default: each objective on its own)",
    )
    parser.add_argument("--n-trials", type=int, help="trial budget: count trials numbered below N")


def _add_test_arguments(parser: argparse.ArgumentParser) -> None:
    """How the arms are tested: the fields of :class:`CompareSettings`."""
    parser.add_argument(
        "--metric",
        choices=("auto", "best", "regret", "auc"),
        default="auto",
        help="per-study metric (default auto: regret when the optimum is known)",
    )
    parser.add_argument(
        "--paired",
        choices=("auto", "yes", "no"),
        default="auto",
        help="pair studies by (objective, seed) (default auto)",
    )
    parser.add_argument("--control", help="compare every arm with this one only")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level")
    parser.add_argument(
        "--noise-floor",
        type=_parse_noise_floor,
        metavar="STUDY|SD|V1,V2,...",
        help="repeated evaluations of one configuration: a study name, an sd, or values",
    )
    parser.add_argument(
        "--noise-factor",
        type=float,
        default=2.0,
        help="differences below this many noise sds are inside the floor",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals")


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report", type=Path, help="write a Markdown report here")
    parser.add_argument(
        "--plots", type=Path, metavar="DIR", help="write PNG and HTML plots into this directory"
    )
    parser.add_argument(
        "--plot-format",
        action="append",
        choices=("png", "html"),
        help="only this format (repeatable; default both)",
    )


def run(args: argparse.Namespace) -> int:
    if args.arm_filter and not args.run:
        raise ConfigurationError("--arm filters the arms of --run; with --arms list labels there.")
    objectives = [None] if args.pool else _objectives_of(args)
    results = [(objective, _compare(args, objective)) for objective in objectives]
    for i, (objective, result) in enumerate(results):
        if objective is not None:
            if i:
                sys.stdout.write("\n")
            sys.stdout.write(f"== objective {objective} ==\n")
        sys.stdout.write(result.to_text())
    sections = []
    for objective, result in results:
        folder = args.plots if objective is None or args.plots is None else args.plots / objective
        plots: dict[str, Path] = {}
        if folder is not None:
            try:
                plots = result.plot(folder, formats=tuple(args.plot_format or ("png", "html")))
            except ImportError as err:
                raise ConfigurationError(str(err)) from err
            for path in plots.values():
                print(f"wrote {path}")
        if args.report is not None:
            links = {name: _relative(path, args.report.parent) for name, path in plots.items()}
            text = result.to_markdown(plots=links)
            sections.append(text if objective is None else f"# Objective {objective}\n\n{text}")
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text("\n\n".join(sections), encoding="utf-8")
        print(f"wrote {args.report}")
    return 0


def _objectives_of(args: argparse.Namespace) -> list[str | None]:
    """The objectives to test one by one: those asked for, else every one in the chosen
    studies; ``[None]`` (no filter) where the studies name at most one."""
    if args.objective:
        names: list[str | None] = list(dict.fromkeys(args.objective))
        return names if len(names) > 1 else [None]
    arms: Any = dict(args.arms) if args.arms else args.arm_filter
    groups = select_studies(
        open_storage(args.storage, read_only=True), run=args.run, arms=arms, kind=args.kind
    )
    found = sorted(
        {
            str(s.user_attrs[_attrs.OBJECTIVE])
            for group in groups.values()
            for s in group
            if _attrs.OBJECTIVE in s.user_attrs
        }
    )
    return list(found) if len(found) > 1 else [None]


def _compare(args: argparse.Namespace, objective: str | None) -> Any:
    arms: Any = dict(args.arms) if args.arms else args.arm_filter
    paired: Any = {"auto": "auto", "yes": True, "no": False}[args.paired]
    try:
        with warnings.catch_warnings():
            # The table and report state no power and degenerate data in words.
            warnings.simplefilter("ignore", NoPowerWarning)
            warnings.simplefilter("ignore", DegenerateDataWarning)
            selection = StudySelection(
                run=args.run,
                arms=arms,
                kind=args.kind,
                objective=objective if objective is not None else args.objective,
                n_trials=args.n_trials,
            )
            settings = CompareSettings(
                metric=args.metric,
                paired=paired,
                control=args.control,
                alpha=args.alpha,
                noise_floor=args.noise_floor,
                noise_factor=args.noise_factor,
                seed=args.seed,
            )
            return compare(args.storage, selection=selection, settings=settings)
    except ValueError as err:
        if isinstance(err, ConfigurationError):
            raise
        raise ConfigurationError(str(err)) from err


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
