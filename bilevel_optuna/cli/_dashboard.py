"""``bilevel-optuna dashboard``: optuna-dashboard on a run's storage, with its artifact store.

A run records its artifact folder on its outer study (``bilevel:artifact_store``) when it
stores the report and plots there, so that this command shows them without being told where.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bilevel_optuna._storage import open_storage
from bilevel_optuna.cli._common import storage_of
from bilevel_optuna.exceptions import ConfigurationError
from bilevel_optuna.studies._artifacts import recorded_artifact_store


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dashboard", help="open optuna-dashboard on a spec's or a URL's storage"
    )
    parser.add_argument("target", nargs="?", help="a spec file or a storage URL")
    parser.add_argument("--storage", help="database URL")
    parser.add_argument(
        "--artifact-dir",
        type=Path,
        help="the artifact folder (default: the one the run recorded in the storage)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.set_defaults(func=_dashboard)


def _dashboard(args: argparse.Namespace) -> int:
    import optuna_dashboard
    from optuna.artifacts import FileSystemArtifactStore

    url = storage_of(args)
    if args.artifact_dir is not None:
        if not args.artifact_dir.is_dir():
            raise ConfigurationError(f"--artifact-dir {args.artifact_dir} is not a folder.")
        store: Any = FileSystemArtifactStore(str(args.artifact_dir))
        where = str(args.artifact_dir)
    else:
        store, notes = recorded_artifact_store(open_storage(url, read_only=True))
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        where = store._base_path if store is not None else "none recorded"
    print(
        f"optuna-dashboard on {url} (artifacts: {where}): http://{args.host}:{args.port}/ "
        "(Ctrl-C to stop)",
        flush=True,
    )
    optuna_dashboard.run_server(url, host=args.host, port=args.port, artifact_store=store)
    return 0
