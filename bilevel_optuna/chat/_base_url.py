"""Where an OpenAI-compatible backend's requests go, in one place for the backend and the specs.

The spec parser (``chat/_spec.py``) must name an endpoint without importing the ``openai``
client, and the backend (``chat/_openai.py``) must resolve the same URL, so the rule lives here.
"""

from __future__ import annotations

import os

#: Where requests go when neither the caller nor ``OPENAI_BASE_URL`` names a URL.
DEFAULT_BASE_URL = "https://api.openai.com/v1"


def resolve_base_url(base_url: str | None) -> str:
    """The base URL requests go to: the one given, else ``OPENAI_BASE_URL``, else OpenAI's."""
    return (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).strip().rstrip("/")
