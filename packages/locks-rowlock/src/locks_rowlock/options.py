"""The lock-table backend's ``OPTIONS``, declared once (:data:`ROWLOCK_OPTIONS`), and the
database drivers' own parameters that a URL may pass through (:func:`driver_keywords`)."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Mapping
from typing import Any

from locks.backends import DEFAULT_LEASE, Option, Seconds

__all__ = ["ROWLOCK_OPTIONS", "as_seconds", "driver_keywords", "driver_values"]

#: The backend's own options (besides ``KEY_PREFIX`` and ``WATCHDOG``).
ROWLOCK_OPTIONS: tuple[Option, ...] = (
    Option(
        "DATABASE",
        str,
        None,
        "the `DATABASES` alias whose database holds the table, when there is no `LOCATION`",
        shown_default='"default"',
    ),
    Option(
        "DEFAULT_TTL",
        Seconds,
        DEFAULT_LEASE,
        "lease of a lock that gives no `ttl`, renewed while held",
        minimum=0.001,
    ),
    Option(
        "NOTIFY",
        bool,
        True,
        "PostgreSQL: wake waiters with `LISTEN/NOTIFY` (one listening connection per process, opened "
        "when a first wait begins; it hears every release of the database)",
    ),
    Option(
        "NOTIFY_POLL",
        Seconds,
        0.25,
        "with notifications, the longest a waiter sleeps before looking again",
        minimum=0.001,
    ),
    Option("POLL_MIN", Seconds, 0.001, "the shortest pause of the polling backoff (with jitter)", minimum=0.0001),
    Option("POLL_MAX", Seconds, 0.025, "the longest pause of the polling backoff", minimum=0.0001),
    Option(
        "CREATE_TABLE",
        bool,
        None,
        "create the table when missing instead of relying on `migrate`; not set: true for a URL, "
        "false for a `DATABASES` alias",
    ),
)

#: Django's own keys in a ``DATABASES`` entry's ``OPTIONS``, besides the drivers' parameters.
_DJANGO_KEYS = frozenset({"isolation_level", "pool", "server_side_binding", "assume_role", "transaction_mode"})
#: ``sqlite3.connect``'s parameters (a builtin without a signature on some Pythons).
_SQLITE_KEYS = frozenset(
    {"timeout", "detect_types", "check_same_thread", "cached_statements", "uri", "init_command", "autocommit"}
)


@functools.cache
def driver_keywords() -> frozenset[str]:
    """The parameters a ``rowlock+<vendor>://`` URL may pass to its driver: libpq's (psycopg's
    list), mysqlclient's (its documented keywords) and ``sqlite3.connect``'s, those installed."""
    keys = set(_DJANGO_KEYS | _SQLITE_KEYS)
    try:
        import psycopg

        keys.update(option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults())
    except ImportError:
        pass
    try:
        import MySQLdb.connections  # type: ignore[import-untyped,unused-ignore]

        documented = inspect.getdoc(MySQLdb.connections.Connection.__init__) or ""
        keys.update(re.findall(r":param \w+ (\w+):", documented))
        keys.update({"read_timeout", "write_timeout"})  # _mysql.connect's, not documented above
    except ImportError:
        pass
    return frozenset(keys)


def as_seconds(value: Any, what: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a number of seconds, not {value!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{what} must be positive and finite, not {value!r}")
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
