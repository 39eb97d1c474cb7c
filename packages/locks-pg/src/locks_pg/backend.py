"""PostgreSQL advisory locks, in two backend classes, one per scope:

* :class:`AdvisoryLockBackend`: each hold is a session advisory lock on a connection the backend
  owns (see :mod:`locks_pg.connection`). A thread's holds share its one session
  (:mod:`locks_pg.session_scope`), an event loop's tasks share a few
  (:mod:`locks_pg.asyncio_scope`): sessions scale with the threads and loops that hold or wait,
  not with the number of locks held. Uncontended acquire is one round trip
  (``pg_try_advisory_lock``), release one (``pg_advisory_unlock``, whose answer is checked);
  threads wait on the server (``pg_advisory_lock`` under a statement-local ``lock_timeout``),
  so a waiter is woken by the release itself, without polling. The fencing token (``FENCING``)
  comes from a sequence in the same statement: no extra round trip.
* :class:`TransactionAdvisoryLockBackend`: ``pg_advisory_xact_lock`` in the caller's open Django
  transaction (``OPTIONS['DATABASE']``), released by PostgreSQL at commit or rollback
  (:mod:`locks_pg.transaction_scope`). It works behind pgbouncer in transaction pooling mode,
  where session locks cannot.

Both take the options of :class:`PostgreSQLLockBackend`, declared once there.

The session's ``application_name`` says what it holds: set in the statement that takes a lock,
changed in the one that releases a lock when others stay held. A session whose last lock is
released is named ``APPLICATION_NAME`` again once idle for
:data:`~locks_pg.session_scope.IDLE_LABEL_RESET` (half a second), by a sweep of the idle sessions:
taking the same lock again meanwhile costs no rename, and a session that holds nothing is in no
listing.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from django.core.exceptions import ImproperlyConfigured
from psycopg import errors as pg_errors

from locks.backends import (
    ASYNC_NATIVE,
    FENCING,
    FORCE_RELEASE,
    LISTING,
    NOTIFY,
    SESSION_BOUND,
    SHARED,
    WATCHDOG,
    BackendSpec,
    BaseLockBackend,
    Hold,
    LockRequest,
    Option,
    Seconds,
)
from locks.backends.options import COMMON_OPTIONS
from locks.keys import Key, KeySpec, LockName
from locks_pg.admin import Administration
from locks_pg.asyncio_scope import AsyncScope
from locks_pg.connection import AsyncPgConnection, ConnectionFactory, PgConnection, PoolerDetected
from locks_pg.session_scope import SessionScope
from locks_pg.transaction_scope import TransactionRequired, TransactionScope

__all__ = [
    "PG_OPTIONS",
    "AdvisoryLockBackend",
    "PoolerDetected",
    "PostgreSQLLockBackend",
    "TransactionAdvisoryLockBackend",
    "TransactionRequired",
]

SESSION = "session"
TRANSACTION = "transaction"
DEFAULT_SEQUENCE = "locks_pg_fencing_token"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
# application_name keeps 63 printable ASCII bytes: longer or other names are not labelled.
_LABEL_MAX = 63
_RELEASE_SQL = {
    (shared, label): "SELECT "
    + ("pg_advisory_unlock_shared(%s)" if shared else "pg_advisory_unlock(%s)")
    + (", set_config('application_name', %s, false)" if label else "")
    for shared in (False, True)
    for label in (False, True)
}

#: libpq's own connection parameters: any other key that is not an option is refused.
_LIBPQ_KEYS = frozenset(option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults())


def _application_name(value: str) -> str:
    if not value.isascii() or len(value) > 32:
        raise ValueError(f"must be ASCII text of at most 32 characters, not {value!r}")
    return value


def _sequence_name(value: str) -> str:
    if not _IDENTIFIER.match(value):
        raise ValueError(f"must be a plain SQL identifier (schema.name allowed), not {value!r}")
    return value.lower()


def _database_alias(value: str) -> str:
    _check_database_alias(value)
    return value


#: The options both scopes take.
PG_OPTIONS: tuple[Option, ...] = (
    Option(
        "DATABASE",
        str,
        None,
        "the `DATABASES` alias whose connection settings are used (or give `LOCATION`)",
        check=_database_alias,
    ),
    Option(
        "SCOPE",
        str,
        None,
        'the scope of the backend class: `AdvisoryLockBackend` is `"session"`, '
        '`TransactionAdvisoryLockBackend` is `"transaction"` ([Scopes](#scopes))',
        choices=(SESSION, TRANSACTION),
    ),
    Option("FENCING", bool, False, "draw fencing tokens from the sequence ([Fencing tokens](#fencing-tokens))"),
    Option(
        "FENCING_SEQUENCE",
        str,
        DEFAULT_SEQUENCE,
        "the sequence (`schema.name` allowed)",
        check=_sequence_name,
    ),
    Option("POOLER", str, None, '`"session"`: allow a pooler that pins client sessions', choices=(SESSION,)),
    Option("MAX_IDLE", int, 8, "idle sessions kept for reuse by threads, per backend and process", minimum=0),
    Option("ASYNC_SESSIONS", int, 4, "holding sessions per event loop ([Asyncio](#asyncio))", minimum=1),
    Option("ASYNC_WAITS", int, 4, "sessions waiting on the server per event loop", minimum=1),
    Option("CONNECT_TIMEOUT", Seconds, 5.0, "seconds before `BackendUnavailable`", minimum=0.1),
    Option(
        "APPLICATION_NAME",
        str,
        "locks",
        "prefix of the holding sessions' `application_name` (ASCII, at most 32 characters)",
        check=_application_name,
    ),
    Option(
        "LABELS",
        bool,
        True,
        "name holding sessions `<APPLICATION_NAME>:<lock name>` (`[<n>]` when several); "
        "`False` keeps names out of `pg_stat_activity`",
    ),
    Option("KEEPALIVE", int, 10, "TCP keepalive idle seconds, client and server side", minimum=1),
    Option("KEYS", str, "locks", '`"django-pglock"` for its key function', choices=("locks", "django-pglock")),
)


class PostgreSQLLockBackend(Administration, BaseLockBackend):
    """What both scopes share: the options, the statements, fencing, labels and listings.

    ``LOCATION``: a ``postgresql://`` URL or libpq conninfo; or ``OPTIONS['DATABASE']``: a Django
    ``DATABASES`` alias whose settings are used to open the backend's own connections.
    ``OPTIONS``: :data:`PG_OPTIONS` (keys in any case), and libpq's own parameters (``sslmode``,
    ``sslrootcert``...), passed through; any other key is refused.
    """

    OPTIONS = PG_OPTIONS
    key_spec = KeySpec(kind="int64", accepts_int_names=True)
    driver_name = "libpq"
    #: The scope of the class's locks (``OPTIONS['SCOPE']`` may only repeat it).
    scope: ClassVar[str]

    @classmethod
    def driver_options(cls) -> frozenset[str]:
        return _LIBPQ_KEYS

    @classmethod
    def capabilities_from(cls, settings: Mapping[str, Any]) -> frozenset[str]:
        """Without ``FENCING``, no fencing tokens."""
        return cls.capabilities if settings["FENCING"] else cls.capabilities - {FENCING}

    def __init__(
        self, alias: str = "default", location: str | None = None, options: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(alias, location, options)
        settings = self.settings
        if location is not None and not isinstance(location, str):
            raise ImproperlyConfigured("LOCATION must be a postgresql:// URL or a libpq conninfo string")
        self.database: str | None = settings["DATABASE"]
        if location is None and self.database is None:
            raise ImproperlyConfigured(
                f"{type(self).__name__} needs LOCATION (a postgresql:// URL) or OPTIONS['DATABASE'] (a DATABASES alias)"
            )
        if settings["SCOPE"] not in (None, self.scope):
            other = TransactionAdvisoryLockBackend if self.scope == SESSION else AdvisoryLockBackend
            raise ImproperlyConfigured(
                f"{type(self).__name__} (alias {alias!r}) locks in {self.scope} scope: for "
                f"SCOPE={settings['SCOPE']!r}, use BACKEND 'locks_pg.{other.__name__}'"
            )
        self.fencing: bool = settings["FENCING"]
        self.sequence: str = settings["FENCING_SEQUENCE"]
        self.application_name: str = settings["APPLICATION_NAME"]
        self.labels: bool = settings["LABELS"]
        self.pglock_keys = settings["KEYS"] == "django-pglock"
        self._factory = ConnectionFactory(
            _strip_our_query(location) if location else None,
            self.options,  # libpq's parameters
            database=self.database,
            connect_timeout=settings["CONNECT_TIMEOUT"],
            max_idle=settings["MAX_IDLE"],
            application_name=self.application_name,
            allow_pooler=settings["POOLER"] == SESSION,
            keepalive=settings["KEEPALIVE"],
        )
        self.async_sessions: int = settings["ASYNC_SESSIONS"]
        self.async_waits: int = settings["ASYNC_WAITS"]
        self._threads = threading.local()  # each thread's sessions: see locks_pg.session_scope
        self._fence_ready = not self.fencing
        self._sql_cache: dict[tuple[Any, ...], tuple[str, int]] = {}
        self._labels: dict[LockName, str | None] = {}
        self._label_reset_due = False  # a sweep of idle sessions' labels is scheduled
        nextval = f"nextval('{self.sequence}')" if self.fencing else "0"
        self._nextval = nextval

    @classmethod
    def from_url(cls, url: str, alias: str = "default", **options: Any) -> PostgreSQLLockBackend:
        """``postgresql://user@host:5432/db?FENCING=true&sslmode=require``: the backend's own
        options are taken from the query, libpq's stay in the URL."""
        query = {k: v for k, v in parse_qsl(urlsplit(url).query) if k.lower() in _OUR_OPTIONS}
        return cls(alias=alias, location=url, options={**query, **options})

    def make_key(self, name: LockName) -> Key:
        """``int64_of(KEY_PREFIX + name)``; with ``KEYS='django-pglock'``, django-pglock's key
        (the same 8 bytes of SHA-256, little-endian), so old and new code exclude each other
        while an application moves over."""
        if self.pglock_keys and isinstance(name, str):
            digest = hashlib.sha256((self.key_prefix + name).encode("utf-8", "surrogatepass")).digest()
            return int.from_bytes(digest[:8], "little", signed=True)
        return super().make_key(name)

    # -- statements ---------------------------------------------------------------------------
    def _acquire_sql(self, shared: bool, wait: bool, timed: bool, label: bool) -> tuple[str, int]:
        """The one statement of an acquisition, and the column of its token: optionally bound
        the wait, take the lock, then (only once held: CASE and column order) draw a fencing
        token and name the session. Parameters, in order: the timeout (ms), the key, the label.
        Try-once gives a NULL token when the lock is busy."""
        cache_key = (shared, wait, timed, label)
        cached = self._sql_cache.get(cache_key)
        if cached is not None:
            return cached
        function = ("pg_advisory_lock" if wait else "pg_try_advisory_lock") + ("_shared" if shared else "")
        name_it = "set_config('application_name', %s, false)"
        if wait:
            columns = []
            if timed:
                # statement-local: ends with this (autocommit) statement, whatever happens
                columns.append("set_config('lock_timeout', %s, true)")
            columns += [f"{function}(%s)", self._nextval]
            if label:
                columns.append(name_it)
            sql, token_at = "SELECT " + ", ".join(columns), 2 if timed else 1
        elif label:
            # a CTE with a volatile function runs once, before the columns that depend on it
            sql = (
                f"WITH s AS (SELECT {function}(%s) AS got) "
                f"SELECT CASE WHEN s.got THEN {self._nextval} END, CASE WHEN s.got THEN {name_it} END FROM s"
            )
            token_at = 0
        else:
            sql, token_at = f"SELECT CASE WHEN {function}(%s) THEN {self._nextval} END", 0
        cached = self._sql_cache[cache_key] = (sql, token_at)
        return cached

    @staticmethod
    def _release_sql(shared: bool, label: bool) -> str:
        """Unlock (the answer says whether the session held it), then rename the session after
        what it still holds. Parameters: the key, the label."""
        return _RELEASE_SQL[shared, label]

    @staticmethod
    def _probe_sql(shared: bool, timed: bool) -> str:
        """Wait in the server's queue until the lock is free, and let go of it at once."""
        mode = "_shared" if shared else ""
        timeout = "set_config('lock_timeout', %s, true), " if timed else ""
        return f"SELECT {timeout}pg_advisory_lock{mode}(%s), pg_advisory_unlock{mode}(%s)"

    def _label(self, name: LockName) -> str | None:
        """``<APPLICATION_NAME>:<name>`` when that is printable ASCII within PostgreSQL's 63
        bytes, else None (the name stays unknown)."""
        labels = self._labels
        try:
            return labels[name]
        except KeyError:
            pass
        label: str | None = None
        if not isinstance(name, int):
            label = f"{self.application_name}:{name}"
            if len(label) > _LABEL_MAX or not (label.isascii() and label.isprintable()):
                label = None
        if len(labels) >= 4096:
            labels.clear()
        labels[name] = label
        return label

    def session_label(self, conn: PgConnection | AsyncPgConnection, adding: LockName | None) -> str | None:
        """The ``application_name`` for what ``conn`` holds (plus ``adding``, about to be taken):
        ``locks`` when nothing, ``locks:<name>`` for one lock, ``locks[<n>]:<oldest name>`` for
        ``n`` locks (``locks[<n>]`` when that name cannot be shown). None with ``LABELS=False``.

        The longest-held lock is the one named: it is the likeliest to be what others wait for,
        and a loop of short inner locks then changes only the count."""
        if not self.labels:
            return None
        holds = conn.holds
        count = len(holds) + (adding is not None)
        if count == 0:
            return self.application_name
        oldest = holds[next(iter(holds))].name if holds else adding
        label = self._label(cast(LockName, oldest))
        if count == 1:
            return label or f"{self.application_name}[1]"
        counted = f"{self.application_name}[{count}]"
        if label is not None and len(label) + len(counted) - len(self.application_name) <= _LABEL_MAX:
            return counted + label[len(self.application_name) :]
        return counted

    # -- fencing ------------------------------------------------------------------------------
    def _ensure_fencing(self, conn: PgConnection) -> None:
        """Create the token sequence once if it is missing (the migration may have made it)."""
        if self._fence_ready:
            return
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (self.sequence,))
        if not row[0]:
            try:
                conn.command(f"CREATE SEQUENCE IF NOT EXISTS {self.sequence} AS bigint")
            except (pg_errors.UniqueViolation, pg_errors.DuplicateTable):
                pass  # created by another client at the same moment
            except pg_errors.InsufficientPrivilege as exc:
                raise self._no_sequence() from exc
        self._fence_ready = True

    async def _aensure_fencing(self, conn: AsyncPgConnection) -> None:
        row = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (self.sequence,))
        if not row[0]:
            try:
                await conn.command(f"CREATE SEQUENCE IF NOT EXISTS {self.sequence} AS bigint")
            except (pg_errors.UniqueViolation, pg_errors.DuplicateTable):
                pass
            except pg_errors.InsufficientPrivilege as exc:
                raise self._no_sequence() from exc
        self._fence_ready = True

    def _no_sequence(self) -> ImproperlyConfigured:
        return ImproperlyConfigured(
            f"the fencing sequence {self.sequence} does not exist and this role cannot create it: "
            "run the locks_pg migration, or set OPTIONS['FENCING'] = False"
        )

    def close(self) -> None:
        """Close the sessions that hold nothing (those with holds stay until released)."""
        factory = getattr(self, "_factory", None)  # also from __del__ of a half-built backend
        if factory is not None:
            factory.close_idle()

    def after_fork(self) -> None:
        super().after_fork()
        self._factory.forget()
        self._threads = threading.local()

    # -- used by the lock views and the bench ------------------------------------------------
    def connection_factory(self) -> ConnectionFactory:
        return self._factory


class AdvisoryLockBackend(SessionScope, AsyncScope, PostgreSQLLockBackend):
    """PostgreSQL session advisory locks (psycopg 3) on sessions the backend owns: a thread's
    holds share its session, an event loop's tasks share a few (:mod:`locks_pg.session_scope`,
    :mod:`locks_pg.asyncio_scope`). Options: :data:`PG_OPTIONS`.
    """

    #: * ``shared``, ``fencing`` (with ``FENCING``), ``listing`` (``pg_locks``), ``force_release``
    #:   (``pg_terminate_backend`` of the holding session);
    #: * ``session_bound``: PostgreSQL releases a session's locks when it ends;
    #: * ``notify``: a waiter waits on the server, woken by the release;
    #: * ``watchdog``: ``check()`` asks the holding session (or ``pg_locks``);
    #: * ``async_native``: the asyncio API runs on psycopg's ``AsyncConnection``.
    capabilities = frozenset({SHARED, FENCING, LISTING, FORCE_RELEASE, SESSION_BOUND, NOTIFY, WATCHDOG, ASYNC_NATIVE})
    scope = SESSION

    def spec(self) -> BackendSpec:
        """A recipe for another process. On a ``DATABASES`` alias it carries the alias's
        connection settings, so the worker needs no Django settings."""
        base = super().spec()
        if self.database is None:
            return base
        from psycopg.conninfo import make_conninfo

        params = {k: v for k, v in self._factory.resolved_params().items() if v is not None}
        options = {k: v for k, v in self._settings.items() if k.lower() != "database"}
        return replace(base, location=make_conninfo(**params), options=options)

    def try_acquire(self, request: LockRequest) -> Hold | None:
        return self._session_acquire(request, 0)

    def acquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        return self._session_acquire(request, timeout)

    async def aacquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        """On the event loop's shared sessions (psycopg's ``AsyncConnection``): a waiting task
        costs no thread."""
        return await self._session_aacquire(request, timeout)

    async def ais_locked(self, key: Key) -> bool:
        return await self._session_ais_locked(key)  # type: ignore[arg-type]  # int64 keys

    async def arelease(self, hold: Hold) -> None:
        if not isinstance(hold.data, AsyncPgConnection):
            await super().arelease(hold)  # taken through the synchronous API
            return
        await self._session_arelease(hold)


class TransactionAdvisoryLockBackend(TransactionScope, PostgreSQLLockBackend):
    """PostgreSQL transaction advisory locks: ``pg_advisory_xact_lock`` in the caller's open
    Django transaction on ``OPTIONS['DATABASE']``, released by PostgreSQL at commit or rollback
    (:mod:`locks_pg.transaction_scope`). Works behind pgbouncer's transaction pooling.
    Options: :data:`PG_OPTIONS`.
    """

    #: As :class:`AdvisoryLockBackend`, but no ``watchdog`` (the hold is on the caller's
    #: connection, which no other thread may use) and no ``async_native`` (Django's
    #: transactions are synchronous).
    capabilities = AdvisoryLockBackend.capabilities - {WATCHDOG, ASYNC_NATIVE}
    scope = TRANSACTION

    def __init__(
        self, alias: str = "default", location: str | None = None, options: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(alias, location, options)
        if self.database is None:
            raise ImproperlyConfigured(
                f"TransactionAdvisoryLockBackend (alias {alias!r}) locks in the caller's Django transaction: "
                "set OPTIONS['DATABASE'] to its DATABASES alias"
            )

    def spec(self) -> BackendSpec:
        """A recipe for another process, which runs Django's set-up (``DJANGO_SETTINGS_MODULE``)
        to find the alias."""
        base = super().spec()
        return replace(base, setup=base.setup or "locks.bench.setup_django")

    def try_acquire(self, request: LockRequest) -> Hold | None:
        return self._xact_try(request)

    def acquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        return self._xact_acquire(request, timeout)

    def release(self, hold: Hold) -> None:
        self._xact_release(hold)

    def check(self, hold: Hold) -> bool:
        return True  # held until the transaction ends, which the registry learns from Django


_OUR_OPTIONS = frozenset(option.name.lower() for option in COMMON_OPTIONS + PG_OPTIONS)


def _check_database_alias(alias: str) -> None:
    """Refuse an alias that is not a PostgreSQL database early (``manage.py check`` sees it)."""
    from django.conf import settings

    if not settings.configured:
        return  # checked again when the first connection is opened
    if alias not in settings.DATABASES:
        raise ValueError(f"= {alias!r} is not an alias of DATABASES")
    from django.db import connections

    vendor = connections[alias].vendor
    if vendor != "postgresql":
        raise ValueError(f"= {alias!r} is a {vendor} database, not PostgreSQL: advisory locks need PostgreSQL")


def _strip_our_query(location: str) -> str:
    """The URL for libpq: without the query parameters that are the backend's own options."""
    if "://" not in location:
        return location
    parts = urlsplit(location)
    if not parts.query:
        return location
    query = [(k, v) for k, v in parse_qsl(parts.query) if k.lower() not in _OUR_OPTIONS]
    return urlunsplit(parts._replace(query=urlencode(query)))
