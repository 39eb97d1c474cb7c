"""Connections the backend owns: where to connect (a URL or a Django ``DATABASES`` alias) and one
server session (:class:`Session`) with the few queries a lock needs.

The backend never locks on Django's own connection: Django closes and re-opens it (``CONN_MAX_AGE``,
the end of each request, ``close_old_connections``), and every user lock of a session vanishes with
it. A session here is never re-opened behind a holder's back either: mysqlclient's ``reconnect``
stays off, so a dropped connection surfaces as :class:`~locks.exceptions.LockLost`, not as a new
session that silently holds nothing (django-mysql issue #560).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from locks.exceptions import BackendUnavailable

#: Client error codes meaning the connection is gone (server gone away, lost during a query...).
CONNECTION_ERRORS = frozenset({2002, 2003, 2005, 2006, 2013, 2055, 4031})
#: Server error codes of a session that was killed or is shutting down.
KILLED_ERRORS = frozenset({1053, 1077, 1078, 1079, 1152, 1927})
ER_QUERY_INTERRUPTED = 1317
ER_NOT_SUPPORTED_YET = 1235  # Galera (wsrep) refuses GET_LOCK
ER_LOCK_DEADLOCK = 1213  # MariaDB's answer to a user-lock deadlock
ER_USER_LOCK_DEADLOCK = 3058  # MySQL's
DEADLOCK_ERRORS = frozenset({ER_LOCK_DEADLOCK, ER_USER_LOCK_DEADLOCK})

DEFAULT_CONNECT_TIMEOUT = 5


def driver() -> Any:
    """mysqlclient's module, imported on first use so that settings load without it."""
    import MySQLdb  # type: ignore[import-untyped,unused-ignore]

    return MySQLdb


def params_from_url(url: str) -> dict[str, Any]:
    """mysqlclient keyword arguments of ``mysql://user:password@host:port/database``."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("mysql", "mariadb"):
        raise ImproperlyConfigured(f"a MySQL lock URL starts with mysql:// or mariadb://, not {url!r}")
    params: dict[str, Any] = {}
    if parts.hostname:
        params["host"] = unquote(parts.hostname)
    try:
        port = parts.port
    except ValueError as exc:
        raise ImproperlyConfigured(f"bad port in {url!r}: {exc}") from None
    if port:
        params["port"] = port
    if parts.username:
        params["user"] = unquote(parts.username)
    if parts.password:
        params["password"] = unquote(parts.password)
    database = unquote(parts.path.lstrip("/"))
    if "/" in database:
        raise ImproperlyConfigured(f"{url!r}: the path is one database name")
    if database:
        params["database"] = database
    return params


def params_from_django(alias: str) -> dict[str, Any]:
    """mysqlclient keyword arguments of a Django ``DATABASES`` alias (Django computes them, so
    ``OPTIONS`` such as ``read_default_file`` or ``ssl`` apply as they do to Django's own)."""
    from django.db import connections

    try:
        wrapper = connections[alias]
    except Exception as exc:
        raise ImproperlyConfigured(f"no DATABASES[{alias!r}] for the MySQL lock backend: {exc}") from exc
    if wrapper.vendor != "mysql":
        raise ImproperlyConfigured(f"DATABASES[{alias!r}] is {wrapper.vendor}, not MySQL or MariaDB")
    params = dict(wrapper.get_connection_params())
    params.pop("conv", None)  # Django's converters turn some values into strings
    return params


def normalize(params: Mapping[str, Any]) -> dict[str, Any]:
    """Spell the arguments the way every mysqlclient version understands."""
    out = dict(params)
    if "database" in out:
        out["db"] = out.pop("database")
    if "password" in out:
        out["passwd"] = out.pop("password")
    out.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    out["autocommit"] = True
    return out


class Session:
    """One server connection. A lock it holds lives exactly as long as this connection.

    ``holds`` has the keys held through it (never one twice: a session asking again for a name
    it holds would be granted it by the server); ``broken`` is set once it failed, after which it
    is never used again. ``guard`` serializes queries (only misuse would ever contend on it).
    """

    __slots__ = ("__weakref__", "broken", "conn", "guard", "holds", "id", "mariadb", "query", "thread")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        # The driver's C query method, bound: MySQLdb's Python wrapper only copies bytearrays.
        self.query = driver()._mysql.connection.query.__get__(conn)
        self.id: int = conn.thread_id()
        self.mariadb = "mariadb" in conn.get_server_info().lower()
        self.holds: set[Any] = set()
        self.broken = False
        self.thread: int | None = None  # the thread whose locks it holds (shared sessions)
        self.guard = threading.Lock()

    @classmethod
    def open(cls, params: Mapping[str, Any], where: str) -> Session:
        mysqldb = driver()
        try:
            conn = mysqldb.connect(**params)
        except mysqldb.OperationalError as exc:
            raise BackendUnavailable(f"cannot connect to MySQL at {where}: {exc.args[-1]}") from exc
        except mysqldb.Error as exc:
            raise BackendUnavailable(f"cannot connect to MySQL at {where}: {exc}") from exc
        try:
            return cls(conn)
        except BaseException:
            conn.close()
            raise

    def row(self, sql: str) -> tuple[Any, ...]:
        """Run one statement and return its first row (one round trip, no cursor)."""
        with self.guard:
            self.query(sql)
            result = self.conn.store_result()
            rows = result.fetch_row() if result is not None else ()
        return rows[0] if rows else ()

    def rows(self, sql: str) -> tuple[tuple[Any, ...], ...]:
        with self.guard:
            conn = self.conn
            conn.query(sql)
            result = conn.store_result()
            return result.fetch_row(0) if result is not None else ()

    def execute(self, sql: str) -> None:
        with self.guard:
            self.conn.query(sql)
            result = self.conn.store_result()
            if result is not None:
                result.fetch_row(0)

    def close(self) -> None:
        self.broken = True
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing a dead connection may fail; it is gone either way
            pass


def error_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def is_disconnect(exc: BaseException) -> bool:
    """Whether a driver error means the session is gone (its locks with it)."""
    code = error_code(exc)
    if code in CONNECTION_ERRORS or code in KILLED_ERRORS:
        return True
    mysqldb = driver()
    # mysqlclient raises InterfaceError (0, '') on a connection it already knows to be closed.
    return isinstance(exc, mysqldb.InterfaceError)
