"""PostgreSQL advisory locks: :class:`AdvisoryLockBackend`.

Two scopes (``OPTIONS['SCOPE']``):

* ``"session"`` (default): each hold is a session advisory lock on a connection the backend
  owns (see :mod:`locks_pg.connection`). Uncontended acquire is one round trip
  (``pg_try_advisory_lock``), release one (``pg_advisory_unlock``, whose answer is checked);
  waiting happens on the server (``pg_advisory_lock`` under a statement-local ``lock_timeout``),
  so a waiter is woken by the release itself, without polling. The fencing token (``FENCING``)
  comes from a sequence in the same statement: no extra round trip.
* ``"transaction"``: ``pg_advisory_xact_lock`` in the caller's open Django transaction
  (``OPTIONS['database']``), released by PostgreSQL at commit or rollback. It works behind
  pgbouncer in transaction pooling mode, where session locks cannot.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from django.core.exceptions import ImproperlyConfigured
from psycopg import errors as pg_errors
from psycopg.types.numeric import Int8

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
    HolderInfo,
    LockRequest,
)
from locks.exceptions import BackendUnavailable, LockError, LockLost
from locks.keys import Key, KeySpec, LockName
from locks_pg.connection import AsyncPgConnection, ConnectionFactory, PgConnection, PoolerDetected, _first_line
from locks_pg.keys import KEY_SQL

__all__ = ["AdvisoryLockBackend", "PoolerDetected", "TransactionRequired"]

SESSION = "session"
TRANSACTION = "transaction"
DEFAULT_SEQUENCE = "locks_pg_fencing_token"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
# application_name keeps 63 printable ASCII bytes: longer or other names are not labelled.
_LABEL_MAX = 63
_OUR_OPTIONS = frozenset(
    {
        "database",
        "scope",
        "fencing",
        "fencing_sequence",
        "pooler",
        "max_idle",
        "connect_timeout",
        "application_name",
        "keepalive",
        "keys",
        "labels",
    }
)
_THIS_DATABASE = "l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"


class TransactionRequired(LockError):
    """A transaction-scoped lock was asked for outside a transaction (autocommit)."""


class _TransactionMarker:
    """Registered with ``transaction.on_commit`` when a transaction-scoped lock is taken. Django
    drops it when that transaction commits or rolls back, and when a savepoint the lock was taken
    in rolls back: exactly when PostgreSQL releases the lock. Running it does nothing."""

    __slots__ = ()

    def __call__(self) -> None:
        pass


@dataclass(frozen=True)
class _XactHold:
    """Where a transaction-scoped lock lives: the Django connection and its marker."""

    alias: str
    marker: _TransactionMarker


def _as_bool(value: Any, option: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    raise ImproperlyConfigured(f"OPTIONS[{option!r}] must be a bool, not {value!r}")


def _as_number(value: Any, option: str, cast: type, minimum: float) -> Any:
    try:
        number = cast(value)
    except (TypeError, ValueError):
        raise ImproperlyConfigured(f"OPTIONS[{option!r}] must be a number, not {value!r}") from None
    if isinstance(value, bool) or not number >= minimum:
        raise ImproperlyConfigured(f"OPTIONS[{option!r}] must be at least {minimum}, not {value!r}")
    return number


class AdvisoryLockBackend(BaseLockBackend):
    """PostgreSQL advisory locks (psycopg 3).

    ``LOCATION``: a ``postgresql://`` URL or libpq conninfo; or ``OPTIONS['database']``: a Django
    ``DATABASES`` alias whose settings are used to open the backend's own connections.

    ``OPTIONS`` (keys case-insensitive; any other key is passed to libpq, e.g. ``sslmode``):

    * ``SCOPE``: ``"session"`` (default) or ``"transaction"`` (see the module docstring);
    * ``FENCING`` (default ``False``): fencing tokens from the sequence ``FENCING_SEQUENCE``
      (default ``locks_pg_fencing_token``, created when missing, or by the ``locks_pg`` app's
      migration). Off by default: one acquisition in 32 then waits for a WAL flush;
    * ``POOLER``: ``"session"`` to allow a pooler that pins each client to one server session
      (pgbouncer in session mode); any other pooler is refused for session locks;
    * ``MAX_IDLE`` (8): idle connections kept for reuse; ``CONNECT_TIMEOUT`` (5 s);
      ``APPLICATION_NAME`` (``"locks"``): a holding session is named ``<it>:<lock name>``, so
      ``pg_stat_activity`` and :meth:`holders` show lock names; ``KEEPALIVE`` (10 s): TCP
      keepalive idle time on both ends, so a dead holder's locks are freed soon; ``LABELS``
      (``True``): ``False`` keeps lock names out of ``application_name`` (other database users can
      read it), at the price of nameless listings;
    * ``KEYS``: ``"locks"`` (default, :func:`locks.keys.int64_of`) or ``"django-pglock"`` (its
      key function, to share locks with code still using django-pglock).
    """

    capabilities = frozenset({SHARED, FENCING, LISTING, FORCE_RELEASE, SESSION_BOUND, NOTIFY, WATCHDOG, ASYNC_NATIVE})
    key_spec = KeySpec(kind="int64", accepts_int_names=True)
    url_schemes = ("postgresql", "postgres")

    def __init__(
        self, alias: str = "default", location: str | None = None, options: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(alias, location, options)
        ours: dict[str, Any] = {}
        libpq: dict[str, Any] = {}
        for key, value in self.options.items():
            if not isinstance(key, str):
                raise ImproperlyConfigured(f"OPTIONS keys must be str, not {key!r}")
            if key.lower() in _OUR_OPTIONS:
                ours[key.lower()] = value
            else:
                libpq[key] = value
        if location is not None and not isinstance(location, str):
            raise ImproperlyConfigured("LOCATION must be a postgresql:// URL or a libpq conninfo string")
        self.database: str | None = ours.get("database")
        if self.database is not None and not isinstance(self.database, str):
            raise ImproperlyConfigured("OPTIONS['database'] must be a DATABASES alias (str)")
        if self.database is not None:
            _check_database_alias(self.database)
        if location is None and self.database is None:
            raise ImproperlyConfigured(
                "AdvisoryLockBackend needs LOCATION (a postgresql:// URL) or OPTIONS['database'] (a DATABASES alias)"
            )
        scope = str(ours.get("scope", SESSION)).lower()
        if scope not in (SESSION, TRANSACTION):
            raise ImproperlyConfigured(f"OPTIONS['SCOPE'] must be 'session' or 'transaction', not {scope!r}")
        if scope == TRANSACTION and self.database is None:
            raise ImproperlyConfigured(
                "SCOPE='transaction' locks in the caller's Django transaction: set OPTIONS['database']"
            )
        self.scope = scope
        self.fencing = _as_bool(ours.get("fencing", False), "FENCING")
        sequence = ours.get("fencing_sequence", DEFAULT_SEQUENCE)
        if not isinstance(sequence, str) or not _IDENTIFIER.match(sequence):
            raise ImproperlyConfigured(f"OPTIONS['FENCING_SEQUENCE'] must be a plain SQL identifier, not {sequence!r}")
        self.sequence = sequence.lower()
        pooler = ours.get("pooler")
        if pooler not in (None, "session"):
            raise ImproperlyConfigured(
                f"OPTIONS['POOLER'] may only be 'session' (a pooler that pins client sessions), not {pooler!r}"
            )
        app_name = ours.get("application_name", "locks")
        if not isinstance(app_name, str) or not app_name.isascii() or len(app_name) > 32:
            raise ImproperlyConfigured("OPTIONS['APPLICATION_NAME'] must be ASCII text of at most 32 characters")
        self.application_name = app_name
        self.labels = _as_bool(ours.get("labels", True), "LABELS")
        keys = str(ours.get("keys", "locks")).lower()
        if keys not in ("locks", "django-pglock"):
            raise ImproperlyConfigured(f"OPTIONS['KEYS'] must be 'locks' or 'django-pglock', not {keys!r}")
        self.pglock_keys = keys == "django-pglock"
        caps = set(type(self).capabilities)
        if not self.fencing:
            caps.discard(FENCING)
        if scope == TRANSACTION:
            caps.discard(WATCHDOG)  # the hold is on the caller's connection: no other thread may use it
            caps.discard(ASYNC_NATIVE)  # Django's transactions are synchronous
        self.capabilities = frozenset(caps)  # type: ignore[misc]
        self._factory = ConnectionFactory(
            _strip_our_query(location) if location else None,
            libpq,
            database=self.database,
            connect_timeout=_as_number(ours.get("connect_timeout", 5.0), "CONNECT_TIMEOUT", float, 0.1),
            max_idle=_as_number(ours.get("max_idle", 8), "MAX_IDLE", int, 0),
            application_name=app_name,
            allow_pooler=pooler == "session",
            keepalive=_as_number(ours.get("keepalive", 10), "KEEPALIVE", int, 1),
        )
        self._fence_ready = not self.fencing
        self._sql_cache: dict[tuple[bool, bool, bool, bool], str] = {}
        self._labels: dict[LockName, str | None] = {}
        nextval = f"nextval('{self.sequence}')" if self.fencing else "0"
        self._nextval = nextval

    def spec(self) -> BackendSpec:
        """A recipe for another process. Session scope on a ``DATABASES`` alias becomes the
        alias's connection settings, so the worker needs no Django settings; transaction scope
        needs them (the worker runs Django's set-up from ``DJANGO_SETTINGS_MODULE``)."""
        base = super().spec()
        if self.database is None:
            return base
        if self.scope == TRANSACTION:
            return replace(base, setup=base.setup or "locks.bench.setup_django")
        from psycopg.conninfo import make_conninfo

        params = {k: v for k, v in self._factory.resolved_params().items() if v is not None}
        options = {k: v for k, v in self._settings.items() if k.lower() != "database"}
        return replace(base, location=make_conninfo(**params), options=options)

    @classmethod
    def from_url(cls, url: str, alias: str = "default", **options: Any) -> AdvisoryLockBackend:
        """``postgresql://user@host:5432/db?SCOPE=session&sslmode=require``: the backend's own
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
    def _acquire_sql(self, shared: bool, wait: bool, timed: bool, label: bool) -> str:
        """The one statement of an acquisition: optionally name the session, bound the wait,
        take the lock, then (only once held: CASE and argument order) draw a fencing token.
        Parameters, in order: the label, the timeout (ms), the key."""
        cache_key = (shared, wait, timed, label)
        sql = self._sql_cache.get(cache_key)
        if sql is None:
            function = ("pg_advisory_lock" if wait else "pg_try_advisory_lock") + ("_shared" if shared else "")
            columns = []
            if label:
                columns.append("set_config('application_name', %s, false)")
            if timed:
                # statement-local: ends with this (autocommit) statement, whatever happens
                columns.append("set_config('lock_timeout', %s, true)")
            if wait:
                columns += [f"{function}(%s)", self._nextval]
            else:
                columns.append(f"CASE WHEN {function}(%s) THEN {self._nextval} END")
            sql = self._sql_cache[cache_key] = "SELECT " + ", ".join(columns)
        return sql

    def _label(self, name: LockName) -> str | None:
        """The holding session's application_name: ``<APPLICATION_NAME>:<name>`` when that is
        printable ASCII within PostgreSQL's 63 bytes, else None (the name stays unknown)."""
        labels = self._labels
        try:
            return labels[name]
        except KeyError:
            pass
        label: str | None = None
        if self.labels and not isinstance(name, int):
            label = f"{self.application_name}:{name}"
            if len(label) > _LABEL_MAX or not (label.isascii() and label.isprintable()):
                label = None
        if len(labels) >= 4096:
            labels.clear()
        labels[name] = label
        return label

    # -- session scope ------------------------------------------------------------------------
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
                raise ImproperlyConfigured(
                    f"the fencing sequence {self.sequence} does not exist and this role cannot create it: "
                    "run the locks_pg migration, or set OPTIONS['FENCING'] = False"
                ) from exc
        self._fence_ready = True

    def _attempt(self, conn: PgConnection, request: LockRequest, wait: bool, timeout: float | None) -> Any:
        label = self._label(request.name)
        set_label = label is not None and label != conn.label
        timed = wait and timeout is not None
        params: list[Any] = []
        if set_label:
            params.append(label)
        if timed:
            assert timeout is not None
            params.append(_milliseconds(timeout))
        params.append(Int8(cast(int, request.key)))
        row = conn.execute(self._acquire_sql(request.shared, wait, timed, set_label), params)
        if set_label:
            conn.label = label
        return row[-1]

    def _session_acquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        """One statement on an owned connection: ``pg_try_advisory_lock`` when ``timeout`` is 0,
        else a wait on the server (which is also one round trip when the lock is free). An idle
        connection found dead (server restarted, session terminated) is replaced once."""
        factory = self._factory
        conn = factory.idle()
        fresh = conn is None
        if conn is None:
            conn = factory.connect()
        if conn.behind_pooler and not factory.allow_pooler:
            factory.put(conn)  # fine for queries, not for holding a session lock
            factory.check_session_safe(conn)
        wait = timeout != 0
        deadline = time.monotonic() + timeout if timeout else 0.0
        while True:
            try:
                if not self._fence_ready:
                    self._ensure_fencing(conn)
                result = self._attempt(conn, request, wait, timeout)
                break
            except pg_errors.LockNotAvailable:
                # lock_timeout: the failed statement took nothing with it. A timeout beyond
                # lock_timeout's range (24.8 days) is waited in parts.
                left = deadline - time.monotonic() if timeout else 0.0
                if left > 0.001:
                    timeout = left
                    continue
                factory.put(conn)
                return None
            except pg_errors.QueryCanceled as exc:
                factory.put(conn)
                raise LockError(f"waiting for {request.name!r} was cancelled on the server", request.name) from exc
            except psycopg.OperationalError as exc:
                conn.close()
                if fresh:
                    raise BackendUnavailable(f"PostgreSQL connection failed: {_first_line(exc)}") from exc
                conn, fresh = factory.connect(), True
                if conn.behind_pooler and not factory.allow_pooler:
                    factory.put(conn)
                    factory.check_session_safe(conn)
                if timeout:
                    timeout = max(0.001, deadline - time.monotonic())
            except psycopg.Error as exc:  # out of shared memory for locks, privileges...
                conn.close()
                raise LockError(
                    f"PostgreSQL refused to lock {request.name!r}: {_first_line(exc)}", request.name
                ) from exc
            except BaseException:
                conn.close()  # interrupted mid-statement: the session may hold the lock, end it
                raise
        if not wait and result is None:
            factory.put(conn)
            return None
        return Hold(request, data=conn, token=result if self.fencing else None)

    def try_acquire(self, request: LockRequest) -> Hold | None:
        if self.scope == TRANSACTION:
            return self._xact_try(request)
        return self._session_acquire(request, 0)

    def acquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        if self.scope == TRANSACTION:
            return self._xact_acquire(request, timeout)
        return self._session_acquire(request, timeout)

    def release(self, hold: Hold) -> None:
        if self.scope == TRANSACTION:
            self._xact_release(hold)
            return
        conn: PgConnection = hold.data
        if isinstance(conn, AsyncPgConnection):
            conn.finish()  # an asyncio hold released from a thread: end its session
            return
        sql = "SELECT pg_advisory_unlock_shared(%s)" if hold.request.shared else "SELECT pg_advisory_unlock(%s)"
        try:
            row = conn.execute(sql, (Int8(cast(int, hold.key)),))
        except psycopg.OperationalError as exc:
            conn.close()
            raise LockLost(
                f"the session holding {hold.name!r} ended (connection lost or terminated): {_first_line(exc)}",
                hold.name,
            ) from exc
        except BaseException:
            conn.close()  # ending the session releases the lock
            raise
        if not row[0]:
            conn.close()
            raise LockLost(f"the session no longer held {hold.name!r} at release", hold.name)
        self._factory.put(conn)

    def check(self, hold: Hold) -> bool:
        """A session lock is held as long as its session lives (only this hold ever unlocks on
        it): one ``SELECT 1`` on the holding connection tells."""
        if self.scope == TRANSACTION:
            return True
        conn: PgConnection = hold.data
        if isinstance(conn, AsyncPgConnection):
            # its connection belongs to an event loop: ask from another session instead
            row = self._run(
                "SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 1 "
                f"AND l.granted AND l.pid = %s AND {KEY_SQL} = %s)",
                (conn.pid, Int8(cast(int, hold.key))),
            )
            return bool(row[0])
        try:
            conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    # -- transaction scope --------------------------------------------------------------------
    def _django_connection(self, name: LockName) -> Any:
        from django.db import connections

        assert self.database is not None
        connection = connections[self.database]
        if not connection.in_atomic_block:
            raise TransactionRequired(
                f"{name!r} is a transaction-scoped advisory lock: take it inside transaction.atomic("
                f"using={self.database!r}) (it is released when that transaction ends)",
                name,
            )
        if connection.needs_rollback:
            raise TransactionRequired(f"the transaction of {name!r} is marked for rollback: no lock taken", name)
        return connection

    def _xact_row(self, cursor: Any, sql: str, params: list[Any]) -> Any:
        cursor.execute(sql, params)
        return cursor.fetchone()

    def _xact_try(self, request: LockRequest) -> Hold | None:
        connection = self._django_connection(request.name)
        function = "pg_try_advisory_xact_lock_shared" if request.shared else "pg_try_advisory_xact_lock"
        self._xact_ensure_fencing(connection)
        with connection.cursor() as cursor:
            row = self._xact_row(
                cursor, f"SELECT CASE WHEN {function}(%s::bigint) THEN {self._nextval} END", [request.key]
            )
        if row[0] is None:
            return None
        return Hold(request, data=self._xact_mark(), token=row[0] if self.fencing else None)

    def _xact_acquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        hold = self._xact_try(request)
        if hold is not None or timeout == 0:
            return hold
        from django.db import DatabaseError, transaction

        connection = self._django_connection(request.name)
        function = "pg_advisory_xact_lock_shared" if request.shared else "pg_advisory_xact_lock"
        wait = "0" if timeout is None else _milliseconds(timeout)
        try:
            # A lock_timeout error aborts the transaction it happens in: wait in a savepoint,
            # so the caller's transaction carries on, and put lock_timeout back as it was.
            with transaction.atomic(using=self.database), connection.cursor() as cursor:
                previous = self._xact_row(
                    cursor, "SELECT current_setting('lock_timeout'), set_config('lock_timeout', %s, true)", [wait]
                )[0]
                row = self._xact_row(
                    cursor,
                    f"SELECT {function}(%s::bigint), {self._nextval}, set_config('lock_timeout', %s, true)",
                    [request.key, previous],
                )
        except DatabaseError as exc:
            state = _sqlstate(exc)
            if state == "55P03":
                return None
            if state == "40P01":
                raise LockError(f"deadlock detected waiting for {request.name!r}", request.name) from exc
            raise
        return Hold(request, data=self._xact_mark(), token=row[1] if self.fencing else None)

    def _xact_mark(self) -> _XactHold:
        """Tie a new hold to the current transaction (see :class:`_TransactionMarker`)."""
        from django.db import transaction

        marker = _TransactionMarker()
        transaction.on_commit(marker, using=self.database)
        return _XactHold(self.database or "", marker)

    def reentry_lost(self, hold: Hold) -> str | None:
        # A transaction-scoped lock taken again in this thread after its transaction ended:
        # PostgreSQL released it at commit or rollback, so take it again in the new transaction.
        data = hold.data
        if isinstance(data, _XactHold) and not self._xact_alive(data):
            return "its transaction ended (PostgreSQL released it at commit or rollback)"
        return None

    def _xact_alive(self, state: _XactHold) -> bool:
        """Whether the transaction (and savepoint) that took the lock is still open: no query."""
        from django.db import connections

        connection = connections[state.alias]
        if connection.connection is None or not connection.in_atomic_block:
            return False
        return any(len(hook) > 1 and hook[1] is state.marker for hook in connection.run_on_commit)

    def _xact_release(self, hold: Hold) -> None:
        """A transaction-scoped lock cannot be released early: while its transaction is open this
        leaves it to PostgreSQL (it ends at commit or rollback); after that, it is reported lost,
        since the work between the transaction's end and this release was not under the lock."""
        if not self._xact_alive(hold.data):
            raise LockLost(
                f"{hold.name!r} was a transaction-scoped lock: it ended with its transaction, before release()",
                hold.name,
            )

    def _xact_ensure_fencing(self, connection: Any) -> None:
        # On the caller's connection (an owned one could be behind a pooler), and in a savepoint:
        # a failing CREATE must not abort the caller's transaction.
        if self._fence_ready:
            return
        from django.db import DatabaseError, transaction

        with connection.cursor() as cursor:
            exists = self._xact_row(cursor, "SELECT to_regclass(%s) IS NOT NULL", [self.sequence])[0]
        if not exists:
            try:
                with transaction.atomic(using=self.database), connection.cursor() as cursor:
                    cursor.execute(f"CREATE SEQUENCE IF NOT EXISTS {self.sequence} AS bigint")
            except DatabaseError as exc:
                if _sqlstate(exc) not in ("23505", "42P07"):  # created by someone else meanwhile
                    raise ImproperlyConfigured(
                        f"the fencing sequence {self.sequence} is missing and could not be created ({exc}): "
                        "run the locks_pg migration, or set OPTIONS['FENCING'] = False"
                    ) from exc
        self._fence_ready = True

    # -- asyncio ---------------------------------------------------------------------------------
    async def aacquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        """Session scope: the same single statement as :meth:`acquire`, on an asyncio connection
        (psycopg's ``AsyncConnection``), so a waiting task costs no thread. A task cancelled
        while its statement runs ends that session: whatever it was about to get goes with it."""
        if self.scope == TRANSACTION:
            return await super().aacquire(request, timeout)  # waits in worker threads
        factory = self._factory
        conn = factory.aidle()
        fresh = conn is None
        if conn is None:
            conn = await factory.aconnect()
        if conn.behind_pooler and not factory.allow_pooler:
            factory.aput(conn)
            factory.check_session_safe(conn)
        wait = timeout != 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else 0.0
        while True:
            try:
                if not self._fence_ready:
                    await self._aensure_fencing(conn)
                result = await self._aattempt(conn, request, wait, timeout)
                break
            except pg_errors.LockNotAvailable:
                left = deadline - loop.time() if timeout else 0.0
                if left > 0.001:
                    timeout = left
                    continue
                factory.aput(conn)
                return None
            except pg_errors.QueryCanceled as exc:
                factory.aput(conn)
                raise LockError(f"waiting for {request.name!r} was cancelled on the server", request.name) from exc
            except psycopg.OperationalError as exc:
                conn.finish()
                if fresh:
                    raise BackendUnavailable(f"PostgreSQL connection failed: {_first_line(exc)}") from exc
                conn, fresh = await factory.aconnect(), True
                if conn.behind_pooler and not factory.allow_pooler:
                    factory.aput(conn)
                    factory.check_session_safe(conn)
                if timeout:
                    timeout = max(0.001, deadline - loop.time())
            except psycopg.Error as exc:
                conn.finish()
                raise LockError(
                    f"PostgreSQL refused to lock {request.name!r}: {_first_line(exc)}", request.name
                ) from exc
            except BaseException:
                conn.finish()  # cancelled mid-statement: ending the session frees what it may hold
                raise
        if not wait and result is None:
            factory.aput(conn)
            return None
        return Hold(request, data=conn, token=result if self.fencing else None)

    async def _aattempt(self, conn: AsyncPgConnection, request: LockRequest, wait: bool, timeout: float | None) -> Any:
        label = self._label(request.name)
        set_label = label is not None and label != conn.label
        timed = wait and timeout is not None
        params: list[Any] = []
        if set_label:
            params.append(label)
        if timed:
            assert timeout is not None
            params.append(_milliseconds(timeout))
        params.append(Int8(cast(int, request.key)))
        row = await conn.execute(self._acquire_sql(request.shared, wait, timed, set_label), params)
        if set_label:
            conn.label = label
        return row[-1]

    async def _aensure_fencing(self, conn: AsyncPgConnection) -> None:
        row = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (self.sequence,))
        if not row[0]:
            try:
                await conn.command(f"CREATE SEQUENCE IF NOT EXISTS {self.sequence} AS bigint")
            except (pg_errors.UniqueViolation, pg_errors.DuplicateTable):
                pass
            except pg_errors.InsufficientPrivilege as exc:
                raise ImproperlyConfigured(
                    f"the fencing sequence {self.sequence} does not exist and this role cannot create it: "
                    "run the locks_pg migration, or set OPTIONS['FENCING'] = False"
                ) from exc
        self._fence_ready = True

    async def arelease(self, hold: Hold) -> None:
        conn = hold.data
        if not isinstance(conn, AsyncPgConnection):
            await super().arelease(hold)
            return
        sql = "SELECT pg_advisory_unlock_shared(%s)" if hold.request.shared else "SELECT pg_advisory_unlock(%s)"
        try:
            row = await conn.execute(sql, (Int8(cast(int, hold.key)),))
        except psycopg.OperationalError as exc:
            conn.finish()
            raise LockLost(
                f"the session holding {hold.name!r} ended (connection lost or terminated): {_first_line(exc)}",
                hold.name,
            ) from exc
        except BaseException:
            conn.finish()  # ending the session releases the lock
            raise
        if not row[0]:
            conn.finish()
            raise LockLost(f"the session no longer held {hold.name!r} at release", hold.name)
        self._factory.aput(conn)

    # -- inspection and administration ------------------------------------------------------
    def _run(self, sql: str, params: Any = None, all_rows: bool = False) -> Any:
        """A statement on an idle owned connection (replacing a stale one once)."""
        factory = self._factory
        conn = factory.get()
        for attempt in (1, 2):
            try:
                cursor = conn.cursor
                cursor.execute(sql, params)
                result = cursor.fetchall() if all_rows else cursor.fetchone()
                break
            except psycopg.OperationalError as exc:
                conn.close()
                if attempt == 2:
                    raise BackendUnavailable(f"PostgreSQL connection failed: {_first_line(exc)}") from exc
                conn = factory.connect()
            except BaseException:
                conn.close()
                raise
        factory.put(conn)
        return result

    def is_locked(self, key: Key) -> bool:
        row = self._run(
            "SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 1 "
            f"AND l.granted AND {_THIS_DATABASE} AND {KEY_SQL} = %s)",
            (Int8(cast(int, key)),),
        )
        return bool(row[0])

    def holders(self, prefix: str | None = None) -> list[HolderInfo]:
        """Advisory locks of this database, from ``pg_locks`` joined with ``pg_stat_activity``:
        holder pid, application, client address, since when, how many sessions wait. Names are
        known for locks this backend's clients hold (their session's ``application_name``) and
        this process's own holds; with ``prefix``, only locks whose name is known are listed."""
        from locks_pg.views import advisory_locks

        local: dict[Any, LockName] = {entry.key: entry.hold.request.name for entry in self.holds.entries()}
        rows = advisory_locks(self._run_all, application_name=self.application_name)
        rows = [row for row in rows if row.key is not None]
        waiting: dict[int | None, int] = {}
        for row in rows:
            if not row.granted:
                waiting[row.key] = waiting.get(row.key, 0) + 1
        found = []
        for row in rows:
            if not row.granted:
                continue
            name = local.get(row.key)
            if name is None and row.name is not None and self.make_key(row.name) == row.key:
                name = row.name
            if prefix is not None and (not isinstance(name, str) or not name.startswith(prefix)):
                continue
            found.append(
                HolderInfo(
                    key=cast(int, row.key),
                    name=None if name is None else str(name),
                    shared=row.mode == "ShareLock",
                    owner=row.application_name,
                    pid=row.pid,
                    host=row.client_addr,
                    since=row.since,
                    waiting=waiting.get(row.key, 0),
                    extra={"mode": row.mode, "user": row.user, "state": row.state},
                )
            )
        return found

    def _run_all(self, sql: str, params: Any = None) -> list[Any]:
        return self._run(sql, params, all_rows=True)  # type: ignore[no-any-return]

    def force_release(self, name: LockName) -> int:
        """Terminate every other session that holds ``name`` (PostgreSQL frees its locks with
        it); the number of sessions ended. On PostgreSQL 14+ this waits (up to 5 s) for them to
        exit, so the lock is free when it returns."""
        key = self.make_key(self.validate_name(name))
        conn = self._factory.get()
        wait = ", 5000" if conn.server_version >= 140000 else ""
        self._factory.put(conn)
        try:
            rows = self._run(
                f"SELECT l.pid, pg_terminate_backend(l.pid{wait}) FROM pg_locks l WHERE l.locktype = 'advisory' "
                f"AND l.objsubid = 1 AND l.granted AND {_THIS_DATABASE} AND {KEY_SQL} = %s "
                "AND l.pid <> pg_backend_pid()",
                (Int8(cast(int, key)),),
                all_rows=True,
            )
        except pg_errors.InsufficientPrivilege as exc:
            raise LockError(
                f"not allowed to terminate the holder of {name!r}: {_first_line(exc)} "
                "(needs the holder's role, pg_signal_backend or superuser)",
                name,
            ) from exc
        return sum(1 for _, ended in rows if ended)

    def close(self) -> None:
        self._factory.close_idle()

    def after_fork(self) -> None:
        super().after_fork()
        self._factory.forget()

    # -- used by the lock views and the bench ------------------------------------------------
    def connection_factory(self) -> ConnectionFactory:
        return self._factory


_MAX_LOCK_TIMEOUT_MS = 2_147_483_647  # lock_timeout is an int4 of milliseconds


def _milliseconds(timeout: float) -> str:
    """A wait as ``lock_timeout`` takes it: whole milliseconds, at least 1 (0 would mean no
    limit), at most its range (longer waits go on in parts)."""
    return str(min(_MAX_LOCK_TIMEOUT_MS, max(1, math.ceil(timeout * 1000))))


def _check_database_alias(alias: str) -> None:
    """Refuse an alias that is not a PostgreSQL database early (``manage.py check`` sees it)."""
    from django.conf import settings

    if not settings.configured:
        return  # checked again when the first connection is opened
    if alias not in settings.DATABASES:
        raise ImproperlyConfigured(f"OPTIONS['database'] = {alias!r} is not an alias of DATABASES")
    from django.db import connections

    vendor = connections[alias].vendor
    if vendor != "postgresql":
        raise ImproperlyConfigured(f"DATABASES[{alias!r}] is {vendor}, not PostgreSQL: advisory locks need PostgreSQL")


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a (Django-wrapped) psycopg 2 or 3 error."""
    for candidate in (exc, exc.__cause__):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if state:
            return str(state)
    return None


def _strip_our_query(location: str) -> str:
    """The URL for libpq: without the query parameters that are the backend's own options."""
    if "://" not in location:
        return location
    parts = urlsplit(location)
    if not parts.query:
        return location
    query = [(k, v) for k, v in parse_qsl(parts.query) if k.lower() not in _OUR_OPTIONS]
    return urlunsplit(parts._replace(query=urlencode(query)))
