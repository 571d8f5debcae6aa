"""OpenAIChatModel against a scripted endpoint: every fault ends in our exception, named and fixable."""

from __future__ import annotations

import dataclasses
import json
import logging
import traceback
from collections.abc import Callable
from typing import Any

import pytest
from chat_tests._scripted import ScriptedEndpoint
from chat_tests._scripted import Step
from chat_tests._scripted import body
from chat_tests._scripted import completion
from chat_tests._scripted import error
from chat_tests._scripted import free_port

from bilevel_optuna.chat import ChatRequest
from bilevel_optuna.chat import OpenAIChatModel
from bilevel_optuna.exceptions import ChatAnswerError
from bilevel_optuna.exceptions import ChatAuthenticationError
from bilevel_optuna.exceptions import ChatConnectionError
from bilevel_optuna.exceptions import ChatModelError
from bilevel_optuna.exceptions import ChatModelNotFoundError
from bilevel_optuna.exceptions import ChatRateLimitError
from bilevel_optuna.exceptions import ChatServerError
from bilevel_optuna.exceptions import ChatTimeoutError
from bilevel_optuna.exceptions import ConfigurationError

Scripted = Callable[..., ScriptedEndpoint]

SCHEMA = {
    "type": "object",
    "properties": {"x": {"type": "number", "minimum": 0, "maximum": 15}},
    "required": ["x"],
}
REQUEST = ChatRequest(
    messages=({"role": "system", "content": "Propose."}, {"role": "user", "content": "Next x?"}),
    json_schema=SCHEMA,
    temperature=0.3,
    max_tokens=50,
    seed=7,
)
# Retry-After in milliseconds keeps the client's backoff, and these tests, short.
FAST = {"retry-after-ms": "5"}
KEY = "sk-test-SECRETSECRETSECRET-1234"


def _model(base_url: str, **kwargs: Any) -> OpenAIChatModel:
    options: dict[str, Any] = {"model": "m", "base_url": base_url, "max_retries": 2}
    options.update(kwargs)
    return OpenAIChatModel(**options)


def test_answer_and_request_fields(scripted: Scripted) -> None:
    endpoint = scripted([completion('{"x": 3}', model="served-name")])
    reply = _model(endpoint.base_url).complete(REQUEST)
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == ('{"x": 3}', 11, 7)
    assert (reply.model, reply.finish_reason) == ("served-name", "stop")
    sent = endpoint.requests[0]
    assert sent["model"] == "m"
    assert (sent["seed"], sent["temperature"], sent["max_completion_tokens"]) == (7, 0.3, 50)
    assert "max_tokens" not in sent  # deprecated by OpenAI, refused by its reasoning models
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == SCHEMA
    assert sent["messages"] == [dict(m) for m in REQUEST.messages]


def test_several_answers_are_asked_with_n_and_all_kept(scripted: Scripted) -> None:
    endpoint = scripted([completion('{"x": 3}', '{"x": 4}', '{"x": 5}'), completion('{"x": 6}')])
    request = dataclasses.replace(REQUEST, n=3)
    reply = _model(endpoint.base_url).complete(request)
    assert endpoint.requests[0]["n"] == 3
    assert reply.texts == ('{"x": 3}', '{"x": 4}', '{"x": 5}') and reply.text == '{"x": 3}'
    # A server that ignores n answers once: that one answer is what the caller gets.
    assert _model(endpoint.base_url).complete(request).texts == ('{"x": 6}',)
    assert "n" not in _model_request_fields(scripted, REQUEST)


def _model_request_fields(scripted: Scripted, request: ChatRequest) -> dict[str, Any]:
    endpoint = scripted([completion('{"x": 1}')])
    _model(endpoint.base_url).complete(request)
    return endpoint.requests[0]


def test_free_text_request_sends_no_response_format(scripted: Scripted) -> None:
    endpoint = scripted([completion("not JSON, and fine")])
    request = ChatRequest(messages=({"role": "user", "content": "Hi"},))
    assert _model(endpoint.base_url).complete(request).text == "not JSON, and fine"
    assert "response_format" not in endpoint.requests[0]
    assert "seed" not in endpoint.requests[0]


@pytest.mark.parametrize(
    "steps,expected_requests",
    [
        ([error(429, "slow down", **FAST), completion('{"x": 1}')], 2),
        (
            [error(503, "overloaded", **FAST), error(500, "oops", **FAST), completion('{"x": 1}')],
            3,
        ),
        ([Step(drop=True), completion('{"x": 1}')], 2),
    ],
    ids=["429-then-200", "5xx-then-200", "dropped-then-200"],
)
def test_transient_faults_are_retried(
    scripted: Scripted, steps: list[Step], expected_requests: int
) -> None:
    endpoint = scripted(steps)
    assert _model(endpoint.base_url).complete(REQUEST).text == '{"x": 1}'
    assert len(endpoint.requests) == expected_requests


@pytest.mark.parametrize(
    "steps,options,error_type,phrases,expected_requests",
    [
        (
            [error(429, "Rate limit reached", **FAST)],
            {},
            ChatRateLimitError,
            ["429", "Rate limit reached", "after 2 retries", "fewer workers"],
            3,
        ),
        (
            [error(500, "boom", **FAST)],
            {},
            ChatServerError,
            ["kept failing", "500: boom", "after 2 retries", "server's log"],
            3,
        ),
        (
            [Step(hang_s=5.0)],
            {"timeout": 0.2, "max_retries": 1},
            ChatTimeoutError,
            ["No answer", "within 0.2 s", "Raise timeout"],
            2,
        ),
        (
            [error(401, "Incorrect API key provided")],
            {},
            ChatAuthenticationError,
            ["refused the API key", "401", "Set OPENAI_API_KEY"],
            1,
        ),
        (
            [error(403, "Not allowed")],
            {},
            ChatAuthenticationError,
            ["403", "OPENAI_API_KEY"],
            1,
        ),
        (
            [error(400, "context length exceeded")],
            {"response_format": "json_schema"},
            ChatModelError,
            ["rejected the request", "context length exceeded", "shorten"],
            1,
        ),
        (
            [
                Step(
                    body=b'{"id": "x", "choices": [',
                    headers={"content-type": "application/json"},
                )
            ],
            {},
            ChatServerError,
            ["not JSON", "ends in /v1"],
            1,
        ),
        (
            [Step(body=b"<html>hello</html>", headers={"content-type": "text/html"})],
            {},
            ChatServerError,
            ["not a chat completion", "<html>", "ends in /v1"],
            1,
        ),
        (
            [completion("Sure! x is three.")],
            {},
            ChatAnswerError,
            ["not valid JSON", "Sure! x is three.", "structured output"],
            1,
        ),
        (
            [completion('{"y": 20}')],
            {},
            ChatAnswerError,
            ["does not match the schema", "at $: 'x' is a required property"],
            1,
        ),
        (
            [completion('{"x": ', finish_reason="length")],
            {},
            ChatAnswerError,
            ["cut off at max_tokens=50", "maxLength"],
            1,
        ),
    ],
    ids=[
        "429-forever",
        "500-forever",
        "hang",
        "401",
        "403",
        "400",
        "malformed-body",
        "html-body",
        "answer-not-json",
        "answer-breaks-schema",
        "answer-cut-off",
    ],
)
def test_faults_raise_our_errors(
    scripted: Scripted,
    steps: list[Step],
    options: dict[str, Any],
    error_type: type[ChatModelError],
    phrases: list[str],
    expected_requests: int,
) -> None:
    endpoint = scripted(steps)
    with pytest.raises(error_type) as info:
        _model(endpoint.base_url, **options).complete(REQUEST)
    assert type(info.value) is error_type
    for phrase in phrases:
        assert phrase in str(info.value)
    assert len(endpoint.requests) == expected_requests


def test_error_carries_status_request_id_and_raw(scripted: Scripted) -> None:
    step = error(401, "bad key")
    step.headers["x-request-id"] = "req_123"
    endpoint = scripted([step])
    with pytest.raises(ChatAuthenticationError) as info:
        _model(endpoint.base_url).complete(REQUEST)
    assert (info.value.status_code, info.value.request_id) == (401, "req_123")
    assert info.value.raw is not None and "bad key" in info.value.raw
    assert info.value.__cause__ is not None  # the client's error, chained


def test_answer_error_carries_the_reply(scripted: Scripted) -> None:
    endpoint = scripted([completion('{"y": 99}')])
    with pytest.raises(ChatAnswerError) as info:
        _model(endpoint.base_url).complete(REQUEST)
    assert info.value.raw == '{"y": 99}'
    assert info.value.reply is not None and info.value.reply.completion_tokens == 7


def test_out_of_bounds_answer_is_returned_marked(scripted: Scripted) -> None:
    endpoint = scripted([completion('{"x": 20}')])
    reply = _model(endpoint.base_url).complete(REQUEST)
    assert reply.text == '{"x": 20}'
    assert reply.schema_errors == ("at $.x: 20 is greater than the maximum of 15",)


@pytest.mark.parametrize(
    "models,phrase",
    [
        (["alpha", "beta"], "It serves: alpha, beta."),
        (None, "no model list either: check the base URL"),
    ],
)
def test_404_names_the_models_served(
    scripted: Scripted, models: list[str] | None, phrase: str
) -> None:
    endpoint = scripted([error(404, "The model 'm' does not exist")], models=models)
    with pytest.raises(ChatModelNotFoundError) as info:
        _model(endpoint.base_url).complete(REQUEST)
    message = str(info.value)
    assert "does not serve model 'm'" in message and phrase in message
    assert "BILEVEL_OPTUNA_MODEL" in message


def test_connection_refused() -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ChatConnectionError) as info:
        _model(base_url, max_retries=1).complete(REQUEST)
    message = str(info.value)
    assert f"Cannot reach {base_url}" in message
    assert "after 1 retries" in message and "bilevel-optuna serve" in message


def test_validate_json_and_none_let_schema_violations_through(scripted: Scripted) -> None:
    endpoint = scripted([completion('```json\n{"x": 99}\n```'), completion("plain words")])
    assert _model(endpoint.base_url, validate="json").complete(REQUEST).text == '{"x": 99}'
    assert _model(endpoint.base_url, validate="none").complete(REQUEST).text == "plain words"


def test_auto_falls_back_and_remembers(scripted: Scripted) -> None:
    endpoint = scripted(
        [
            error(400, "response_format json_schema is not supported"),
            completion('{"x": 2}'),
            error(400, "response_format json_schema is not supported"),  # the probe
            completion('{"x": 4}'),
        ]
    )
    model = _model(endpoint.base_url)
    assert model.complete(REQUEST).text == '{"x": 2}'
    assert model.response_format == "json_object"
    assert model.complete(REQUEST).text == '{"x": 4}'
    sent = [r.get("response_format", {}).get("type") for r in endpoint.requests]
    assert sent == ["json_schema", "json_object", "json_schema", "json_object"]
    assert endpoint.requests[2]["max_completion_tokens"] == 1  # the probe is tiny
    # Without structured output, the schema travels in the system prompt.
    system = endpoint.requests[1]["messages"][0]
    assert system["role"] == "system" and json.dumps(SCHEMA) in system["content"]
    assert system["content"].startswith("Propose.")


def test_auto_steps_down_to_text(scripted: Scripted) -> None:
    refusals = [error(400, "no json_schema"), error(422, "no json_object")]
    endpoint = scripted([*refusals, completion('{"x": 5}'), *refusals])
    model = _model(endpoint.base_url)
    assert model.complete(REQUEST).text == '{"x": 5}'
    assert model.response_format == "text"
    assert "response_format" not in endpoint.requests[2]
    assert len(endpoint.requests) == 5


def test_auto_keeps_the_format_when_only_this_schema_was_refused(scripted: Scripted) -> None:
    endpoint = scripted(
        [error(400, "cannot express this schema"), completion('{"x": 6}'), completion("{}")]
    )
    model = _model(endpoint.base_url)
    assert model.complete(REQUEST).text == '{"x": 6}'  # answered in JSON mode this time
    assert model.response_format == "json_schema"  # the probe with a trivial schema passed


def test_auto_does_not_remember_a_400_that_is_not_about_the_format(scripted: Scripted) -> None:
    endpoint = scripted([error(400, "prompt too long")])
    model = _model(endpoint.base_url)
    with pytest.raises(ChatModelError, match="prompt too long"):
        model.complete(REQUEST)
    assert model.response_format == "json_schema"
    assert len(endpoint.requests) == 3  # json_schema, json_object, text


def test_fixed_format_does_not_fall_back(scripted: Scripted) -> None:
    endpoint = scripted([error(400, "no json_schema")])
    model = _model(endpoint.base_url, response_format="json_schema")
    with pytest.raises(ChatModelError, match="no json_schema"):
        model.complete(REQUEST)
    assert len(endpoint.requests) == 1


def test_key_never_leaks(
    scripted: Scripted, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # redact() must not be what hides it
    endpoint = scripted([error(401, f"Incorrect API key provided: {KEY}.")])
    model = _model(endpoint.base_url, api_key=KEY)
    assert endpoint.requests == [] and KEY not in repr(model)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ChatAuthenticationError) as info:
            model.complete(REQUEST)
    assert endpoint.headers[0]["authorization"] == f"Bearer {KEY}"  # it was sent...
    err = info.value
    shown = [str(err), repr(err), err.raw or "", "".join(traceback.format_exception(err))]
    shown += [record.getMessage() for record in caplog.records]
    for text in shown:
        assert KEY not in text  # ...and shown nowhere


def test_missing_key_for_remote_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="set OPENAI_API_KEY"):
        OpenAIChatModel(model="m", base_url="https://api.example.com/v1")


def test_loopback_needs_no_key(scripted: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    endpoint = scripted([completion('{"x": 1}')])
    assert _model(endpoint.base_url).complete(REQUEST).text == '{"x": 1}'


def test_settings_from_environment(scripted: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = scripted([completion('{"x": 1}')])
    monkeypatch.setenv("OPENAI_BASE_URL", endpoint.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("BILEVEL_OPTUNA_MODEL", "from-env")
    model = OpenAIChatModel()
    assert model.name == "from-env"
    model.complete(REQUEST)
    assert endpoint.requests[0]["model"] == "from-env"
    assert endpoint.headers[0]["authorization"] == f"Bearer {KEY}"


def test_missing_model_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BILEVEL_OPTUNA_MODEL", raising=False)
    with pytest.raises(ConfigurationError, match="BILEVEL_OPTUNA_MODEL"):
        OpenAIChatModel(base_url="http://127.0.0.1:1/v1")


@pytest.mark.parametrize(
    "options,phrase",
    [
        ({"response_format": "yaml"}, "response_format must be one of"),
        ({"timeout": 0}, "timeout must be > 0 but got 0"),
        ({"max_retries": -1}, "max_retries must be >= 0 but got -1"),
        ({"validate": "strict"}, "validate must be one of"),
    ],
)
def test_invalid_options(options: dict[str, Any], phrase: str) -> None:
    with pytest.raises(ValueError, match=phrase):
        _model("http://127.0.0.1:1/v1", **options)


def test_base_url_needs_a_scheme() -> None:
    with pytest.raises(ConfigurationError, match="must start with http"):
        _model("127.0.0.1:8000/v1")


# --- current OpenAI parameters on the wire ---------------------------------------------------
# The error bodies below are OpenAI's own wording for each case (its reasoning models, its older
# API, its strict-schema check); the scripted endpoint plays them back.

STRICT_SCHEMA = {
    "type": "object",
    "properties": {
        "x": {"type": "number", "minimum": 0, "maximum": 15},
        "note": {"type": "string", "maxLength": 20},
    },
    "required": ["x", "note"],
    "additionalProperties": False,
}
STRICT_REQUEST = dataclasses.replace(REQUEST, json_schema=STRICT_SCHEMA)
ANSWER = '{"x": 3, "note": "ok"}'


def test_a_reasoning_model_gets_max_completion_tokens_and_never_max_tokens(
    scripted: Scripted,
) -> None:
    # A reasoning model answers max_tokens with "Unsupported parameter: 'max_tokens' is not
    # supported with this model. Use 'max_completion_tokens' instead." (param "max_tokens").
    endpoint = scripted([completion(ANSWER)])
    _model(endpoint.base_url).complete(STRICT_REQUEST)
    sent = endpoint.requests[0]
    assert sent["max_completion_tokens"] == 50 and "max_tokens" not in sent


@pytest.mark.parametrize(
    "refusal",
    [
        error(400, "Unrecognized request argument supplied: max_completion_tokens"),
        body(
            422,
            {
                "detail": [
                    {
                        "type": "extra_forbidden",
                        "loc": ["body", "max_completion_tokens"],
                        "msg": "Extra inputs are not permitted",
                    }
                ]
            },
        ),
    ],
    ids=["openai-style-400", "fastapi-422"],
)
def test_a_server_that_knows_only_max_tokens_gets_it_and_it_is_remembered(
    scripted: Scripted, refusal: Step
) -> None:
    endpoint = scripted([refusal, completion(ANSWER), completion(ANSWER)])
    model = _model(endpoint.base_url)
    assert model.complete(STRICT_REQUEST).text == ANSWER
    assert model.complete(STRICT_REQUEST).text == ANSWER
    first, retry, later = endpoint.requests
    assert first["max_completion_tokens"] == 50 and "max_tokens" not in first
    assert retry["max_tokens"] == 50 and "max_completion_tokens" not in retry
    assert later["max_tokens"] == 50  # remembered: no second refusal
    # The refusal was about the token cap, not the format: structured output stays.
    assert [r["response_format"]["type"] for r in endpoint.requests] == ["json_schema"] * 3
    assert model.response_format == "json_schema"


def test_a_server_that_ignores_max_completion_tokens_gets_max_tokens_next(
    scripted: Scripted,
) -> None:
    endpoint = scripted([completion(ANSWER)])  # 7 completion tokens, whatever the cap
    model = _model(endpoint.base_url)
    model.complete(dataclasses.replace(STRICT_REQUEST, max_tokens=3))
    model.complete(STRICT_REQUEST)
    assert "max_completion_tokens" in endpoint.requests[0]
    assert endpoint.requests[1]["max_tokens"] == 50


@pytest.mark.parametrize(
    "refusal",
    [
        error(
            400,
            "Unsupported value: 'temperature' does not support 0.3 with this model. Only the "
            "default (1) value is supported.",
            param="temperature",
        ),
        error(400, "Unsupported value: 'seed' is not supported with this model."),
    ],
    ids=["param-field", "named-in-message"],
)
def test_a_400_about_another_field_is_not_a_format_refusal(
    scripted: Scripted, refusal: Step
) -> None:
    endpoint = scripted([refusal])
    model = _model(endpoint.base_url)
    with pytest.raises(ChatModelError, match="rejected the request") as info:
        model.complete(STRICT_REQUEST)
    assert info.value.status_code == 400
    assert len(endpoint.requests) == 1  # no step-down to json_object, no probe
    assert model.response_format == "json_schema"


def test_strict_is_set_where_the_schema_qualifies(scripted: Scripted) -> None:
    endpoint = scripted([completion(ANSWER), completion('{"x": 3}')])
    model = _model(endpoint.base_url)
    model.complete(STRICT_REQUEST)
    model.complete(REQUEST)  # SCHEMA allows other properties: not strict
    qualifying, loose = (r["response_format"]["json_schema"] for r in endpoint.requests)
    assert qualifying["strict"] is True and qualifying["schema"] == STRICT_SCHEMA
    assert "strict" not in loose


def test_a_refused_strict_is_dropped_for_that_schema_only(scripted: Scripted) -> None:
    refusal = error(
        400,
        "Invalid schema for response_format 'answer': In context=('properties', 'note'), "
        "'maxLength' is not permitted.",
        param="response_format",
    )
    other = {**STRICT_SCHEMA, "properties": {"x": {"type": "number"}}, "required": ["x"]}
    endpoint = scripted(
        [refusal, completion(ANSWER), completion(ANSWER), completion('{"x": 1}')]
    )
    model = _model(endpoint.base_url)
    assert model.complete(STRICT_REQUEST).text == ANSWER
    model.complete(STRICT_REQUEST)
    model.complete(dataclasses.replace(REQUEST, json_schema=other))
    formats = [r["response_format"] for r in endpoint.requests]
    assert [f["type"] for f in formats] == ["json_schema"] * 4  # never stepped down
    assert [f["json_schema"].get("strict") for f in formats] == [True, None, None, True]
    assert model.response_format == "json_schema"


# --- The check before the first trial ------------------------------------------------------


def test_check_passes_on_one_models_request_where_the_model_is_listed(
    scripted: Scripted,
) -> None:
    endpoint = scripted([error(500, "never asked")], models=["m", "other"])
    model = _model(endpoint.base_url)
    model.check()
    model.check()
    _model(endpoint.base_url).check()  # another instance: the process checked already
    assert endpoint.model_requests == 1 and endpoint.requests == []


def test_check_asks_one_token_where_the_model_is_not_listed(scripted: Scripted) -> None:
    # llama.cpp's and Ollama's servers list one name and answer to others too.
    endpoint = scripted([completion("{}")], models=["/models/served.gguf"])
    _model(endpoint.base_url).check()
    (request,) = endpoint.requests
    assert request["model"] == "m" and request["max_completion_tokens"] == 1


def _one_line_error(error: Exception) -> str:
    message = str(error)
    assert "\n" not in message and len(message) < 600, message
    return message


def test_check_of_an_unserved_model_lists_the_served_ones(scripted: Scripted) -> None:
    endpoint = scripted([error(404, "The model `m` does not exist.")], models=["alpha", "beta"])
    with pytest.raises(ChatModelNotFoundError) as info:
        _model(endpoint.base_url).check()
    message = _one_line_error(info.value)
    assert message.startswith(f"{endpoint.base_url} does not serve model 'm' (404: ")
    assert "It serves: alpha, beta." in message
    assert "openai:MODEL@BASE_URL" in message and "BILEVEL_OPTUNA_MODEL" in message
    # Checked once: a second sampler of the process gets the same error without a request.
    with pytest.raises(ChatModelNotFoundError, match="It serves: alpha, beta."):
        _model(endpoint.base_url).check()
    assert endpoint.model_requests == 1 and len(endpoint.requests) == 1


def test_check_of_a_refused_key_says_which_variable_to_set(scripted: Scripted) -> None:
    endpoint = scripted([], models=error(401, "Incorrect API key provided: sk-te***1234."))
    with pytest.raises(ChatAuthenticationError) as info:
        _model(endpoint.base_url, api_key=KEY).check()
    message = _one_line_error(info.value)
    assert message.startswith(f"{endpoint.base_url} refused the API key (401: Incorrect API key")
    assert "OPENAI_API_KEY" in message and KEY not in message
    assert info.value.status_code == 401


def test_check_of_an_unreachable_endpoint_is_one_line_at_once() -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ChatConnectionError) as info:
        _model(base_url, max_retries=3).check()
    message = _one_line_error(info.value)
    assert message.startswith(f"Cannot reach {base_url} (")
    assert "retries" not in message and "bilevel-optuna serve" in message
