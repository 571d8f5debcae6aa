"""Transient database errors (deadlocks, serialization failures) and retrying on them."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any
from typing import TypeVar

from bilevel_optuna._logging import get_logger

_logger = get_logger(__name__)
T = TypeVar("T")

_CODES = ("1213", "1205", "40001", "40P01", "deadlock", "could not serialize")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a deadlock or serialization failure, safe to retry."""
    seen = exc
    while seen is not None:
        text = str(getattr(seen, "orig", seen))
        if any(code in text for code in _CODES):
            return True
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    return False


def retry_transient(
    fn: Callable[..., T], *args: Any, attempts: int = 5, base_delay: float = 0.05, **kwargs: Any
) -> T:
    """Call ``fn``; on a transient error, wait (jittered, doubling) and call it again."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if attempt == attempts - 1 or not is_transient(err):
                raise
            delay = base_delay * 2**attempt * (0.5 + random.random())
            _logger.info("Transient database error, retry %d in %.2f s: %s", attempt + 1, delay, err)
            time.sleep(delay)
    raise AssertionError("unreachable")
