"""The values of the lock-table backend's ``OPTIONS`` (also URL query parameters, so strings
are read too)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The backend's own options; with a URL, other keys go to the database driver.
KNOWN_OPTIONS = frozenset({"DATABASE", "NOTIFY", "POLL_MIN", "POLL_MAX", "NOTIFY_POLL", "DEFAULT_TTL", "CREATE_TABLE"})


def as_flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    raise TypeError(f"OPTIONS[{what!r}] must be a bool, not {value!r}")


def as_seconds(value: Any, what: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"OPTIONS[{what!r}] must be a number of seconds, not {value!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"OPTIONS[{what!r}] must be positive and finite, not {value!r}")
    return seconds


def driver_values(options: Mapping[str, Any]) -> dict[str, Any]:
    """URL query values are strings; drivers want numbers where they look like numbers."""
    values: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, str) and value.isdigit():
            values[key] = int(value)
        else:
            values[key] = value
    return values
