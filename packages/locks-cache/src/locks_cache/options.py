"""The OPTIONS the cache backends share, declared once (:class:`~locks.backends.options.Option`),
and the split of a ``LOCATION``'s query into lock options and the driver's parameters."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured

from locks.backends.options import Option, Seconds


def positive(value: float) -> float:
    """The check of a number of seconds that must be above zero."""
    if value <= 0:
        raise ValueError(f"must be a positive number of seconds, not {value!r}")
    return value


def key_text(max_length: int) -> Any:
    """The check of a key prefix: at most ``max_length`` bytes, no whitespace nor control character."""

    def check(value: str) -> str:
        if len(value.encode()) > max_length:
            raise ValueError(f"must be at most {max_length} bytes")
        if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError(f"must not contain whitespace or control characters: {value!r}")
        return value

    return check


def namespace_option(max_length: int, doc: str = "prefix of every key") -> Option:
    return Option("NAMESPACE", str, "locks:", doc, check=key_text(max_length))


#: The lease options: ``TTL`` is another spelling of ``DEFAULT_TTL``.
LEASE_OPTIONS: tuple[Option, ...] = (
    Option(
        "DEFAULT_TTL",
        Seconds,
        None,
        "lease (seconds) of a lock that gives no `ttl`, renewed while held",
        check=positive,
        shown_default="10",
    ),
    Option("TTL", Seconds, None, "another spelling of `DEFAULT_TTL`", check=positive),
)


def default_ttl(settings: Mapping[str, Any], fallback: float | None) -> float | None:
    """The lease of a lock that gives none, from :data:`LEASE_OPTIONS`' values."""
    value = settings["DEFAULT_TTL"]
    if value is None:
        value = settings["TTL"]
    return fallback if value is None else float(value)


def lift_query(url: str, names: Collection[str]) -> tuple[str, dict[str, str]]:
    """Take the lock options (``names``, lower-case) out of a URL's query; the rest stays in the
    URL for the driver. Returns the URL left and the options found (keys as given)."""
    parts = urlsplit(url)
    kept: list[tuple[str, str]] = []
    found: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.lower() in names:
            found[key] = value
        else:
            kept.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), found


def with_url_options(options: Mapping[str, Any] | None, found: Mapping[str, str]) -> dict[str, Any]:
    """``options`` and the lock options ``found`` in the URL's query: ``options`` win, whatever
    the spelling of their keys."""
    given = dict(options or {})
    spelled = {str(key).upper() for key in given}
    for key, value in found.items():
        if key.upper() not in spelled:
            given[key] = value
            spelled.add(key.upper())
    return given


def split_location(
    location: Any, default: str, names: Collection[str], options: Mapping[str, Any] | None
) -> tuple[str, dict[str, Any], dict[str, str]]:
    """A ``LOCATION`` URL (``default`` when not given) without the lock options of its query
    (``names``, lower-case); the OPTIONS with those (``options`` win); the query parameters left
    (the driver's)."""
    url = location or default
    if not isinstance(url, str):
        raise ImproperlyConfigured(f"LOCATION must be a URL such as {default!r}, not {type(url).__name__}")
    url, found = lift_query(url, names)
    return url, with_url_options(options, found), dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
