"""A scripted OpenAI-compatible endpoint on 127.0.0.1: each request gets the next scripted step."""

from __future__ import annotations

import dataclasses
import http.server
import json
import socket
import threading
from typing import Any


@dataclasses.dataclass
class Step:
    """One scripted answer: a status and a body, or a hang, or a dropped connection."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    hang_s: float = 0.0
    drop: bool = False


def completion(
    text: str, *more: str, model: str = "scripted", finish_reason: str = "stop"
) -> Step:
    """A chat completion answering ``text`` (and ``more`` choices, as for a request's n)."""
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": t},
                "finish_reason": finish_reason,
            }
            for i, t in enumerate((text, *more))
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }
    return Step(body=json.dumps(body).encode(), headers={"content-type": "application/json"})


def error(status: int, message: str, *, param: str | None = None, **headers: str) -> Step:
    """An error in OpenAI's shape; ``param`` names the request field it is about."""
    body = {"error": {"message": message, "type": "test_error", "param": param, "code": None}}
    return Step(
        status=status,
        body=json.dumps(body).encode(),
        headers={"content-type": "application/json", **headers},
    )


class ScriptedEndpoint:
    """Answers the n-th POST with the n-th step (the last step repeats); records each request.

    ``GET .../models`` answers with ``models`` (or 404 when it is ``None``, or that step when
    it is a :class:`Step`, e.g. a 401); ``model_requests`` counts those GETs.
    """

    def __init__(self, steps: list[Step], *, models: list[str] | Step | None = None) -> None:
        self.steps = steps
        self.models = models
        self.requests: list[dict[str, Any]] = []
        self.model_requests = 0
        self.headers: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with endpoint._lock:
                    endpoint.model_requests += 1
                if isinstance(endpoint.models, Step):
                    self._send(endpoint.models)
                    return
                if endpoint.models is None:
                    self._send(error(404, "no such route"))
                    return
                data = [{"id": m, "object": "model", "owned_by": "test"} for m in endpoint.models]
                body = json.dumps({"object": "list", "data": data}).encode()
                self._send(Step(body=body, headers={"content-type": "application/json"}))

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                payload = json.loads(self.rfile.read(length))
                with endpoint._lock:
                    index = len(endpoint.requests)
                    endpoint.requests.append(payload)
                    endpoint.headers.append({k.lower(): v for k, v in self.headers.items()})
                step = endpoint.steps[min(index, len(endpoint.steps) - 1)]
                if step.hang_s:
                    endpoint._stop.wait(step.hang_s)
                if step.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._send(step)

            def _send(self, step: Step) -> None:
                self.send_response(step.status)
                for key, value in step.headers.items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(step.body)))
                self.end_headers()
                self.wfile.write(step.body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


def body(status: int, payload: Any) -> Step:
    """Any JSON body, e.g. FastAPI's 422 ``{"detail": [...]}``."""
    return Step(
        status=status,
        body=json.dumps(payload).encode(),
        headers={"content-type": "application/json"},
    )


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
