"""``bilevel-optuna dashboard``: optuna-dashboard on a run's storage."""

from __future__ import annotations

import argparse
from typing import Any

from bilevel_optuna.cli._common import storage_of


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dashboard", help="open optuna-dashboard on a spec's or a URL's storage"
    )
    parser.add_argument("target", nargs="?", help="a spec file or a storage URL")
    parser.add_argument("--storage", help="database URL")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.set_defaults(func=_dashboard)


def _dashboard(args: argparse.Namespace) -> int:
    import optuna_dashboard

    url = storage_of(args)
    print(
        f"optuna-dashboard on {url}: http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True
    )
    optuna_dashboard.run_server(url, host=args.host, port=args.port)
    return 0
