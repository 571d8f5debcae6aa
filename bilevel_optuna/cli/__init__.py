"""The ``bilevel-optuna`` console script.

Each subcommand lives in its own module under ``bilevel_optuna.cli`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking the parsed
arguments and returning an exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from bilevel_optuna._version import __version__
from bilevel_optuna.exceptions import BilevelOptunaError

# Modules that hold a subcommand, in the order `--help` lists them.
_SUBCOMMAND_MODULES = (
    "bilevel_optuna.cli._run",
    "bilevel_optuna.cli._worker",
    "bilevel_optuna.cli._status",
    "bilevel_optuna.cli._compare",
    "bilevel_optuna.cli._serve",
    "bilevel_optuna.cli._dashboard",
    "bilevel_optuna.cli._research",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bilevel-optuna",
        description="An LLM proposes Optuna trials; a second Optuna loop tunes the proposer.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:  # subcommand not built yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (`bilevel-optuna status | head -1`): stop quietly, as a command
        # killed by SIGPIPE would. stdout points at /dev/null so that Python's flush at exit
        # does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + 13  # SIGPIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    # The console script is an application, so configuring logging here is fine.
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import optuna

    # Optuna logs every trial at INFO; the subcommands print their own progress.
    optuna.logging.set_verbosity(logging.INFO if args.verbose >= 2 else logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except BilevelOptunaError as err:
        print(f"bilevel-optuna {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "Interrupted; everything finished so far is stored. Run again to resume.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
