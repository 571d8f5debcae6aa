"""Argument checks shared by the constructors, so every one words its error the same way."""

from __future__ import annotations

import numbers
from typing import Any


def check_int(name: str, value: Any, *, minimum: int = 0, allow_none: bool = False) -> int | None:
    """Return ``value`` as an ``int`` if it is an integer ``>= minimum``; raise otherwise.

    ``bool`` is refused although Python counts it as an integer: ``tenure=True`` is a mistake,
    not a tenure of one. ``allow_none`` lets ``None`` through unchanged (an optional setting).
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = {0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}"
        )
        if allow_none:
            what += " or None"
        raise ValueError(f"{name} must be {what} but got {value!r}.")
    return int(value)
