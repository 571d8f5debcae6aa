"""``bilevel-optuna research``: check generated code, run research rounds, read what they made.

- ``research check FILE.py``: the gate on one file; exit 0 and one line when accepted, 1 and the
  stage and reasons when rejected.
- ``research run SPEC.toml``: research rounds on a bilevel run (resumable).
- ``research list|show|export``: the generated mechanisms of a run in a storage.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.research import MechanismStore
from bilevel_optuna.research import check_source
from bilevel_optuna.research._decode import clean_text
from bilevel_optuna.research._decode import is_registered_name
from bilevel_optuna.research._round import run_research


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("research", help="mechanism research (Level 2)")
    sub = parser.add_subparsers(dest="research_command", metavar="ACTION", required=True)

    check = sub.add_parser("check", help="run the gate on a mechanism file")
    check.add_argument("file", help="a .py file defining one Mechanism subclass")
    check.add_argument("--json", action="store_true", help="print the whole result as JSON")
    check.set_defaults(func=_check)

    run = sub.add_parser("run", help="run research rounds described in a TOML spec")
    run.add_argument("spec", help="a research spec (see studies/specs/research-demo.toml)")
    run.add_argument("--report", help="write the Markdown report to this file")
    run.set_defaults(func=_run)

    for name, helptext in (
        ("list", "list the generated mechanisms of a run"),
        ("show", "show one generated mechanism: source, check, effect"),
        ("export", "write accepted (or all) generated mechanisms as .py files"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--storage", required=True, help="database URL")
        p.add_argument("--run", required=True, help="name of the bilevel run")
        if name == "show":
            p.add_argument("mechanism", help="registered name or a prefix of the source's hash")
        if name == "export":
            p.add_argument("directory", help="folder to write into")
            p.add_argument("--all", action="store_true", help="rejected sources too")
        p.set_defaults(func={"list": _list, "show": _show, "export": _export}[name])


def _check(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise ConfigurationError(f"No such file {args.file!r}; give a .py file to check.")
    result = check_source(path.read_text(encoding="utf-8"))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.summary())
    return 0 if result.accepted else 1


def _run(args: argparse.Namespace) -> int:
    report = run_research(args.spec, progress=print)
    text = report.to_markdown()
    if args.report:
        Path(args.report).write_text(text, encoding="utf-8")
        print(f"Report written to {args.report}")
    else:
        print(text)
    return 0


def _store(args: argparse.Namespace) -> Any:
    return MechanismStore(args.storage, args.run, create=False)


def _list(args: argparse.Namespace) -> int:
    items = _store(args).list()
    if not items:
        print(f"Run {args.run!r} has no generated mechanisms yet.")
        return 0
    print("round  status    mode     sha256        name / stage  idea")
    for i in items:
        what = i.name if i.accepted else f"({i.check.stage})"
        effect = ""
        if i.effect:
            effect = f"  effect: A12 {_number(i.effect.get('a12'), '.2f')}, p {_number(i.effect.get('pvalue'), '.3g')}"
        print(
            f"{i.round:5d}  {i.status:8s}  {i.mode:7s}  {i.sha256[:12]}  {clean_text(what, 60)}  "
            f"{clean_text(i.idea[:60], 60)}{effect}"
        )
    return 0


def _number(value: Any, spec: str) -> str:
    """A stored statistic, or ``n/a`` where there is none (a p-value of None, a string)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return "n/a"


def _show(args: argparse.Namespace) -> int:
    item = _store(args).get(args.mechanism)
    # Stored text is generated text: no terminal escapes reach the screen.
    print(
        _comment(
            f"# {item.name or item.sha256[:12]}: {item.status}, round {item.round}, "
            f"mode {item.mode}"
        )
    )
    print(f"# sha256 {_comment(item.sha256)}")
    print(f"# idea: {_comment(item.idea)}")
    print(f"# gate: {_comment(item.check.summary())}")
    if item.effect:
        print(f"# effect: {_comment(json.dumps(item.effect))}")
    print(clean_text(item.source, len(item.source)))
    return 0


def _comment(text: Any) -> str:
    """Stored text as one comment line: a newline in it cannot start a line of code."""
    return clean_text(str(text), 2000).replace("\n", " ").replace("\t", " ")


def _export(args: argparse.Namespace) -> int:
    folder = Path(args.directory)
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    written = 0
    for item in _store(args).list():
        if not (item.accepted or args.all):
            continue
        stem = item.name or f"rejected_{str(item.sha256)[:8]}"
        # File names come from the storage: a strict pattern, and inside the folder once
        # resolved (no `../`, no absolute path, no link out).
        target = (folder / f"{stem}.py").resolve()
        if not is_registered_name(stem) or target.parent != root:
            print(
                f"Skipped a mechanism whose stored name {clean_text(repr(stem)[:80], 80)} is "
                "not a valid file name."
            )
            continue
        header = (
            f"# Generated by bilevel-optuna research, run {_comment(repr(args.run))}, round "
            f"{_comment(item.round)} ({_comment(item.mode)}).\n"
            f"# sha256 of the source below: {_comment(item.sha256)}\n"
            f"# Gate: {_comment(item.check.summary())}\n# Idea: {_comment(item.idea)}\n"
        )
        target.write_text(header + item.source, encoding="utf-8")
        written += 1
    print(f"Wrote {written} file(s) to {folder}.")
    return 0
