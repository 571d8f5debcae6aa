"""Serve a chat model as an OpenAI-compatible endpoint, so several workers share one model.

``POST /v1/chat/completions`` (messages, temperature, ``max_completion_tokens`` or the older
``max_tokens``, seed, n, and response_format ``json_schema`` (``strict`` is accepted: the
grammar enforces the shape), ``json_object`` or ``text``) and ``GET /v1/models``, on a stdlib
``ThreadingHTTPServer`` bound to 127.0.0.1 by default. Calls take turns on the one model.

Why not llama-cpp-python's own server (``llama_cpp.server``): as of 0.3.36 its request model
accepts ``response_format`` of type ``"text"`` or ``"json_object"`` only (with a non-standard
``schema`` key), so OpenAI's ``{"type": "json_schema", ...}`` is refused with a 422; it needs the
``[server]`` extra (FastAPI, uvicorn, sse-starlette, starlette-context, pydantic-settings); and
it runs its own sampling path. This one serves the very :class:`LocalChatModel` used in process
(same grammar, same seeding, same lock), so an answer over HTTP is the answer in process, and it
is small enough to read in one sitting. It does no streaming and has no authentication: keep it
on loopback.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bilevel_optuna._logging import get_logger
from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.chat._base import ChatRequest
from bilevel_optuna.chat._local import LocalChatModel
from bilevel_optuna.chat._spec import get_chat_model
from bilevel_optuna.exceptions import ChatModelError
from bilevel_optuna.exceptions import ConfigurationError

_logger = get_logger(__name__)
#: One INFO line per request (``bilevel-optuna serve`` shows them on stderr; ``--quiet`` not).
access_logger = get_logger("bilevel_optuna.chat.access")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# OpenAI's defaults where a request leaves a field out.
_DEFAULT_TEMPERATURE = 1.0
_DEFAULT_MAX_TOKENS = 256
# Largest request body accepted, in bytes.
_MAX_BODY_BYTES = 8 * 1024 * 1024


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, *, code: str, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.param = param


def _content_text(content: Any) -> str:
    """Message content as text: a string, or OpenAI's list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return "".join(p["text"] for p in content)
    raise _BadRequest(
        400,
        "Message content must be a string or a list of text parts.",
        code="invalid_value",
        param="messages",
    )


def _schema_of(response_format: Any) -> dict[str, Any] | None:
    """The JSON schema a response_format asks for; ``{"type": "object"}`` for plain JSON mode."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        schema = response_format.get("schema", {"type": "object"})  # llama.cpp's extension
    elif kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
    else:
        raise _BadRequest(
            400,
            "response_format.type must be one of 'text', 'json_object', 'json_schema' but got "
            f"{kind!r}.",
            code="invalid_value",
            param="response_format",
        )
    if not isinstance(schema, dict):
        raise _BadRequest(
            400,
            "response_format json_schema needs json_schema.schema, a JSON schema object.",
            code="invalid_value",
            param="response_format",
        )
    return schema


def _to_request(body: Any, served: str) -> ChatRequest:
    if not isinstance(body, dict):
        raise _BadRequest(400, "The request body must be a JSON object.", code="invalid_json")
    model = body.get("model")
    if model is not None and model != served:
        raise _BadRequest(
            404,
            f"The model {model!r} does not exist on this server; it serves {served!r}.",
            code="model_not_found",
            param="model",
        )
    if body.get("stream"):
        raise _BadRequest(
            400, "stream=true is not supported.", code="unsupported_value", param="stream"
        )
    n = body.get("n", 1)
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise _BadRequest(
            400, f"n must be a positive integer but got {n!r}.", code="invalid_value", param="n"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest(
            400, "messages must be a non-empty list.", code="invalid_value", param="messages"
        )
    cleaned = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _BadRequest(
                400,
                "Each message needs a role and a content.",
                code="invalid_value",
                param="messages",
            )
        cleaned.append({"role": message["role"], "content": _content_text(message.get("content"))})
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    temperature = body.get("temperature")
    try:
        return ChatRequest(
            messages=tuple(cleaned),
            json_schema=_schema_of(body.get("response_format")),
            temperature=float(_DEFAULT_TEMPERATURE if temperature is None else temperature),
            max_tokens=int(_DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens),
            seed=None if body.get("seed") is None else int(body["seed"]),
            n=int(body.get("n") or 1),
        )
    except (TypeError, ValueError) as err:
        raise _BadRequest(400, str(err), code="invalid_value") from err


def _completion(model: ChatModel, request: ChatRequest) -> dict[str, Any]:
    reply = model.complete(request)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "finish_reason": reply.finish_reason or "stop",
            }
            for i, text in enumerate(reply.texts)
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers OpenAI chat completions and the model list with ``model`` (set per server
    by :func:`make_server`)."""

    model: ChatModel
    protocol_version = "HTTP/1.1"
    server_version = "bilevel-optuna"

    def log_message(self, format: str, *args: Any) -> None:
        _logger.debug("%s %s", self.address_string(), format % args)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        pass  # handle_one_request writes one access line per request instead

    def parse_request(self) -> bool:
        # The request line is in: the clock of this request starts (not while a kept-alive
        # connection waits for its next request).
        self._started = time.perf_counter()
        self._tokens = "-"
        return super().parse_request()

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = int(code)
        super().send_response(code, message)

    def handle_one_request(self) -> None:
        self._status: int | None = None
        self._logged = False
        self._started = time.perf_counter()
        self._tokens = "-"
        super().handle_one_request()
        self._access_line()  # a reply not sent by _send (the base class's own errors)

    def _access_line(self) -> None:
        """One access line per request, once its status is known."""
        if self._status is None or self._logged:
            return
        self._logged = True
        access_logger.info(
            "%s %s %s %d %.2f s tokens %s",
            self.client_address[0],
            self.command,
            self.path,
            self._status,
            time.perf_counter() - self._started,
            self._tokens,
        )

    def _send(self, status: int, body: dict[str, Any]) -> None:
        usage = body.get("usage")
        if isinstance(usage, dict):
            self._tokens = f"{usage['prompt_tokens']}+{usage['completion_tokens']}"
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        # Before the reply leaves: a client that sends its next request as soon as this one is
        # answered finds the access lines in the order it sent the requests.
        self._access_line()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, *, code: str, param: str | None) -> None:
        kind = "invalid_request_error" if status < 500 else "server_error"
        self._send(
            status, {"error": {"message": message, "type": kind, "param": param, "code": code}}
        )

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            entry = {
                "id": self.model.name,
                "object": "model",
                "created": 0,
                "owned_by": "bilevel-optuna",
            }
            self._send(200, {"object": "list", "data": [entry]})
        else:
            self._error(404, f"No route GET {self.path}.", code="not_found", param=None)

    def do_POST(self) -> None:
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._error(404, f"No route POST {self.path}.", code="not_found", param=None)
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if length > _MAX_BODY_BYTES:
                self.close_connection = True
                raise _BadRequest(413, "Request body too large.", code="too_large")
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except json.JSONDecodeError as err:
                raise _BadRequest(400, f"Body is not JSON: {err}", code="invalid_json") from err
            self._send(200, _completion(self.model, _to_request(body, self.model.name)))
        except _BadRequest as err:
            self._error(err.status, str(err), code=err.code, param=err.param)
        except ConfigurationError as err:  # e.g. a schema llama.cpp cannot express
            self._error(400, str(err), code="invalid_value", param="response_format")
        except ChatModelError as err:
            # A plain ChatModelError is the request's fault (e.g. a prompt longer than the
            # context window); its subclasses are the model's or its backend's.
            status = err.status_code or (400 if type(err) is ChatModelError else 500)
            self._error(status, str(err), code="model_error", param=None)
        except Exception as err:  # noqa: BLE001 - the client gets a 500, the log the trace
            _logger.exception("Chat completion failed.")
            self._error(500, f"{type(err).__name__}: {err}", code="server_error", param=None)


def make_server(
    model: ChatModel, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> http.server.ThreadingHTTPServer:
    """An HTTP server (not yet serving) answering OpenAI chat completions with ``model``."""
    handler = type("Handler", (_Handler,), {"model": model})
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_in_background(
    model: ChatModel | str | None = None, *, host: str = DEFAULT_HOST, port: int = 0
) -> tuple[str, Callable[[], None]]:
    """Serve a chat model from a background thread; return its base URL and a stop function.

    Args:
        model: A :class:`ChatModel`, a spec for :func:`~bilevel_optuna.chat.get_chat_model`, or
            ``None`` for the embedded model (answers unchecked: the client checks them).
        host: The address to bind; loopback unless you mean to expose it (no authentication).
        port: The port; 0 picks a free one.

    Returns:
        ``(base_url, stop)``: e.g. ``"http://127.0.0.1:53117/v1"``, and a function that stops
        the server and waits for its thread.

    Example:

        .. code-block:: python

            base_url, stop = serve_in_background()
            model = OpenAIChatModel(model="SmolLM2-135M-Instruct.Q4_1", base_url=base_url)
            ...
            stop()
    """
    if model is None:
        model = LocalChatModel(validate="none")
    elif isinstance(model, str):
        model = get_chat_model(model)
    server = make_server(model, host=host, port=port)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.1},
        name="bilevel-optuna-serve",
        daemon=True,
    )
    thread.start()
    bound_host, bound_port = str(server.server_address[0]), server.server_address[1]
    shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    base_url = f"http://{shown}:{bound_port}/v1"
    _logger.info("Serving %s at %s.", model.name, base_url)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return base_url, stop
