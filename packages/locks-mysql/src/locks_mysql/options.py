"""The MySQL lock backend's ``LOCATION`` and ``OPTIONS``, read once when the backend is built.

Upper-case keys are the backend's own options (``DATABASE``, and ``KEY_PREFIX``/``WATCHDOG``
taken by the base class); lower-case ones are mysqlclient arguments, and ``wait_timeout``
(``SET SESSION``) and ``max_idle``. Nothing here touches the server.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from locks_mysql import connection as mysql

#: mysqlclient arguments that OPTIONS may pass through (URL query parameters included).
PASS_THROUGH = frozenset(
    {"unix_socket", "charset", "read_default_file", "read_default_group", "ssl", "ssl_mode", "init_command"}
)
INT_OPTIONS = frozenset({"connect_timeout", "read_timeout", "write_timeout", "wait_timeout"})


@dataclass(frozen=True)
class MySQLOptions:
    """Where to connect and how: ``url_params`` (from ``LOCATION``) or ``database_alias``."""

    url_params: dict[str, Any] | None
    database_alias: str | None
    max_idle: int
    #: mysqlclient arguments, timeouts rounded up to whole seconds.
    extra: dict[str, Any]
    #: Not a mysqlclient argument: the session's ``wait_timeout``, set once per new connection.
    session_wait_timeout: int | None


def _database_option(opts: dict[str, Any]) -> Any:
    # The lower-case spelling was documented before the options of every backend were spelled
    # alike: still taken, with a warning.
    if "database" in opts:
        warnings.warn(
            "OPTIONS['database'] of the MySQL lock backend is spelled OPTIONS['DATABASE'] now",
            DeprecationWarning,
            stacklevel=4,  # the code that built the backend
        )
        old = opts.pop("database")
        return opts.pop("DATABASE", old)
    return opts.pop("DATABASE", None)


def parse_options(location: str | None, options: Mapping[str, Any]) -> MySQLOptions:
    """Checks ``LOCATION`` and ``OPTIONS`` (what the base class left of them)."""
    opts = dict(options)
    database = _database_option(opts)
    url_params: dict[str, Any] | None = None
    if location is not None:
        if not isinstance(location, str):
            raise ImproperlyConfigured("the MySQL lock backend's LOCATION must be a mysql:// URL")
        if database is not None:
            raise ImproperlyConfigured("give the MySQL lock backend a LOCATION URL or OPTIONS['DATABASE'], not both")
        url_params = mysql.params_from_url(location)
    else:
        if database is None:
            database = "default"
        if not isinstance(database, str):
            raise ImproperlyConfigured("OPTIONS['DATABASE'] must be a DATABASES alias (str)")
        from django.conf import settings

        # Caught here (manage.py check builds every backend); the server is not touched.
        if settings.configured and database not in settings.DATABASES:
            raise ImproperlyConfigured(f"OPTIONS['DATABASE'] = {database!r} is not in DATABASES")
    extra: dict[str, Any] = {}
    max_idle = opts.pop("max_idle", 8)
    for name in list(opts):
        value = opts.pop(name)
        if name in INT_OPTIONS:
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ImproperlyConfigured(f"OPTIONS[{name!r}] must be a number of seconds, not {value!r}") from None
            if not number > 0 or math.isinf(number):
                raise ImproperlyConfigured(f"OPTIONS[{name!r}] must be positive, not {value!r}")
            extra[name] = max(1, math.ceil(number))
        elif name in PASS_THROUGH:
            extra[name] = value
        else:
            raise ImproperlyConfigured(
                f"unknown OPTIONS for the MySQL lock backend: {name!r} "
                f"(known: DATABASE, max_idle, {', '.join(sorted(INT_OPTIONS | PASS_THROUGH))})"
            )
    try:
        max_idle = int(max_idle)
    except (TypeError, ValueError):
        raise ImproperlyConfigured(f"OPTIONS['max_idle'] must be an int, not {max_idle!r}") from None
    if max_idle < 0:
        raise ImproperlyConfigured("OPTIONS['max_idle'] must not be negative")
    return MySQLOptions(
        url_params=url_params,
        database_alias=database,
        max_idle=max_idle,
        extra=extra,
        session_wait_timeout=extra.pop("wait_timeout", None),
    )
