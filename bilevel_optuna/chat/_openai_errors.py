"""The ``openai`` client's final errors, turned into ours: one line naming the URL, the cause
and the fix, with the API key kept out of every message, log and chained exception.

The client has retried what may be transient by the time one of these is made (see
``chat/_openai.py``); what is left is the error's kind: the endpoint unreachable or slow, the
key refused, the model not served, rate-limited, failing, or the request refused.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any
from typing import Callable

import openai

from bilevel_optuna._logging import redact
from bilevel_optuna.chat._openai_format import FORMAT_REFUSED
from bilevel_optuna.exceptions import ChatAuthenticationError
from bilevel_optuna.exceptions import ChatConnectionError
from bilevel_optuna.exceptions import ChatModelError
from bilevel_optuna.exceptions import ChatModelNotFoundError
from bilevel_optuna.exceptions import ChatRateLimitError
from bilevel_optuna.exceptions import ChatServerError
from bilevel_optuna.exceptions import ChatTimeoutError

#: Environment variable holding the model name (the base URL and key use the client's own).
MODEL_ENV = "BILEVEL_OPTUNA_MODEL"
# How long listing an endpoint's models may take when explaining a 404.
_LIST_MODELS_TIMEOUT_S = 10.0
_MAX_LISTED_MODELS = 30
MAX_QUOTED_CHARS = 300


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _listed(ids: list[str]) -> str:
    listed = ", ".join(ids[:_MAX_LISTED_MODELS])
    if len(ids) > _MAX_LISTED_MODELS:
        listed += f", ... ({len(ids)} in all)"
    return listed


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """What an error message names: the base URL as shown (no password), the model, the retry
    policy; and the key, which no message may show."""

    where: str
    model: str
    secret: str | None
    timeout: float
    max_retries: int

    def clean(self, text: str) -> str:
        """``text`` with the key and anything that looks like a secret taken out."""
        if self.secret:
            text = text.replace(self.secret, "***")
        return redact(text)

    def scrub(self, err: BaseException) -> None:
        """Take the key out of the client's exception too: it is chained to ours (``from``)."""
        if self.secret and self.secret in str(err):
            err.args = tuple(self.clean(a) if isinstance(a, str) else a for a in err.args)
            if isinstance(getattr(err, "message", None), str):
                err.message = self.clean(err.message)  # type: ignore[attr-defined]

    def error_text(self, err: openai.APIError) -> str:
        """The endpoint's own words for the error, cleaned and cut to a quotable length."""
        body = err.body
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            text = body["message"]
        elif isinstance(body, str) and body:
            text = body
        else:
            text = err.message
        return self.clean(text)[:MAX_QUOTED_CHARS]


def available_models(client: openai.OpenAI) -> str:
    """One sentence listing the endpoint's models, for a 404's message."""
    client = client.with_options(max_retries=0, timeout=_LIST_MODELS_TIMEOUT_S)
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
    return f"It serves: {_listed(ids)}."


def not_json(endpoint: Endpoint, err: json.JSONDecodeError) -> ChatServerError:
    """The error for an answer whose body is not JSON (the base URL is likely wrong)."""
    body = endpoint.clean(err.doc)
    return ChatServerError(
        f"{endpoint.where} answered with a body that is not JSON ({err.msg}): "
        f"{body[:MAX_QUOTED_CHARS]!r}. Check that the base URL points at an "
        "OpenAI-compatible API (it usually ends in /v1).",
        raw=body,
    )


def wrap(endpoint: Endpoint, err: openai.OpenAIError, served: Callable[[], str]) -> ChatModelError:
    """Our error for a request's final failure; ``served`` lists the models, for a 404."""
    where = endpoint.where
    retries = f"{endpoint.max_retries} retries"
    if isinstance(err, openai.APITimeoutError):
        return ChatTimeoutError(
            f"No answer from {where} within {endpoint.timeout:g} s (after {retries}). Raise "
            "timeout=..., lower max_tokens, or check that the server is not overloaded."
        )
    if isinstance(err, openai.APIConnectionError):
        cause = endpoint.clean(str(err.__cause__ or err))[:MAX_QUOTED_CHARS]
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
        "raw": endpoint.clean(err.response.text),
    }
    detail = f"{err.status_code}: {endpoint.error_text(err)}"
    if isinstance(err, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return ChatAuthenticationError(
            f"{where} refused the API key ({detail}). Set OPENAI_API_KEY to a valid key "
            "for this endpoint (export OPENAI_API_KEY=...), or pass api_key to "
            "OpenAIChatModel.",
            **context,
        )
    if isinstance(err, openai.NotFoundError):
        return ChatModelNotFoundError(
            f"{where} does not serve model {endpoint.model!r} ({detail}). "
            f"{served()} Name the model in the spec 'openai:MODEL' or in "
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
    if isinstance(err, FORMAT_REFUSED):
        return ChatModelError(
            f"{where} rejected the request ({detail}). If the prompt is too long, shorten "
            "the history; if the response format is refused, use response_format='auto'.",
            **context,
        )
    return ChatModelError(f"{where} answered an error ({detail}).", **context)


def check_error(
    endpoint: Endpoint, err: openai.OpenAIError, ids: list[str] | None
) -> ChatModelError:
    """Our error for the check before the first trial; ``ids`` are the models listed (``None``:
    no list at this URL)."""
    where = endpoint.where
    source = "the spec 'openai:MODEL@BASE_URL'"
    if isinstance(err, openai.APIConnectionError):
        cause = _one_line(endpoint.clean(str(err.__cause__ or err)))[:MAX_QUOTED_CHARS]
        return ChatConnectionError(
            f"Cannot reach {where} ({cause}). Check that the server runs and the base URL "
            f"is right (OPENAI_BASE_URL, or {source}); 'bilevel-optuna serve' serves the "
            "embedded model."
        )
    if not isinstance(err, openai.APIStatusError):
        return ChatModelError(f"The OpenAI client failed talking to {where}: {err}")
    detail = _one_line(f"{err.status_code}: {endpoint.error_text(err)}")
    if isinstance(err, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return ChatAuthenticationError(
            f"{where} refused the API key ({detail}). Set OPENAI_API_KEY to a valid key "
            "for this endpoint (export OPENAI_API_KEY=...), or pass api_key to "
            "OpenAIChatModel.",
            status_code=err.status_code,
        )
    if isinstance(err, openai.NotFoundError):
        if ids:
            served = f"It serves: {_listed(ids)}."
        elif ids is None:
            served = "It has no model list either: check the base URL (it usually ends in /v1)."
        else:
            served = "It lists no models."
        return ChatModelNotFoundError(
            f"{where} does not serve model {endpoint.model!r} ({detail}). {served} Name a "
            f"served model in {source}, or in {MODEL_ENV}.",
            status_code=err.status_code,
        )
    return ChatModelError(f"{where} answered an error ({detail}).", status_code=err.status_code)
