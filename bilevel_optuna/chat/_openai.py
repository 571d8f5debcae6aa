"""A chat model behind any OpenAI-compatible endpoint: OpenAI, DeepSeek, vLLM, llama.cpp, Ollama.

Retries are left to the ``openai`` client (``max_retries``): it already retries exactly the
transient failures (429, 408, 409, 5xx, dropped connections and timeouts, or whatever the server
marks with ``x-should-retry``), with exponential backoff from 0.5 s up to 8 s and jitter, and it
honours ``retry-after`` / ``retry-after-ms`` when the server sends them. A second loop of our own
around it would multiply the attempts and ignore ``retry-after``; what is ours is the policy
(:data:`DEFAULT_MAX_RETRIES`, :data:`DEFAULT_TIMEOUT_S`) and turning the client's final error
into one of ours that names the problem and the fix.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.parse
from typing import Any
from typing import Literal

import openai

from bilevel_optuna._logging import get_logger
from bilevel_optuna._logging import redact
from bilevel_optuna._urls import hide_password as _display_url
from bilevel_optuna._urls import is_loopback as _is_loopback
from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.chat._base import ChatReply
from bilevel_optuna.chat._base import ChatRequest
from bilevel_optuna.chat._validation import Validate
from bilevel_optuna.chat._validation import _check_validate_mode
from bilevel_optuna.exceptions import ChatAnswerError
from bilevel_optuna.exceptions import ChatAuthenticationError
from bilevel_optuna.exceptions import ChatConnectionError
from bilevel_optuna.exceptions import ChatModelError
from bilevel_optuna.exceptions import ChatModelNotFoundError
from bilevel_optuna.exceptions import ChatRateLimitError
from bilevel_optuna.exceptions import ChatServerError
from bilevel_optuna.exceptions import ChatTimeoutError
from bilevel_optuna.exceptions import ConfigurationError

_logger = get_logger(__name__)

ResponseFormat = Literal["auto", "json_schema", "json_object", "text"]
RESPONSE_FORMATS: tuple[str, ...] = ("auto", "json_schema", "json_object", "text")

#: Where requests go when neither ``base_url`` nor ``OPENAI_BASE_URL`` says otherwise.
DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: Seconds one attempt may take. Generous: a CPU-served model can take tens of seconds.
DEFAULT_TIMEOUT_S = 60.0
#: Retries after the first attempt, done by the ``openai`` client with jittered backoff.
DEFAULT_MAX_RETRIES = 3
#: Environment variable holding the model name (the base URL and key use the client's own).
MODEL_ENV = "BILEVEL_OPTUNA_MODEL"

# The formats "auto" tries, in order, when an endpoint refuses the previous one: with a 400, or
# a 422 from servers that validate the request body (FastAPI-based, e.g. llama_cpp.server).
_FALLBACK = {"json_schema": "json_object", "json_object": "text"}
_FORMAT_REFUSED = (openai.BadRequestError, openai.UnprocessableEntityError)
# The token cap's name, newest first: OpenAI deprecated ``max_tokens`` for
# ``max_completion_tokens``, and its reasoning models reject the old name; servers that predate
# the new name know only ``max_tokens``. The first is sent until the endpoint refuses it.
_TOKEN_PARAMS = ("max_completion_tokens", "max_tokens")
# Request fields a 400 may name; one that names any of these but response_format is about that
# field, not about the response format.
_REQUEST_FIELDS = frozenset(
    {"max_completion_tokens", "max_tokens", "temperature", "seed", "n", "messages", "model"}
    | {"top_p", "stream", "response_format"}
)
_QUOTED = re.compile(r"""['"`]([A-Za-z_]+)['"`]""")
# Sent as the key to loopback servers (llama.cpp, vLLM, Ollama, `bilevel-optuna serve`), which
# ignore it; the client refuses to start without one.
_LOOPBACK_KEY = "no-key-needed-on-loopback"
# How long listing an endpoint's models may take when explaining a 404.
_LIST_MODELS_TIMEOUT_S = 10.0
_MAX_LISTED_MODELS = 30
_MAX_QUOTED_CHARS = 300
#: Seconds the check before the first trial (:meth:`OpenAIChatModel.check`) may take a request.
CHECK_TIMEOUT_S = 5.0
# Outcomes of the check, once per process per (base URL, model, key): None where it passed,
# else the error's class and message (raised anew each time, so no traceback piles up).
_CHECKED: dict[tuple[str, str, int], tuple[type[ChatModelError], str, int | None] | None] = {}
_CHECKED_LOCK = threading.Lock()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _with_schema_instruction(
    messages: list[dict[str, str]], schema: dict[str, Any]
) -> list[dict[str, str]]:
    """Put the schema into the prompt, for endpoints that cannot take it as response_format."""
    instruction = (
        "Answer with one JSON object and nothing else. It must match this JSON schema:\n"
        + json.dumps(schema)
    )
    if messages and messages[0]["role"] == "system":
        first = {"role": "system", "content": messages[0]["content"] + "\n\n" + instruction}
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def strict_qualifies(schema: Any) -> bool:
    """Whether ``schema`` meets structured output's strict mode: every object lists all its
    properties as required and allows no others (checked through properties, items, $defs,
    anyOf). OpenAI refuses ``strict`` on a schema that does not."""
    if isinstance(schema, list):
        return all(strict_qualifies(s) for s in schema)
    if not isinstance(schema, dict):
        return True
    is_object = schema.get("type") == "object" or "properties" in schema
    if is_object:
        properties = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False:
            return False
        if sorted(schema.get("required") or []) != sorted(properties):
            return False
    nested: list[Any] = list((schema.get("properties") or {}).values())
    nested += list((schema.get("$defs") or {}).values())
    nested += [schema[k] for k in ("items", "anyOf") if k in schema]
    return all(strict_qualifies(s) for s in nested)


def _response_format(
    fmt: str, schema: dict[str, Any], *, strict: bool = False
) -> dict[str, Any] | None:
    if fmt == "json_schema":
        json_schema: dict[str, Any] = {"name": "answer", "schema": schema}
        if strict:
            json_schema["strict"] = True
        return {"type": "json_schema", "json_schema": json_schema}
    if fmt == "json_object":
        return {"type": "json_object"}
    return None


class OpenAIChatModel(ChatModel):
    """Ask a model behind an OpenAI-compatible chat-completions endpoint.

    Args:
        model: The model name; defaults to the ``BILEVEL_OPTUNA_MODEL`` environment variable.
        base_url: The endpoint, e.g. ``http://127.0.0.1:8000/v1``; defaults to
            ``OPENAI_BASE_URL``, then to OpenAI's.
        api_key: The key; defaults to ``OPENAI_API_KEY``. Loopback endpoints need none. It never
            appears in a log, an exception or the ``repr``.
        response_format: How a request's JSON schema is sent. ``"json_schema"``: as structured
            output; ``"json_object"``: JSON mode, the schema in the prompt; ``"text"``: the schema
            in the prompt only. ``"auto"`` starts with ``"json_schema"`` and steps down when the
            endpoint rejects the format with a 400, remembering what worked. A 400 that names
            another request field (``temperature``, ``seed``, ...) is that field's error, not
            the format's. With ``"json_schema"``, ``strict`` is set where the schema qualifies
            (``strict_qualifies``), and dropped for that schema if the endpoint refuses it.
        timeout: Seconds one attempt may take.
        max_retries: Retries on 429, 5xx, dropped connections and timeouts, with jittered
            exponential backoff (the ``openai`` client's).
        validate: ``"schema"``, ``"json"`` or ``"none"``: how answers to JSON requests are
            checked (see :func:`~bilevel_optuna.chat.validate_answer`).

    The token cap goes as ``max_completion_tokens`` (OpenAI's current name); an endpoint that
    refuses it, or answers past the cap as if it had not seen it, gets ``max_tokens`` from then
    on.

    Example:

        .. code-block:: python

            model = OpenAIChatModel(model="deepseek-chat", base_url="https://api.deepseek.com")
            reply = model.complete(ChatRequest(messages=({"role": "user", "content": "Hi"},)))
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        response_format: ResponseFormat = "auto",
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        validate: Validate = "schema",
    ) -> None:
        if response_format not in RESPONSE_FORMATS:
            raise ValueError(
                f"response_format must be one of {RESPONSE_FORMATS} but got {response_format!r}."
            )
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 but got {timeout}.")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0 but got {max_retries}.")
        self._validate = _check_validate_mode(validate)

        model = model or os.environ.get(MODEL_ENV)
        if not model:
            raise ConfigurationError(
                "No model name for the OpenAI-compatible backend: use the spec 'openai:MODEL', "
                f"pass model=..., or set {MODEL_ENV}."
            )
        base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
            raise ConfigurationError(
                f"The base URL {_display_url(base_url)!r} must start with http:// or https://, "
                "e.g. 'http://127.0.0.1:8000/v1'. Fix OPENAI_BASE_URL or the spec "
                "'openai:MODEL@BASE_URL'."
            )
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            if not _is_loopback(base_url):
                raise ConfigurationError(
                    f"No API key for {_display_url(base_url)}: set OPENAI_API_KEY "
                    "(export OPENAI_API_KEY=...) or pass api_key to OpenAIChatModel. Only "
                    "loopback endpoints (127.0.0.1, localhost) work without a key."
                )
            api_key = _LOOPBACK_KEY
        self._secret = api_key if api_key != _LOOPBACK_KEY else None

        self.name = model
        self._model = model
        self._base_url = _display_url(base_url)
        self._timeout = float(timeout)
        self._max_retries = int(max_retries)
        self._auto = response_format == "auto"
        self._format: str = "json_schema" if self._auto else response_format
        self._format_lock = threading.Lock()
        self._token_param = _TOKEN_PARAMS[0]
        # Schemas (canonical JSON) for which the endpoint refused strict mode.
        self._strict_refused: set[str] = set()
        self._client = openai.OpenAI(
            api_key=api_key, base_url=base_url, timeout=self._timeout, max_retries=max_retries
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self._model!r}, base_url={self._base_url!r}, "
            f"response_format={self.response_format!r})"
        )

    @property
    def response_format(self) -> str:
        """The format now in use (``"auto"`` resolves to what the endpoint accepted)."""
        return self._format

    def _complete(self, request: ChatRequest) -> ChatReply:
        start = time.perf_counter()
        fmt: str = self._format
        token_param = self._token_param
        schema_key = json.dumps(request.json_schema, sort_keys=True)
        strict = (
            request.json_schema is not None
            and schema_key not in self._strict_refused
            and strict_qualifies(request.json_schema)
        )
        strict_dropped = False
        refused: list[str] = []
        first_error: openai.APIStatusError | None = None
        while True:
            try:
                completion = self._create(request, fmt, token_param=token_param, strict=strict)
                break
            except _FORMAT_REFUSED as err:
                self._scrub(err)
                param = self._rejected_param(err, token_param)
                if param == token_param and token_param != _TOKEN_PARAMS[-1]:
                    _logger.info(
                        "%s refused %r (%s); sending the token cap as %r.",
                        self._base_url,
                        token_param,
                        self._error_text(err),
                        _TOKEN_PARAMS[-1],
                    )
                    token_param = _TOKEN_PARAMS[-1]
                    continue
                if param is not None and param != "response_format":
                    # About another field (temperature, seed, ...): no format would help.
                    raise self._wrap(err) from err
                if strict and fmt == "json_schema":
                    _logger.info(
                        "%s refused strict structured output (%s); trying without strict.",
                        self._base_url,
                        self._error_text(err),
                    )
                    first_error = first_error or err
                    strict, strict_dropped = False, True
                    continue
                if self._auto and request.json_schema is not None and fmt in _FALLBACK:
                    first_error = first_error or err
                    _logger.info(
                        "%s refused the request with response_format %r (%s); trying %r.",
                        self._base_url,
                        fmt,
                        self._error_text(err),
                        _FALLBACK[fmt],
                    )
                    refused.append(fmt)
                    fmt = _FALLBACK[fmt]
                    continue
                raise self._wrap(first_error or err) from (first_error or err)
            except openai.OpenAIError as err:
                self._scrub(err)
                raise self._wrap(err) from err
            except json.JSONDecodeError as err:
                body = self._clean(err.doc)
                raise ChatServerError(
                    f"{self._base_url} answered with a body that is not JSON ({err.msg}): "
                    f"{body[:_MAX_QUOTED_CHARS]!r}. Check that the base URL points at an "
                    "OpenAI-compatible API (it usually ends in /v1).",
                    raw=body,
                ) from err
        reply = self._to_reply(completion, time.perf_counter() - start)
        if strict_dropped and fmt == "json_schema":
            with self._format_lock:
                self._strict_refused.add(schema_key)
        if (
            token_param == _TOKEN_PARAMS[0]
            and reply.completion_tokens > request.max_tokens * len(reply.texts)
        ):
            # The endpoint took no notice of the new name: the cap never reached the model.
            _logger.warning(
                "%s wrote %d completion tokens for a cap of %d: it ignores %r, so the cap is "
                "sent as %r from now on.",
                self._base_url,
                reply.completion_tokens,
                request.max_tokens,
                token_param,
                _TOKEN_PARAMS[-1],
            )
            token_param = _TOKEN_PARAMS[-1]
        if token_param != self._token_param:
            with self._format_lock:
                self._token_param = token_param
        if refused:
            self._remember_refused(refused)
        return reply

    def _rejected_param(self, err: openai.APIStatusError, token_param: str) -> str | None:
        """The request field a 400/422 is about, where it says: OpenAI's ``param``, the
        ``loc`` of a FastAPI 422, the token cap's name anywhere in the message, or the first
        quoted request field in it; ``None`` where it names none."""
        body = err.body
        if isinstance(body, dict):
            param = body.get("param")
            if isinstance(param, str) and param:
                return re.split(r"[.\[]", param, maxsplit=1)[0]
            detail = body.get("detail")
            if isinstance(detail, list):
                for item in detail:
                    loc = item.get("loc") if isinstance(item, dict) else None
                    if isinstance(loc, list) and len(loc) > 1 and loc[1] in _REQUEST_FIELDS:
                        return str(loc[1])
        text = self._error_text(err) + " " + self._clean(str(err.message))
        if re.search(rf"\b{token_param}\b", text):
            return token_param
        for match in _QUOTED.finditer(text):
            if match.group(1) in _REQUEST_FIELDS:
                return match.group(1)
        return None

    def _remember_refused(self, refused: list[str]) -> None:
        """Step the format down for good only where the endpoint refuses the format itself.

        A 400 may be about this request's schema rather than the format (llama.cpp cannot
        express every schema), so each refused format is tried once more with a trivial schema.
        """
        fmt = self._format
        for candidate in refused:
            if self._format_supported(candidate):
                break
            fmt = _FALLBACK[candidate]
        with self._format_lock:
            if RESPONSE_FORMATS.index(fmt) > RESPONSE_FORMATS.index(self._format):
                _logger.warning(
                    "%s does not accept response_format %r; using %r from now on.",
                    self._base_url,
                    self._format,
                    fmt,
                )
                self._format = fmt

    def _format_supported(self, fmt: str) -> bool:
        probe = ChatRequest(
            messages=({"role": "user", "content": "Reply with the JSON object {}."},),
            json_schema={"type": "object"},
            temperature=0.0,
            max_tokens=1,
        )
        try:
            self._create(probe, fmt, token_param=self._token_param, strict=False)
        except _FORMAT_REFUSED:
            return False
        except (openai.OpenAIError, json.JSONDecodeError):
            return True  # another failure says nothing about the format: keep it
        return True

    def _create(self, request: ChatRequest, fmt: str, *, token_param: str, strict: bool) -> Any:
        messages = [dict(m) for m in request.messages]
        kwargs: dict[str, Any] = {token_param: request.max_tokens}
        if request.json_schema is not None:
            response_format = _response_format(fmt, request.json_schema, strict=strict)
            if response_format is not None:
                kwargs["response_format"] = response_format
            if fmt != "json_schema":
                messages = _with_schema_instruction(messages, request.json_schema)
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if request.n != 1:
            kwargs["n"] = request.n
        return self._client.chat.completions.create(
            model=self._model,
            messages=messages,  # type: ignore[arg-type]
            temperature=request.temperature,
            **kwargs,
        )

    def _to_reply(self, completion: Any, latency_s: float) -> ChatReply:
        choices = getattr(completion, "choices", None)
        if not isinstance(choices, list):
            raw = completion if isinstance(completion, str) else repr(completion)
            raise ChatServerError(
                f"{self._base_url} answered something that is not a chat completion: "
                f"{raw[:_MAX_QUOTED_CHARS]!r}. Check that the base URL points at an "
                "OpenAI-compatible API (it usually ends in /v1).",
                raw=raw,
            )
        request_id = getattr(completion, "_request_id", None)
        if not choices:
            raise ChatAnswerError(
                f"{self._base_url} returned no answer (no choices) for model {self._model!r}. "
                "Retry, or check the server's log.",
                request_id=request_id,
            )
        choice = choices[0]
        text = choice.message.content
        if text is None:
            refusal = getattr(choice.message, "refusal", None)
            raise ChatAnswerError(
                f"{self._base_url} returned no text (finish reason {choice.finish_reason!r}"
                + (f", refusal {refusal!r}" if refusal else "")
                + "). Rephrase the prompt or use another model.",
                request_id=request_id,
                raw=refusal,
            )
        usage = completion.usage
        # Several choices (a request with n > 1): keep every one that holds text; a server
        # that ignores n returns one, and the caller makes do with it.
        texts = [text] + [
            c.message.content
            for c in choices[1:]
            if getattr(c, "message", None) is not None and isinstance(c.message.content, str)
        ]
        return ChatReply(
            text=text,
            prompt_tokens=int(usage.prompt_tokens) if usage is not None else 0,
            completion_tokens=int(usage.completion_tokens) if usage is not None else 0,
            latency_s=latency_s,
            model=completion.model or self._model,
            finish_reason=choice.finish_reason,
            choices=tuple(texts) if len(texts) > 1 else (),
        )

    # --- the check before the first trial ------------------------------------------------

    def check(self) -> None:
        """Check that the endpoint answers, takes the key and serves the model: once per
        process per (base URL, model, key), with a short timeout (``CHECK_TIMEOUT_S``).

        One request lists the endpoint's models. Where the model is not in the list (servers
        such as llama.cpp's or Ollama's answer to other names too), or there is no list, one
        request for a single token decides. Either way the error names the URL, the cause
        and the fix, on one line.

        Raises:
            ChatConnectionError: Nothing answers at the base URL (or not within the timeout).
            ChatAuthenticationError: The endpoint refuses the key (401/403).
            ChatModelNotFoundError: The endpoint does not serve the model; the message lists
                the models it does serve.
        """
        key = (self._base_url, self._model, hash(self._secret))
        with _CHECKED_LOCK:
            if key not in _CHECKED:
                error = self._probe()
                _CHECKED[key] = (
                    None if error is None else (type(error), str(error), error.status_code)
                )
                if error is None:
                    _logger.info("%s serves model %r.", self._base_url, self._model)
            outcome = _CHECKED[key]
        if outcome is not None:
            cls, message, status = outcome
            raise cls(message, status_code=status)

    def _probe(self) -> ChatModelError | None:
        client = self._client.with_options(max_retries=0, timeout=CHECK_TIMEOUT_S)
        where = self._base_url
        try:
            ids = sorted(m.id for m in client.models.list())
        except openai.NotFoundError:
            ids = None  # no model list at this URL: the one-token request decides
        except openai.APITimeoutError:
            return ChatConnectionError(
                f"{where} did not answer within {CHECK_TIMEOUT_S:g} s when asked for its "
                "models. Check that the server runs and is not overloaded, and that the base "
                "URL is right (OPENAI_BASE_URL, or the spec 'openai:MODEL@BASE_URL')."
            )
        except openai.OpenAIError as err:
            self._scrub(err)
            return self._check_error(err, None)
        if ids is not None and self._model in ids:
            return None
        try:
            client.chat.completions.create(
                model=self._model,
                messages=[{"role": "user", "content": "Hi"}],
                **{self._token_param: 1},  # type: ignore[arg-type]
            )
        except (openai.NotFoundError, openai.AuthenticationError, openai.PermissionDeniedError,
                openai.APIConnectionError) as err:
            self._scrub(err)
            if isinstance(err, openai.APITimeoutError):
                return None  # listed its models but is slow to answer: the trials will see
            return self._check_error(err, ids)
        except (openai.OpenAIError, json.JSONDecodeError) as err:
            # Any other answer (a 400 about a field, a 5xx, a body that is not JSON) comes
            # from a server that took the model name: the trials' own errors say the rest.
            _logger.debug("%s answered the one-token check with %s.", where, type(err).__name__)
        return None

    def _check_error(self, err: openai.OpenAIError, ids: list[str] | None) -> ChatModelError:
        where = self._base_url
        source = "the spec 'openai:MODEL@BASE_URL'"
        if isinstance(err, openai.APIConnectionError):
            cause = _one_line(self._clean(str(err.__cause__ or err)))[:_MAX_QUOTED_CHARS]
            return ChatConnectionError(
                f"Cannot reach {where} ({cause}). Check that the server runs and the base URL "
                f"is right (OPENAI_BASE_URL, or {source}); 'bilevel-optuna serve' serves the "
                "embedded model."
            )
        if not isinstance(err, openai.APIStatusError):
            return ChatModelError(f"The OpenAI client failed talking to {where}: {err}")
        detail = _one_line(f"{err.status_code}: {self._error_text(err)}")
        if isinstance(err, (openai.AuthenticationError, openai.PermissionDeniedError)):
            return ChatAuthenticationError(
                f"{where} refused the API key ({detail}). Set OPENAI_API_KEY to a valid key "
                "for this endpoint (export OPENAI_API_KEY=...), or pass api_key to "
                "OpenAIChatModel.",
                status_code=err.status_code,
            )
        if isinstance(err, openai.NotFoundError):
            if ids:
                listed = ", ".join(ids[:_MAX_LISTED_MODELS])
                if len(ids) > _MAX_LISTED_MODELS:
                    listed += f", ... ({len(ids)} in all)"
                served = f"It serves: {listed}."
            elif ids is None:
                served = (
                    "It has no model list either: check the base URL (it usually ends in /v1)."
                )
            else:
                served = "It lists no models."
            return ChatModelNotFoundError(
                f"{where} does not serve model {self._model!r} ({detail}). {served} Name a "
                f"served model in {source}, or in {MODEL_ENV}.",
                status_code=err.status_code,
            )
        return ChatModelError(
            f"{where} answered an error ({detail}).", status_code=err.status_code
        )

    # --- errors ---------------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "***")
        return redact(text)

    def _scrub(self, err: BaseException) -> None:
        """Take the key out of the client's exception too: it is chained to ours (``from``)."""
        if self._secret and self._secret in str(err):
            err.args = tuple(self._clean(a) if isinstance(a, str) else a for a in err.args)
            if isinstance(getattr(err, "message", None), str):
                err.message = self._clean(err.message)  # type: ignore[attr-defined]

    def _error_text(self, err: openai.APIError) -> str:
        body = err.body
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            text = body["message"]
        elif isinstance(body, str) and body:
            text = body
        else:
            text = err.message
        return self._clean(text)[:_MAX_QUOTED_CHARS]

    def _available_models(self) -> str:
        """One sentence listing the endpoint's models, for a 404's message."""
        client = self._client.with_options(max_retries=0, timeout=_LIST_MODELS_TIMEOUT_S)
        try:
            ids = sorted(m.id for m in client.models.list())
        except openai.NotFoundError:
            return (
                "The endpoint has no model list either: check the base URL (it usually ends in "
                "/v1)."
            )
        except (openai.OpenAIError, ValueError, TypeError, AttributeError):
            return "The endpoint did not list its models."
        if not ids:
            return "The endpoint lists no models."
        listed = ", ".join(ids[:_MAX_LISTED_MODELS])
        if len(ids) > _MAX_LISTED_MODELS:
            listed += f", ... ({len(ids)} in all)"
        return f"It serves: {listed}."

    def _wrap(self, err: openai.OpenAIError) -> ChatModelError:
        where = self._base_url
        retries = f"{self._max_retries} retries"
        if isinstance(err, openai.APITimeoutError):
            return ChatTimeoutError(
                f"No answer from {where} within {self._timeout:g} s (after {retries}). Raise "
                "timeout=..., lower max_tokens, or check that the server is not overloaded."
            )
        if isinstance(err, openai.APIConnectionError):
            cause = self._clean(str(err.__cause__ or err))[:_MAX_QUOTED_CHARS]
            return ChatConnectionError(
                f"Cannot reach {where} ({cause}; after {retries}). Check that the server runs "
                "and the base URL is right (OPENAI_BASE_URL, or the spec "
                "'openai:MODEL@BASE_URL'); 'bilevel-optuna serve' serves the embedded model."
            )
        if not isinstance(err, openai.APIStatusError):
            return ChatModelError(f"The OpenAI client failed talking to {where}: {err}")
        context: dict[str, Any] = {
            "status_code": err.status_code,
            "request_id": err.request_id,
            "raw": self._clean(err.response.text),
        }
        detail = f"{err.status_code}: {self._error_text(err)}"
        if isinstance(err, (openai.AuthenticationError, openai.PermissionDeniedError)):
            return ChatAuthenticationError(
                f"{where} refused the API key ({detail}). Set OPENAI_API_KEY to a valid key "
                "for this endpoint (export OPENAI_API_KEY=...), or pass api_key to "
                "OpenAIChatModel.",
                **context,
            )
        if isinstance(err, openai.NotFoundError):
            return ChatModelNotFoundError(
                f"{where} does not serve model {self._model!r} ({detail}). "
                f"{self._available_models()} Name the model in the spec 'openai:MODEL' or in "
                f"{MODEL_ENV}.",
                **context,
            )
        if isinstance(err, openai.RateLimitError):
            return ChatRateLimitError(
                f"{where} is still rate-limiting ({detail}) after {retries}. Run fewer workers "
                "at once, raise max_retries, or check the account's quota.",
                **context,
            )
        if isinstance(err, openai.InternalServerError):
            return ChatServerError(
                f"{where} kept failing ({detail}) after {retries}. Check the server's log, "
                "or try again later.",
                **context,
            )
        if isinstance(err, _FORMAT_REFUSED):
            return ChatModelError(
                f"{where} rejected the request ({detail}). If the prompt is too long, shorten "
                "the history; if the response format is refused, use response_format='auto'.",
                **context,
            )
        return ChatModelError(f"{where} answered an error ({detail}).", **context)
