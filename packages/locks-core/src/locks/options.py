"""Validation of the options every lock takes, done once here before any server is touched."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

OnBusy = Literal["raise", "skip"]
Seconds = float | int | timedelta

ON_BUSY_CHOICES = ("raise", "skip")


def seconds(value: Any, what: str, *, allow_none: bool = True, allow_zero: bool = True) -> float | None:
    """Turn a float, int or timedelta into seconds, refusing anything surprising.

    Raises:
        TypeError: for strings, bools and other types.
        ValueError: for negative, NaN or infinite values (and zero when not allowed).
    """
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{what} must be a number of seconds or a timedelta, not None")
    if isinstance(value, bool) or not isinstance(value, (int, float, timedelta)):
        raise TypeError(f"{what} must be a number of seconds or a timedelta, not {type(value).__name__}")
    result = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if math.isnan(result) or math.isinf(result):
        raise ValueError(f"{what} must be a finite number of seconds, not {result}")
    if result < 0:
        raise ValueError(f"{what} must not be negative, got {result}")
    if result == 0 and not allow_zero:
        raise ValueError(f"{what} must be greater than zero")
    return result


def timeout(value: Any) -> float | None:
    """``None`` waits forever, ``0`` tries once, a positive number waits that many seconds."""
    return seconds(value, "timeout")


def ttl(value: Any) -> float | None:
    return seconds(value, "ttl", allow_zero=False)


def on_busy(value: Any) -> OnBusy:
    if value not in ON_BUSY_CHOICES:
        raise ValueError(f"on_busy must be one of {ON_BUSY_CHOICES!r}, not {value!r}")
    return value  # type: ignore[no-any-return]


def flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be True or False, not {type(value).__name__}")
    return value


def callback(value: Any, what: str) -> Callable[..., Any] | None:
    if value is not None and not callable(value):
        raise TypeError(f"{what} must be callable or None, not {type(value).__name__}")
    return value  # type: ignore[no-any-return]
