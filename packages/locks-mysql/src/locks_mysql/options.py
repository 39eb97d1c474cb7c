"""The MySQL lock backend's ``OPTIONS``, declared once (:data:`MYSQL_OPTIONS`), and where it
connects (``LOCATION`` or a ``DATABASES`` alias). Nothing here touches the server.

Keys that are not the backend's options pass through to mysqlclient when they are among its
connection keywords (:data:`MYSQLCLIENT_KEYWORDS`); any other key is refused.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from locks.backends import Option, Seconds
from locks_mysql import connection as mysql

__all__ = ["MYSQLCLIENT_KEYWORDS", "MYSQL_OPTIONS", "OLD_SPELLINGS", "driver_arguments", "url_params"]

#: The backend's own options (besides ``KEY_PREFIX`` and ``WATCHDOG``).
MYSQL_OPTIONS: tuple[Option, ...] = (
    Option(
        "DATABASE",
        str,
        None,
        "the `DATABASES` alias whose settings are used, when there is no `LOCATION`",
        shown_default='"default"',
    ),
    Option(
        "CONNECT_TIMEOUT",
        Seconds,
        None,
        "seconds to connect before `BackendUnavailable` (rounded up to whole seconds)",
        minimum=0.001,
        shown_default=str(mysql.DEFAULT_CONNECT_TIMEOUT),
    ),
    Option(
        "WAIT_TIMEOUT",
        Seconds,
        None,
        "`SET SESSION wait_timeout` on each connection; not set: the server's (see [Lost locks](#lost-locks))",
        minimum=0.001,
    ),
    Option("MAX_IDLE", int, 8, "idle connections kept for the next acquisitions", minimum=0),
    Option(
        "READ_TIMEOUT",
        Seconds,
        None,
        "mysqlclient's `read_timeout`; server waits are then cut into slices shorter than it, "
        "so a long wait never trips it",
        minimum=0.001,
    ),
    Option("WRITE_TIMEOUT", Seconds, None, "mysqlclient's `write_timeout`", minimum=0.001),
)

#: The options that are mysqlclient arguments too, given to it in whole seconds.
_DRIVER_SECONDS = ("CONNECT_TIMEOUT", "READ_TIMEOUT", "WRITE_TIMEOUT")

#: The lower-case spellings the options had before every backend spelled its options in
#: UPPER_CASE: still taken in ``OPTIONS``, with a ``DeprecationWarning``.
OLD_SPELLINGS = frozenset(option.name.lower() for option in MYSQL_OPTIONS)

#: mysqlclient's connection keywords (``MySQLdb.connect``, mysqlclient 2.2) that ``OPTIONS`` may
#: pass through: those documented by ``MySQLdb.connections.Connection`` and ``_mysql.connect``
#: but the ones that say where to connect (``LOCATION`` or ``DATABASE`` do), the ones that are
#: the backend's options, and the ones the backend sets itself (``autocommit``, ``conv``,
#: ``cursorclass``).
MYSQLCLIENT_KEYWORDS = frozenset(
    {
        "auth_plugin",
        "binary_prefix",
        "charset",
        "client_flag",
        "collation",
        "compress",
        "executemany_fallback",
        "init_command",
        "local_infile",
        "local_infile_dir",
        "multi_statements",
        "named_pipe",
        "read_default_file",
        "read_default_group",
        "server_public_key_path",
        "sql_mode",
        "ssl",
        "ssl_mode",
        "unix_socket",
        "use_unicode",
    }
)


def warn_old_spellings(options: Mapping[str, Any] | None) -> None:
    """A ``DeprecationWarning`` for each option given in its old lower-case spelling."""
    for key in options or ():
        if key in OLD_SPELLINGS:
            warnings.warn(
                f"OPTIONS[{key!r}] of the MySQL lock backend is spelled OPTIONS[{key.upper()!r}] now",
                DeprecationWarning,
                stacklevel=5,  # the code that built the backend
            )


def url_params(location: Any, database: str | None) -> dict[str, Any] | None:
    """mysqlclient arguments of ``LOCATION``, or ``None`` when the backend connects through the
    ``DATABASES`` alias ``database`` (checked to exist when settings are loaded)."""
    if location is not None:
        if not isinstance(location, str):
            raise ImproperlyConfigured("the MySQL lock backend's LOCATION must be a mysql:// URL")
        if database is not None:
            raise ImproperlyConfigured("give the MySQL lock backend a LOCATION URL or OPTIONS['DATABASE'], not both")
        return mysql.params_from_url(location)
    from django.conf import settings

    database = database or "default"
    # Caught here (manage.py check builds every backend); the server is not touched.
    if settings.configured and database not in settings.DATABASES:
        raise ImproperlyConfigured(f"OPTIONS['DATABASE'] = {database!r} is not in DATABASES")
    return None


def driver_arguments(settings: Mapping[str, Any], passed: Mapping[str, Any]) -> dict[str, Any]:
    """What goes to mysqlclient besides where to connect: the options that are its arguments
    (whole seconds, rounded up) and the keywords passed through."""
    arguments = {key.lower(): value for key, value in passed.items()}
    for name in _DRIVER_SECONDS:
        if settings[name] is not None:
            arguments[name.lower()] = max(1, math.ceil(settings[name]))
    return arguments
