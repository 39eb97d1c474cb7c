"""Connections the advisory lock backend owns: opened, checked, pooled and set up here.

A session advisory lock lives as long as the server session that took it. Django's connections
are closed (``CONN_MAX_AGE``, ``close_old_connections``) and pooled (Django 5.1+) behind the
caller's back, and a lock taken on one of them is dropped, or leaks to the next borrower. So the
backend never locks on Django's connection: it opens its own, from the same settings, and keeps
idle ones for reuse. One session holds any number of locks (a thread's, or many asyncio tasks'):
each connection records the keys it holds, so a key is never taken twice on one session (its
re-request would succeed: PostgreSQL counts it for the session). A connection goes back to the
idle list only once it holds nothing (every ``pg_advisory_unlock`` said so), so the next user
never inherits a lock.
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

import psycopg
from django.core.exceptions import ImproperlyConfigured

from locks.exceptions import BackendUnavailable, NotSupported

#: Django-only keys of ``DATABASES[...]["OPTIONS"]``: not libpq parameters.
_DJANGO_ONLY_OPTIONS = frozenset(
    {"assume_role", "isolation_level", "pool", "server_side_binding", "cursor_factory", "context", "prepare_threshold"}
)


_BAD = psycopg.pq.ConnStatus.BAD


class PoolerDetected(NotSupported):
    """A connection pooler (pgbouncer...) sits between the backend and PostgreSQL: session
    advisory locks would be stranded on a server connection that other clients then use."""


def conninfo_from_django(alias: str) -> dict[str, Any]:
    """libpq parameters of a Django ``DATABASES`` alias (which must be PostgreSQL)."""
    from django.conf import settings
    from django.db import connections

    if not settings.configured or alias not in settings.DATABASES:
        raise ImproperlyConfigured(f"OPTIONS['DATABASE'] = {alias!r} is not an alias of DATABASES")
    connection = connections[alias]
    if connection.vendor != "postgresql":
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}] is {connection.vendor}, not PostgreSQL: advisory locks need PostgreSQL"
        )
    params = connection.settings_dict
    result: dict[str, Any] = {
        key: value for key, value in dict(params.get("OPTIONS") or {}).items() if key not in _DJANGO_ONLY_OPTIONS
    }
    for setting, key in (("NAME", "dbname"), ("USER", "user"), ("PASSWORD", "password"), ("HOST", "host")):
        if params.get(setting):
            result[key] = params[setting]
    if params.get("PORT"):
        result["port"] = str(params["PORT"])
    if params.get("NAME") is None and "service" not in result:
        result["dbname"] = "postgres"
    return result


class Held:
    """One key held on a session: its name (for the session's label), mode and stack depth
    (several asyncio tasks may hold one key shared on one session)."""

    __slots__ = ("count", "name", "shared")

    def __init__(self, name: Any, shared: bool) -> None:
        self.name = name
        self.shared = shared
        self.count = 1


class _Holding:
    """What both kinds of connection know about the locks on their session."""

    __slots__ = ("behind_pooler", "cursor", "dead", "holds", "label", "pid", "raw", "server_version")
    raw: Any
    cursor: Any
    pid: int
    holds: dict[int, Held]
    dead: str | None
    behind_pooler: bool
    server_version: int
    label: str | None

    def __init__(self, raw: Any, pid: int) -> None:
        self.raw = raw
        self.cursor = raw.cursor()
        self.pid = pid
        self.holds = {}
        self.dead = None
        # pgbouncer & co. answer the startup with a pid of their own
        self.behind_pooler = pid != raw.info.backend_pid
        if self.behind_pooler:
            raw.prepare_threshold = None  # a transaction pooler may not keep prepared statements
        self.server_version = raw.info.server_version
        self.label = None  # the application_name set on the session

    @property
    def broken(self) -> bool:
        # closed, cleanly or not (psycopg's ``closed``, read without its property: a hot path)
        return bool(self.raw.pgconn.status == _BAD)

    def can_take(self, key: int, shared: bool, stack: bool) -> bool:
        """Whether ``key`` may be requested on this session: not held on it at all, or (with
        ``stack``) held shared and asked shared. PostgreSQL would grant a session's own
        re-request whatever the mode, so that must never reach it for another holder."""
        held = self.holds.get(key)
        if held is None:
            return self.dead is None
        return stack and shared and held.shared and self.dead is None

    def add(self, key: int, name: Any, shared: bool) -> None:
        held = self.holds.get(key)
        if held is None:
            self.holds[key] = Held(name, shared)
        else:
            held.count += 1

    def remove(self, key: int) -> None:
        held = self.holds.get(key)
        if held is not None:
            held.count -= 1
            if held.count <= 0:
                del self.holds[key]


class PgConnection(_Holding):
    """One owned server session: the psycopg connection, its cursor and what we know of it.

    ``mutex`` serialises statements from the thread that holds on it and the watchdog (which
    never waits for it: see ``check``). ``holds`` are the keys it holds; ``dead`` says why the
    session ended, once it did (every hold on it is then lost)."""

    __slots__ = ("checked", "home", "idle_since", "mutex")

    raw: psycopg.Connection[Any]
    cursor: psycopg.Cursor[Any]

    def __init__(self, raw: psycopg.Connection[Any], pid: int) -> None:
        super().__init__(raw, pid)
        self.mutex = threading.Lock()
        self.home: list[PgConnection] | None = None  # the sessions list of the thread using it
        self.checked = 0.0  # when a statement last succeeded on it (time.monotonic())
        self.idle_since = 0.0  # when it last went back to the idle list (time.monotonic())

    def execute(self, sql: Any, params: Any = None) -> Any:
        cursor = self.cursor
        cursor.execute(sql, params)
        return cursor.fetchone()

    def command(self, sql: Any) -> None:
        self.cursor.execute(sql)

    def close(self) -> None:
        try:
            self.raw.close()
        except Exception:  # noqa: BLE001 - already gone
            pass


class AsyncPgConnection(_Holding):
    """The asyncio twin of :class:`PgConnection` (psycopg's ``AsyncConnection``). Several tasks
    share it: ``alock`` keeps their statements apart (only short statements run on a session
    that holds locks; waits run on sessions of their own)."""

    __slots__ = ("alock", "loop")

    raw: psycopg.AsyncConnection[Any]
    cursor: psycopg.AsyncCursor[Any]

    def __init__(self, raw: psycopg.AsyncConnection[Any], pid: int) -> None:
        super().__init__(raw, pid)
        self.alock = asyncio.Lock()
        self.loop = asyncio.get_running_loop()

    async def execute(self, sql: Any, params: Any = None) -> Any:
        cursor = self.cursor
        await cursor.execute(sql, params)
        return await cursor.fetchone()

    async def command(self, sql: Any) -> None:
        await self.cursor.execute(sql)

    def finish(self) -> None:
        """Close the session at once, from any thread or loop (ends its locks with it)."""
        try:
            self.raw.pgconn.finish()
        except Exception:  # noqa: BLE001 - already gone
            pass

    async def close(self) -> None:
        try:
            await self.raw.close()
        except Exception:  # noqa: BLE001 - already gone
            self.finish()


class ConnectionFactory:
    """Opens owned connections and keeps idle ones (a LIFO list, so the warmest is reused).

    Thread-safe: the idle list is a deque whose ``append``/``pop`` are atomic. The asyncio
    sessions of each event loop live in ``loops`` (see :mod:`locks_pg.asyncio_scope`).
    """

    def __init__(
        self,
        conninfo: str | None,
        params: Mapping[str, Any] | None,
        *,
        database: str | None = None,
        connect_timeout: float = 5.0,
        max_idle: int = 8,
        application_name: str = "locks",
        allow_pooler: bool = False,
        keepalive: int = 10,
    ) -> None:
        self.conninfo = conninfo or ""
        self._given = dict(params or {})
        self.params = dict(self._given)
        self.database = database
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.application_name = application_name
        self.allow_pooler = allow_pooler
        self.keepalive = keepalive
        self._idle: collections.deque[PgConnection] = collections.deque()
        self.loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._pid = os.getpid()
        self._resolved = False
        if database is not None:
            _django_factories.add(self)

    def _resolve(self) -> None:
        if self._resolved:
            return
        if self.database is not None:
            self.params = {**conninfo_from_django(self.database), **self._given}
        self._resolved = True

    def resolved_params(self) -> dict[str, Any]:
        """The libpq parameters besides the conninfo (a Django alias's settings, resolved)."""
        self._resolve()
        return dict(self.params)

    def _connect_kwargs(self) -> dict[str, Any]:
        self._resolve()
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "prepare_threshold": 0,  # the lock statements run again and again: prepare at once
            "connect_timeout": max(1, round(self.connect_timeout)),
            # the client notices a dead server too (a hold's release and the watchdog)
            "keepalives": 1,
            "keepalives_idle": self.keepalive,
            "keepalives_interval": max(1, self.keepalive // 2),
            "keepalives_count": 3,
            **self.params,
        }
        kwargs.setdefault("application_name", self.application_name)
        return kwargs

    def connect(self) -> PgConnection:
        """A new owned connection, set up; :class:`BackendUnavailable` when the server is not
        there (within the connect timeout, never a hang)."""
        try:
            raw = psycopg.connect(self.conninfo, **self._connect_kwargs())
        except psycopg.OperationalError as exc:
            raise BackendUnavailable(f"cannot connect to PostgreSQL: {_first_line(exc)}") from exc
        except psycopg.ProgrammingError as exc:  # a malformed conninfo
            raise ImproperlyConfigured(f"bad PostgreSQL connection settings: {_first_line(exc)}") from exc
        try:
            sql, params = self._setup_statement(raw.info)
            try:
                row = raw.execute(sql, params, prepare=False).fetchone()
            except psycopg.OperationalError as exc:
                raise BackendUnavailable(f"PostgreSQL connection failed during set-up: {_first_line(exc)}") from exc
            pid = self._set_up_done(row)
        except BaseException:
            raw.close()
            raise
        return PgConnection(raw, pid)

    async def aconnect(self) -> AsyncPgConnection:
        """The asyncio twin of :meth:`connect`."""
        try:
            raw = await psycopg.AsyncConnection.connect(self.conninfo, **self._connect_kwargs())
        except psycopg.OperationalError as exc:
            raise BackendUnavailable(f"cannot connect to PostgreSQL: {_first_line(exc)}") from exc
        except psycopg.ProgrammingError as exc:
            raise ImproperlyConfigured(f"bad PostgreSQL connection settings: {_first_line(exc)}") from exc
        try:
            sql, params = self._setup_statement(raw.info)
            try:
                cursor = await raw.execute(sql, params, prepare=False)
                row = await cursor.fetchone()
            except psycopg.OperationalError as exc:
                raise BackendUnavailable(f"PostgreSQL connection failed during set-up: {_first_line(exc)}") from exc
            pid = self._set_up_done(row)
        except BaseException:
            await raw.close()
            raise
        return AsyncPgConnection(raw, pid)

    def _setup_statement(self, info: Any) -> tuple[str, tuple[Any, ...]]:
        # One round trip: who we really talk to, and session settings that would otherwise end a
        # lock wait (statement_timeout) or a holding session (idle timeouts) behind our back.
        # The server-side keepalives make it notice a dead client, and free its locks, soon.
        # Behind a transaction pooler the settings would stay on a server connection that other
        # clients then get: they are only made when the session is really ours (same pid as the
        # startup reported) or the pooler pins sessions (POOLER='session').
        settings = {
            "statement_timeout": "0",
            "lock_timeout": "0",
            "idle_in_transaction_session_timeout": "0",
            "tcp_keepalives_idle": str(self.keepalive),
            "tcp_keepalives_interval": str(max(1, self.keepalive // 2)),
            "tcp_keepalives_count": "3",
        }
        if info.server_version >= 140000:
            settings["idle_session_timeout"] = "0"
            settings["client_connection_check_interval"] = "5000"
        sets = ", ".join(f"set_config('{name}', '{value}', false)" for name, value in settings.items())
        sql = (
            "SELECT pg_backend_pid(), pg_is_in_recovery(), "
            f"CASE WHEN pg_backend_pid() = %s OR %s THEN concat({sets}) END"
        )
        return sql, (info.backend_pid, self.allow_pooler)

    @staticmethod
    def _set_up_done(row: Any) -> int:
        assert row is not None
        pid, in_recovery = row[0], row[1]
        if in_recovery:
            raise ImproperlyConfigured(
                "the lock database is a standby (pg_is_in_recovery()): advisory locks must be taken on the primary"
            )
        return int(pid)

    def check_session_safe(self, conn: PgConnection | AsyncPgConnection) -> None:
        """Refuse to hold a session lock through a pooler, unless told it pins sessions."""
        if conn.behind_pooler and not self.allow_pooler:
            raise PoolerDetected(
                "a connection pooler sits between locks and PostgreSQL (the session's pg_backend_pid() "
                f"{conn.pid} differs from the pid {conn.raw.info.backend_pid} given at connect): under "
                "transaction pooling (pgbouncer) a session advisory lock stays on a server connection that "
                "other clients then use. Connect to PostgreSQL directly, use "
                "locks_pg.TransactionAdvisoryLockBackend, or set OPTIONS['POOLER']='session' if the pooler "
                "pins each client to one server session."
            )

    def idle(self) -> PgConnection | None:
        """An idle connection (it may have died since: the caller retries on a new one). A
        forked child has none of its parent's: the fork handler made it :meth:`forget` them."""
        idle = self._idle
        while idle:
            try:
                conn = idle.pop()
            except IndexError:
                break
            if conn.raw.pgconn.status != _BAD:
                return conn
            conn.close()
        return None

    def idle_sessions(self) -> list[PgConnection]:
        """A snapshot of the idle sessions (any of them may be taken meanwhile)."""
        return list(self._idle) if os.getpid() == self._pid else []

    def claim(self, conn: PgConnection) -> bool:
        """Take ``conn`` off the idle list for one's own use, unless someone took it first (give
        it back with :meth:`put`). Idle sessions are used without their mutex (listings), so
        using one means owning it."""
        try:
            self._idle.remove(conn)
        except ValueError:
            return False
        return True

    def get(self) -> PgConnection:
        """An idle connection when there is one, else a new one."""
        return self.idle() or self.connect()

    def put(self, conn: PgConnection) -> None:
        """Give back a connection that holds no lock."""
        if conn.holds or conn.raw.pgconn.status == _BAD or len(self._idle) >= self.max_idle:
            if not conn.holds:
                conn.close()
        else:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)

    def close_idle(self) -> None:
        """Close every session that holds nothing (holds stay valid on theirs)."""
        idle = self._idle
        while idle:
            try:
                idle.pop().close()
            except IndexError:
                break
        for loop, sessions in list(self.loops.items()):
            if sessions.close_idle():
                self.loops.pop(loop, None)

    def refresh(self) -> None:
        """Close idle sessions and read the Django alias's settings again at the next connect
        (the test runner points the alias at the test database and back)."""
        self.close_idle()
        self._resolved = False

    def forget(self) -> None:
        """After a fork: drop the parent's sessions without closing them (closing would end the
        parent's sessions; psycopg leaves sockets of another process alone when collected)."""
        self._idle = collections.deque()
        self.loops = weakref.WeakKeyDictionary()
        self._pid = os.getpid()


#: Factories on a Django DATABASES alias: their idle sessions are closed when Django opens a
#: connection without a database (``_nodb_cursor``), which it does to create and to drop the
#: test database: a session of ours left on it would make ``DROP DATABASE`` fail ("being
#: accessed by other users").
_django_factories: weakref.WeakSet[ConnectionFactory] = weakref.WeakSet()


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    if getattr(connection, "alias", None) != "__no_db__":  # django.db.backends.base.base.NO_DB_ALIAS
        return
    for factory in list(_django_factories):
        try:
            factory.refresh()
        except Exception:  # noqa: BLE001 - never break Django's own work
            pass


def _connect_teardown_hook() -> None:
    from django.db.backends.signals import connection_created

    connection_created.connect(_on_connection_created, weak=False, dispatch_uid="locks_pg.close_idle_sessions")


_connect_teardown_hook()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
