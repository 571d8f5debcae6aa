"""``bilevel-optuna serve``: the embedded model as an OpenAI-compatible endpoint on loopback.

Several workers on one machine then share one loaded model instead of loading one each:
``--chat-model openai:NAME@http://127.0.0.1:8000/v1``.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from bilevel_optuna._urls import is_loopback
from bilevel_optuna.chat._local import LocalChatModel
from bilevel_optuna.chat._server import DEFAULT_HOST
from bilevel_optuna.chat._server import DEFAULT_PORT
from bilevel_optuna.chat._server import access_logger
from bilevel_optuna.chat._server import make_server


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the embedded chat model as an OpenAI-compatible endpoint",
        description=(
            "Serve the embedded chat model (or a GGUF file) at /v1/chat/completions so that "
            "several workers share one model. No authentication: keep it on loopback."
        ),
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="port (default %(default)s; 0 picks a free one)",
    )
    parser.add_argument("--model-path", help="a GGUF file (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: every core)")
    parser.add_argument("--n-ctx", type=int, help="context window in tokens")
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no access log (default: one line per request on stderr: client, method, path, "
        "status, seconds, prompt+completion tokens)",
    )
    parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    # The access log goes through the package logger to stderr (main's handler), at INFO
    # whatever -v says, unless --quiet.
    access_logger.setLevel(logging.WARNING if args.quiet else logging.INFO)

    kwargs: dict[str, Any] = {}
    if args.n_ctx is not None:
        kwargs["n_ctx"] = args.n_ctx
    model = LocalChatModel(
        model_path=args.model_path, n_threads=args.threads, validate="none", **kwargs
    )
    seconds = model.load()  # fail now, not on the first request
    server = make_server(model, host=args.host, port=args.port)
    host, port = str(server.server_address[0]), server.server_address[1]
    shown = f"[{host}]" if ":" in str(host) else host
    url = f"http://{shown}:{port}/v1"
    if not is_loopback(args.host):
        print(
            f"warning: serving on {args.host} without authentication: anyone who reaches "
            "this port can use the model."
        )
    print(f"Serving {model.name} (loaded in {seconds:.2f} s) at {url}")
    print(f"Use it with the chat model spec: openai:{model.name}@{url}")
    print("Press Ctrl+C to stop.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("Stopped.")
    finally:
        server.server_close()
    return 0
