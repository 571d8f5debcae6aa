"""When a failing endpoint is given a rest: the sampler's circuit breaker.

Under ``on_model_error="fallback"`` a trial whose model call fails after the client's retries
takes its parameters from the base sampler. An endpoint that has gone away fails the same way on
the next trial, and each failure can cost the client's whole retry budget (timeouts included),
so asking on every trial turns a dead endpoint into minutes per trial. After
:data:`FAILURES_TO_OPEN` endpoint failures in a row the breaker opens: the model is not asked
for :data:`FIRST_REST_S` seconds, doubled after each failed retry up to :data:`LONGEST_REST_S`.
The first trial after the rest asks again; one answer closes the breaker.

Samplers whose model specs name the same endpoint share one breaker in a process
(:func:`breaker_for`; ``openai:a@http://h/v1`` and ``openai:b@http://H/v1/`` name one), as they
share the endpoint's check: the inner studies of a bilevel run learn from each other
that the endpoint is down, instead of each spending three trials to find out.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from bilevel_optuna.chat._spec import CHAT_MODEL_ENV
from bilevel_optuna.chat._spec import DEFAULT_SPEC
from bilevel_optuna.chat._spec import endpoint_key

#: Endpoint failures in a row (after the client's own retries) that open the breaker.
FAILURES_TO_OPEN = 3
#: The first rest, in seconds; each failed retry after a rest doubles it.
FIRST_REST_S = 30.0
#: The longest rest, in seconds.
LONGEST_REST_S = 600.0


class EndpointBreaker:
    """Counts endpoint failures in a row and says while the model should not be asked.

    Thread-safe: the trials of ``optimize(n_jobs=k)`` share one sampler.

    Args:
        clock: Seconds, monotonic; tests pass their own.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._rest_s = 0.0
        self._until = 0.0
        self._last_error = ""

    def resting(self) -> str | None:
        """Why the model is not asked now, or ``None`` when it may be asked."""
        with self._lock:
            left = self._until - self._clock()
            if left <= 0:
                return None
            return (
                f"the endpoint failed {self._failures} times in a row (last: "
                f"{self._last_error[:200]}); the model is asked again in {left:.0f} s"
            )

    def failed(self, error: str) -> bool:
        """Count one endpoint failure; ``True`` when it opens (or reopens) the breaker."""
        with self._lock:
            self._failures += 1
            self._last_error = error
            if self._failures < FAILURES_TO_OPEN:
                return False
            self._rest_s = (
                FIRST_REST_S if self._rest_s == 0 else min(2 * self._rest_s, LONGEST_REST_S)
            )
            self._until = self._clock() + self._rest_s
            return True

    def answered(self) -> None:
        """The endpoint answered: the count and the rest start over."""
        with self._lock:
            self._failures = 0
            self._rest_s = 0.0
            self._until = 0.0

    @property
    def rest_s(self) -> float:
        """The current rest in seconds (0 while the breaker is closed)."""
        with self._lock:
            return self._rest_s


_SHARED: dict[str, EndpointBreaker] = {}
_SHARED_LOCK = threading.Lock()


def breaker_for(spec: object) -> EndpointBreaker:
    """The breaker for a sampler's ``model`` argument: one per endpoint in the process
    (:func:`~bilevel_optuna.chat._spec.endpoint_key`; ``None`` is the spec the environment
    names), a new one for a model object."""
    if spec is None:
        spec = os.environ.get(CHAT_MODEL_ENV) or DEFAULT_SPEC
    if not isinstance(spec, str):
        return EndpointBreaker()
    with _SHARED_LOCK:
        return _SHARED.setdefault(endpoint_key(spec), EndpointBreaker())
