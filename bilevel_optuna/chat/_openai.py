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

import dataclasses
import json
import os
import threading
import time
import urllib.parse
from typing import Any

import openai

from bilevel_optuna._logging import get_logger
from bilevel_optuna._urls import hide_password as _display_url
from bilevel_optuna._urls import is_loopback as _is_loopback
from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.chat._base import ChatReply
from bilevel_optuna.chat._base import ChatRequest
from bilevel_optuna.chat._base_url import resolve_base_url
from bilevel_optuna.chat._openai_errors import MAX_QUOTED_CHARS
from bilevel_optuna.chat._openai_errors import MODEL_ENV
from bilevel_optuna.chat._openai_errors import Endpoint
from bilevel_optuna.chat._openai_errors import available_models
from bilevel_optuna.chat._openai_errors import check_error
from bilevel_optuna.chat._openai_errors import not_json
from bilevel_optuna.chat._openai_errors import wrap
from bilevel_optuna.chat._openai_format import FALLBACK
from bilevel_optuna.chat._openai_format import FORMAT_REFUSED
from bilevel_optuna.chat._openai_format import RESPONSE_FORMATS
from bilevel_optuna.chat._openai_format import TOKEN_PARAMS
from bilevel_optuna.chat._openai_format import ResponseFormat
from bilevel_optuna.chat._openai_format import rejected_param
from bilevel_optuna.chat._openai_format import response_format as _response_format
from bilevel_optuna.chat._openai_format import strict_qualifies
from bilevel_optuna.chat._openai_format import with_schema_instruction
from bilevel_optuna.chat._validation import Validate
from bilevel_optuna.chat._validation import _check_validate_mode
from bilevel_optuna.exceptions import ChatAnswerError
from bilevel_optuna.exceptions import ChatConnectionError
from bilevel_optuna.exceptions import ChatModelError
from bilevel_optuna.exceptions import ChatServerError
from bilevel_optuna.exceptions import ConfigurationError

# Names other modules and tests read from here.
__all__ = [
    "CHECK_TIMEOUT_S",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT_S",
    "MODEL_ENV",
    "OpenAIChatModel",
    "RESPONSE_FORMATS",
    "ResponseFormat",
    "strict_qualifies",
]

_logger = get_logger(__name__)

#: Seconds one attempt may take. Generous: a CPU-served model can take tens of seconds.
DEFAULT_TIMEOUT_S = 60.0
#: Retries after the first attempt, done by the ``openai`` client with jittered backoff.
DEFAULT_MAX_RETRIES = 3
# Sent as the key to loopback servers (llama.cpp, vLLM, Ollama, `bilevel-optuna serve`), which
# ignore it; the client refuses to start without one.
_LOOPBACK_KEY = "no-key-needed-on-loopback"
#: Seconds the check before the first trial (:meth:`OpenAIChatModel.check`) may take a request.
CHECK_TIMEOUT_S = 5.0
# Outcomes of the check, once per process per (base URL, model, key): None where it passed,
# else the error's class and message (raised anew each time, so no traceback piles up).
_CHECKED: dict[tuple[str, str, int], tuple[type[ChatModelError], str, int | None] | None] = {}
_CHECKED_LOCK = threading.Lock()


@dataclasses.dataclass
class _Tries:
    """What one request sends on its next try, and what the endpoint refused so far."""

    fmt: str
    token_param: str
    strict: bool
    strict_dropped: bool = False
    refused: list[str] = dataclasses.field(default_factory=list)
    first_error: openai.APIStatusError | None = None


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
        base_url = resolve_base_url(base_url)
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
        self._token_param = TOKEN_PARAMS[0]
        # Schemas (canonical JSON) for which the endpoint refused strict mode.
        self._strict_refused: set[str] = set()
        self._client = openai.OpenAI(
            api_key=api_key, base_url=base_url, timeout=self._timeout, max_retries=max_retries
        )
        self._endpoint = Endpoint(
            self._base_url, model, self._secret, self._timeout, self._max_retries
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
        schema_key = json.dumps(request.json_schema, sort_keys=True)
        tries = _Tries(
            fmt=self._format,
            token_param=self._token_param,
            strict=(
                request.json_schema is not None
                and schema_key not in self._strict_refused
                and strict_qualifies(request.json_schema)
            ),
        )
        while True:
            try:
                completion = self._create(
                    request, tries.fmt, token_param=tries.token_param, strict=tries.strict
                )
                break
            except FORMAT_REFUSED as err:
                self._endpoint.scrub(err)
                self._step_down(request, tries, err)
            except openai.OpenAIError as err:
                self._endpoint.scrub(err)
                raise self._wrap(err) from err
            except json.JSONDecodeError as err:
                raise not_json(self._endpoint, err) from err
        reply = self._to_reply(completion, time.perf_counter() - start)
        self._learn(request, reply, tries, schema_key)
        return reply

    def _step_down(self, request: ChatRequest, tries: _Tries, err: openai.APIStatusError) -> None:
        """After a 400/422, change what the next try sends (the token cap's name, strict, the
        format), or raise our error where nothing is left to change."""
        param = rejected_param(
            err.body,
            self._endpoint.error_text(err) + " " + self._endpoint.clean(str(err.message)),
            tries.token_param,
        )
        if param == tries.token_param and tries.token_param != TOKEN_PARAMS[-1]:
            _logger.info(
                "%s refused %r (%s); sending the token cap as %r.",
                self._base_url,
                tries.token_param,
                self._endpoint.error_text(err),
                TOKEN_PARAMS[-1],
            )
            tries.token_param = TOKEN_PARAMS[-1]
            return
        if param is not None and param != "response_format":
            # About another field (temperature, seed, ...): no format would help.
            raise self._wrap(err) from err
        if tries.strict and tries.fmt == "json_schema":
            _logger.info(
                "%s refused strict structured output (%s); trying without strict.",
                self._base_url,
                self._endpoint.error_text(err),
            )
            tries.first_error = tries.first_error or err
            tries.strict, tries.strict_dropped = False, True
            return
        if self._auto and request.json_schema is not None and tries.fmt in FALLBACK:
            tries.first_error = tries.first_error or err
            _logger.info(
                "%s refused the request with response_format %r (%s); trying %r.",
                self._base_url,
                tries.fmt,
                self._endpoint.error_text(err),
                FALLBACK[tries.fmt],
            )
            tries.refused.append(tries.fmt)
            tries.fmt = FALLBACK[tries.fmt]
            return
        first = tries.first_error or err
        raise self._wrap(first) from first

    def _learn(
        self, request: ChatRequest, reply: ChatReply, tries: _Tries, schema_key: str
    ) -> None:
        """Keep what the tries taught about the endpoint for the next requests."""
        token_param = tries.token_param
        if tries.strict_dropped and tries.fmt == "json_schema":
            with self._format_lock:
                self._strict_refused.add(schema_key)
        if (
            token_param == TOKEN_PARAMS[0]
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
                TOKEN_PARAMS[-1],
            )
            token_param = TOKEN_PARAMS[-1]
        if token_param != self._token_param:
            with self._format_lock:
                self._token_param = token_param
        if tries.refused:
            self._remember_refused(tries.refused)

    def _remember_refused(self, refused: list[str]) -> None:
        """Step the format down for good only where the endpoint refuses the format itself.

        A 400 may be about this request's schema rather than the format (llama.cpp cannot
        express every schema), so each refused format is tried once more with a trivial schema.
        """
        fmt = self._format
        for candidate in refused:
            if self._format_supported(candidate):
                break
            fmt = FALLBACK[candidate]
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
        except FORMAT_REFUSED:
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
                messages = with_schema_instruction(messages, request.json_schema)
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
                f"{raw[:MAX_QUOTED_CHARS]!r}. Check that the base URL points at an "
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
            self._endpoint.scrub(err)
            return check_error(self._endpoint, err, None)
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
            self._endpoint.scrub(err)
            if isinstance(err, openai.APITimeoutError):
                return None  # listed its models but is slow to answer: the trials will see
            return check_error(self._endpoint, err, ids)
        except (openai.OpenAIError, json.JSONDecodeError) as err:
            # Any other answer (a 400 about a field, a 5xx, a body that is not JSON) comes
            # from a server that took the model name: the trials' own errors say the rest.
            _logger.debug("%s answered the one-token check with %s.", where, type(err).__name__)
        return None

    # --- errors ---------------------------------------------------------------------------

    def _wrap(self, err: openai.OpenAIError) -> ChatModelError:
        return wrap(self._endpoint, err, lambda: available_models(self._client))
