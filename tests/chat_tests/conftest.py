"""Fixtures of the chat tests: scripted endpoints, and the embedded model loaded once."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator

import pytest
from chat_tests._scripted import ScriptedEndpoint
from chat_tests._scripted import Step


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedEndpoint]]:
    """A factory: ``scripted([steps...], models=[...])`` starts an endpoint, closed after."""
    endpoints: list[ScriptedEndpoint] = []

    def start(steps: list[Step], *, models: list[str] | Step | None = None) -> ScriptedEndpoint:
        endpoint = ScriptedEndpoint(steps, models=models)
        endpoints.append(endpoint)
        return endpoint

    yield start
    for endpoint in endpoints:
        endpoint.close()
