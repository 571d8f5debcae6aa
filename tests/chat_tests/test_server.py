"""The embedded model served on loopback, and OpenAIChatModel talking to it for real."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from bilevel_optuna.chat import ChatRequest
from bilevel_optuna.chat import LocalChatModel
from bilevel_optuna.chat import OpenAIChatModel
from bilevel_optuna.chat import serve_in_background
from bilevel_optuna.chat import validate_answer
from bilevel_optuna.cli import build_parser
from bilevel_optuna.exceptions import ChatAnswerError
from bilevel_optuna.exceptions import ChatModelError
from bilevel_optuna.exceptions import ChatModelNotFoundError

NAME = "SmolLM2-135M-Instruct.Q4_1"
SCHEMA = {
    "type": "object",
    "properties": {"x": {"type": "integer"}, "kernel": {"enum": ["rbf", "linear"]}},
    "required": ["x", "kernel"],
}
REQUEST = ChatRequest(
    messages=(
        {"role": "system", "content": "You tune an SVM. Answer in JSON."},
        {"role": "user", "content": "Tried x=3 rbf -> 0.8. Propose the next trial."},
    ),
    json_schema=SCHEMA,
    temperature=0.7,
    max_tokens=30,
    seed=11,
)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    url, stop = serve_in_background()
    yield url
    stop()


def _post(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_served_answer_equals_in_process_answer(base_url: str) -> None:
    served = OpenAIChatModel(model=NAME, base_url=base_url).complete(REQUEST)
    local = LocalChatModel().complete(REQUEST)
    assert served.text == local.text
    assert validate_answer(served.text, SCHEMA).keys() == {"x", "kernel"}
    assert (served.prompt_tokens, served.completion_tokens) == (
        local.prompt_tokens,
        local.completion_tokens,
    )
    assert served.model == NAME and served.finish_reason == "stop"


def test_several_answers_are_served_as_choices(base_url: str) -> None:
    request = dataclasses.replace(REQUEST, n=3)
    served = OpenAIChatModel(model=NAME, base_url=base_url).complete(request)
    assert served.texts == LocalChatModel().complete(request).texts
    assert len(served.texts) == 3


def test_concurrent_workers_share_the_server(base_url: str) -> None:
    texts: list[str] = []

    def worker() -> None:
        texts.append(OpenAIChatModel(model=NAME, base_url=base_url).complete(REQUEST).text)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(texts) == 2 and texts[0] == texts[1]


def test_json_object_mode(base_url: str) -> None:
    body = {
        "model": NAME,
        "messages": [{"role": "user", "content": 'Reply with {"x": 1}.'}],
        "response_format": {"type": "json_object"},
        "max_tokens": 40,
        "seed": 0,
        "temperature": 0,
    }
    status, answer = _post(base_url + "/chat/completions", body)
    assert status == 200 and answer["choices"][0]["finish_reason"] == "stop"
    assert isinstance(json.loads(answer["choices"][0]["message"]["content"]), dict)
    assert answer["usage"]["total_tokens"] == (
        answer["usage"]["prompt_tokens"] + answer["usage"]["completion_tokens"]
    )


def test_models_route(base_url: str) -> None:
    with urllib.request.urlopen(base_url + "/models", timeout=10) as response:
        listing = json.loads(response.read())
    assert [m["id"] for m in listing["data"]] == [NAME]


def test_unknown_model_gets_a_404_naming_the_served_one(base_url: str) -> None:
    model = OpenAIChatModel(model="gpt-4o", base_url=base_url, max_retries=0)
    with pytest.raises(ChatModelNotFoundError, match=f"It serves: {NAME}"):
        model.complete(REQUEST)


@pytest.mark.parametrize(
    "path,body,status,phrase",
    [
        ("/chat/completions", b"{not json", 400, "Body is not JSON"),
        ("/chat/completions", [1, 2], 400, "must be a JSON object"),
        ("/chat/completions", {"model": NAME}, 400, "messages must be a non-empty list"),
        (
            "/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "stream": True},
            400,
            "stream=true is not supported",
        ),
        (
            "/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "xml"}},
            400,
            "response_format.type must be one of",
        ),
        (
            "/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0},
            400,
            "max_tokens must be >= 1",
        ),
        (
            "/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "n": 0},
            400,
            "n must be a positive integer",
        ),
        (
            "/chat/completions",
            {
                "messages": [{"role": "user", "content": "hi"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"schema": {"$ref": "x"}},
                },
            },
            400,
            "cannot turn this JSON schema into a grammar",
        ),
        ("/embeddings", {"input": "hi"}, 404, "No route POST /v1/embeddings"),
    ],
)
def test_bad_requests(base_url: str, path: str, body: Any, status: int, phrase: str) -> None:
    got_status, answer = _post(base_url + path, body)
    assert got_status == status
    assert phrase in answer["error"]["message"]


def test_bad_request_reaches_the_client_as_our_error(base_url: str) -> None:
    model = OpenAIChatModel(
        model=NAME, base_url=base_url, max_retries=0, response_format="json_schema"
    )
    request = ChatRequest(
        messages=({"role": "user", "content": "hi"},), json_schema={"$ref": "http://x/y.json"}
    )
    with pytest.raises(ChatModelError, match="rejected the request \\(400"):
        model.complete(request)


def test_cli_parser_registers_serve() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.model_path, args.threads) == ("127.0.0.1", 8000, None, None)
    args = build_parser().parse_args(["serve", "--port", "0", "--threads", "1"])
    assert (args.port, args.threads) == (0, 1)


@pytest.mark.slow  # a second process loads the model
def test_cli_serves_until_stopped() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "bilevel_optuna", "serve", "--port", "0", "--n-ctx", "512"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith(f"Serving {NAME} (loaded in ")
        url = first.rsplit(" at ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        assert (
            process.stdout.readline().strip()
            == f"Use it with the chat model spec: openai:{NAME}@{url}"
        )
        with urllib.request.urlopen(url + "/models", timeout=10) as response:
            assert json.loads(response.read())["data"][0]["id"] == NAME
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("cap", ["max_completion_tokens", "max_tokens"])
def test_both_names_of_the_token_cap_are_honoured(base_url: str, cap: str) -> None:
    body = {
        "model": NAME,
        "messages": [{"role": "user", "content": "Write a long story about a cat."}],
        "seed": 3,
        cap: 4,
    }
    status, answer = _post(f"{base_url}/chat/completions", body)
    assert status == 200
    assert answer["usage"]["completion_tokens"] == 4
    assert answer["choices"][0]["finish_reason"] == "length"


def test_the_client_sends_the_new_name_and_strict_and_the_server_takes_them(
    base_url: str,
) -> None:
    strict_schema = dict(SCHEMA, additionalProperties=False)
    request = dataclasses.replace(REQUEST, json_schema=strict_schema, max_tokens=5)
    model = OpenAIChatModel(model=NAME, base_url=base_url)
    # Five tokens cut the answer off: the cap reached the model under its new name.
    with pytest.raises(ChatAnswerError, match="cut off at max_tokens=5") as info:
        model.complete(request)
    assert info.value.reply is not None and info.value.reply.completion_tokens == 5
    assert model._token_param == "max_completion_tokens"  # no fallback was needed
    assert model.response_format == "json_schema"  # strict was taken, not refused
    assert model.complete(dataclasses.replace(request, max_tokens=30)).text


def test_the_access_line_is_written_before_the_reply_leaves(base_url: str) -> None:
    # A client that sends its next request as soon as a reply arrives must find the access
    # lines in its own order: the line is written before the reply can reach it. The handler
    # below holds the line's write until the client has its reply, or 2 s have passed.
    import logging

    from bilevel_optuna.chat._server import access_logger

    answered = threading.Event()
    seen: list[bool] = []

    class Hold(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(answered.wait(timeout=2.0))

    hold = Hold()
    access_logger.addHandler(hold)
    level = access_logger.level
    access_logger.setLevel(logging.INFO)
    try:
        with urllib.request.urlopen(base_url + "/models", timeout=60) as response:
            response.read()
        answered.set()
    finally:
        access_logger.removeHandler(hold)
        access_logger.setLevel(level)
    assert seen == [False]  # the client had no reply while its access line was being written
