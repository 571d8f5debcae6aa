"""Turn a short spec string ("local", "openai:MODEL@URL", ...) into a chat model."""

from __future__ import annotations

import os
import re
import urllib.parse

from bilevel_optuna.chat._base import ChatModel
from bilevel_optuna.chat._base_url import resolve_base_url
from bilevel_optuna.chat._local import LocalChatModel
from bilevel_optuna.chat._replay import ReplayChatModel
from bilevel_optuna.chat._uniform import UniformChatModel
from bilevel_optuna.exceptions import ConfigurationError

#: Environment variable holding the spec used when none is given.
CHAT_MODEL_ENV = "BILEVEL_OPTUNA_CHAT_MODEL"
DEFAULT_SPEC = "local"

SPEC_FORMS = (
    "'local' (the embedded SmolLM2-135M-Instruct)",
    "'local:/path/to/model.gguf'",
    "'openai' or 'openai:MODEL' (base URL from OPENAI_BASE_URL, model from BILEVEL_OPTUNA_MODEL)",
    "'openai:MODEL@BASE_URL' (e.g. 'openai:smollm2@http://127.0.0.1:8000/v1')",
    "'replay:STORAGE_URL#STUDY' (answers recorded in a study)",
    "'uniform' (the null model: uniformly random answers valid under the schema, no tokens)",
)

# "openai:MODEL@http(s)://...": the URL starts at the first "@http://" or "@https://".
_OPENAI = re.compile(r"^openai(?::(?P<model>.*?))?(?:@(?P<base_url>https?://.+))?$", re.DOTALL)


def endpoint_key(spec: str) -> str:
    """Where a spec string's requests go, as one string, so two spellings of one endpoint match.

    An ``openai`` spec gives its resolved base URL with the scheme and host in lower case,
    whatever the model name (a server that is down is down for every model it serves); any
    other spec gives itself, stripped.
    """
    text = spec.strip()
    parts = _openai_parts(text)
    if parts is None:
        return text
    url = urllib.parse.urlsplit(resolve_base_url(parts[1]))
    return f"openai@{url.scheme.lower()}://{url.netloc.lower()}{url.path}"


def _openai_parts(text: str) -> tuple[str | None, str | None] | None:
    """``(model, base_url)`` of an ``openai`` spec (each ``None`` where it names none), or
    ``None`` when ``text`` is not one. A "://" left in the model name is a base URL that is not
    http(s): not an ``openai`` spec."""
    match = _OPENAI.match(text)
    if match is None or "://" in (match.group("model") or ""):
        return None
    return match.group("model") or None, match.group("base_url")


def openai_chat_model_class() -> type[ChatModel]:
    """:class:`~bilevel_optuna.chat.OpenAIChatModel`, imported on first use.

    The ``openai`` client takes a second or two to import (pydantic, httpx) and only this
    backend needs it, so ``import bilevel_optuna`` and the embedded model go without it. As
    ``openai`` is a required dependency, this import is listed in the layer test's
    ``LOCAL_IMPORTS_LEFT`` rather than excused as deferring an optional one.
    """
    from bilevel_optuna.chat._openai import OpenAIChatModel

    return OpenAIChatModel


def get_chat_model(spec: str | ChatModel | None = None) -> ChatModel:
    """Return the chat model a spec names.

    Args:
        spec: A :class:`ChatModel` (returned as is), a spec string (one of
            ``SPEC_FORMS``), or ``None`` for ``$BILEVEL_OPTUNA_CHAT_MODEL``, else
            ``"local"``.

    Raises:
        ConfigurationError: The spec matches no form, or the backend it names is misconfigured.

    Example:

        .. code-block:: python

            model = get_chat_model("openai:deepseek-chat@https://api.deepseek.com")
            model = get_chat_model()  # the embedded model unless the environment says otherwise
    """
    if isinstance(spec, ChatModel):
        return spec
    if spec is None:
        spec = os.environ.get(CHAT_MODEL_ENV) or DEFAULT_SPEC
    if not isinstance(spec, str):
        raise ConfigurationError(
            f"A chat model spec must be a string or a ChatModel but got {type(spec).__name__}."
        )
    text = spec.strip()
    kind, _, rest = text.partition(":")
    if kind == "local":
        return LocalChatModel(model_path=rest or None)
    parts = _openai_parts(text)
    if parts is not None:
        return openai_chat_model_class()(model=parts[0], base_url=parts[1])
    if text == "uniform":
        return UniformChatModel()
    if kind == "replay":
        storage, sep, study = rest.rpartition("#")
        if sep and storage and study:
                return ReplayChatModel.from_storage(storage, study)
    raise ConfigurationError(
        f"Unknown chat model spec {spec!r}. Valid forms: {'; '.join(SPEC_FORMS)}."
    )
