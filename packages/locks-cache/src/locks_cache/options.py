"""Parsing of the OPTIONS (and URL query parameters) the cache backends share."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def as_bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ImproperlyConfigured(f"{what} must be True or False, not {value!r}")


def as_seconds(value: Any, what: str, *, allow_none: bool = False) -> float | None:
    """A positive, finite number of seconds (a string from a URL is accepted)."""
    if value is None and allow_none:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ImproperlyConfigured(f"{what} must be a number of seconds, not {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ImproperlyConfigured(f"{what} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ImproperlyConfigured(f"{what} must be a positive, finite number of seconds, not {value!r}")
    return float(value)


def as_str(value: Any, what: str, *, max_length: int = 64) -> str:
    if not isinstance(value, str):
        raise ImproperlyConfigured(f"{what} must be a str, not {type(value).__name__}")
    if len(value.encode()) > max_length:
        raise ImproperlyConfigured(f"{what} must be at most {max_length} bytes")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise ImproperlyConfigured(f"{what} must not contain whitespace or control characters: {value!r}")
    return value


def lift_query(url: str, names: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """Take the lock options (``names``: query name → OPTIONS key) out of a URL's query; the
    rest stays in the URL for the driver. Returns the URL left and the options found."""
    parts = urlsplit(url)
    kept: list[tuple[str, str]] = []
    found: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        option = names.get(key.lower())
        if option is None:
            kept.append((key, value))
        else:
            found[option] = value
    return urlunsplit(parts._replace(query=urlencode(kept))), found
