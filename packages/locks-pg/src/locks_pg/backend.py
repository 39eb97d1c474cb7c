"""PostgreSQL advisory locks: :class:`AdvisoryLockBackend`.

Two scopes (``OPTIONS['SCOPE']``):

* ``"session"`` (default): each hold is a session advisory lock on a connection the backend
  owns (see :mod:`locks_pg.connection`). A thread's holds share its one session
  (:mod:`locks_pg.session_scope`), an event loop's tasks share a few
  (:mod:`locks_pg.asyncio_scope`): sessions scale with the threads and loops that hold or wait,
  not with the number of locks held. Uncontended acquire is one round trip
  (``pg_try_advisory_lock``), release one (``pg_advisory_unlock``, whose answer is checked);
  threads wait on the server (``pg_advisory_lock`` under a statement-local ``lock_timeout``),
  so a waiter is woken by the release itself, without polling. The fencing token (``FENCING``)
  comes from a sequence in the same statement: no extra round trip.
* ``"transaction"``: ``pg_advisory_xact_lock`` in the caller's open Django transaction
  (``OPTIONS['database']``), released by PostgreSQL at commit or rollback
  (:mod:`locks_pg.transaction_scope`). It works behind pgbouncer in transaction pooling mode,
  where session locks cannot.

The session's ``application_name`` says what it holds, and only that: set in the statement that
takes a lock, reset in the one that releases it.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
)
from locks.keys import Key, KeySpec, LockName
from locks_pg.admin import Administration
from locks_pg.asyncio_scope import AsyncScope
from locks_pg.connection import AsyncPgConnection, ConnectionFactory, PgConnection, PoolerDetected
from locks_pg.session_scope import SessionScope
from locks_pg.transaction_scope import TransactionRequired, TransactionScope

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
        "async_sessions",
        "async_waits",
    }
)


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


class AdvisoryLockBackend(SessionScope, AsyncScope, TransactionScope, Administration, BaseLockBackend):
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
      ``ASYNC_SESSIONS`` (4) and ``ASYNC_WAITS`` (4): the most holding and waiting sessions of
      one event loop (see :mod:`locks_pg.asyncio_scope`);
      ``APPLICATION_NAME`` (``"locks"``): a session holding one lock is named
      ``<it>:<lock name>``, one holding ``n`` locks ``<it>[n]:<the oldest one's name>``, one holding
      nothing ``<it>``, so ``pg_stat_activity`` and :meth:`holders` show lock names; ``KEEPALIVE`` (10 s): TCP
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
        self.async_sessions = _as_number(ours.get("async_sessions", 4), "ASYNC_SESSIONS", int, 1)
        self.async_waits = _as_number(ours.get("async_waits", 4), "ASYNC_WAITS", int, 1)
        self._threads = threading.local()  # each thread's sessions: see locks_pg.session_scope
        self._fence_ready = not self.fencing
        self._sql_cache: dict[tuple[Any, ...], tuple[str, int]] = {}
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
        unlock = "pg_advisory_unlock_shared(%s)" if shared else "pg_advisory_unlock(%s)"
        return f"SELECT {unlock}, set_config('application_name', %s, false)" if label else f"SELECT {unlock}"

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

    # -- the primitives -----------------------------------------------------------------------
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
        SessionScope.release(self, hold)

    def check(self, hold: Hold) -> bool:
        if self.scope == TRANSACTION:
            return True
        return SessionScope.check(self, hold)

    async def aacquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        """Session scope: on the event loop's shared sessions (psycopg's ``AsyncConnection``), so
        a waiting task costs no thread; transaction scope waits in worker threads."""
        if self.scope == TRANSACTION:
            return await super().aacquire(request, timeout)
        return await self._session_aacquire(request, timeout)

    async def ais_locked(self, key: Key) -> bool:
        if self.scope == TRANSACTION:
            return await super().ais_locked(key)
        return await self._session_ais_locked(cast(int, key))

    async def arelease(self, hold: Hold) -> None:
        if not isinstance(hold.data, AsyncPgConnection):
            await super().arelease(hold)
            return
        await self._session_arelease(hold)

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


def _strip_our_query(location: str) -> str:
    """The URL for libpq: without the query parameters that are the backend's own options."""
    if "://" not in location:
        return location
    parts = urlsplit(location)
    if not parts.query:
        return location
    query = [(k, v) for k, v in parse_qsl(parts.query) if k.lower() not in _OUR_OPTIONS]
    return urlunsplit(parts._replace(query=urlencode(query)))
