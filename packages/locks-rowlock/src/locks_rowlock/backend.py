"""Leases in a lock table, on any Django database (PostgreSQL, MySQL/MariaDB, SQLite).

A lock is a row of ``locks_rowlock_lock``, held while its ``expires_at`` is later than the
database's clock. Acquire is one conditional upsert (take the row when it is free or expired),
release and extend one conditional update on the hold's fencing token (``version``): an old
holder whose lease expired and was taken finds another version and gets ``LockLost`` without
touching the new holder's row.

Every statement runs in autocommit on a connection the backend owns (see
:mod:`locks_rowlock.connections`): a lock taken inside the caller's ``transaction.atomic()`` is
visible at once and survives the caller's rollback.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from django.core.exceptions import ImproperlyConfigured

from locks.backends import (
    DEFAULT_LEASE,
    FENCING,
    FORCE_RELEASE,
    LISTING,
    NOTIFY,
    TTL,
    WATCHDOG,
    BackendSpec,
    BaseLockBackend,
    Hold,
    HolderInfo,
    LockRequest,
)
from locks.deadline import Deadline
from locks.exceptions import BackendUnavailable, LockLost
from locks.keys import Key, KeySpec, LockName
from locks_rowlock.connections import (
    ConnectionPool,
    ensure_django_settings,
    off_loop,
    own_settings,
    settings_from_url,
    vendor_of_alias,
)
from locks_rowlock.dialects import DIALECTS, TABLE, Dialect, PostgreSQLDialect
from locks_rowlock.options import ROWLOCK_OPTIONS, as_seconds, driver_keywords, driver_values
from locks_rowlock.rows import digest_of, display_name, unix_time
from locks_rowlock.table import create_table

T = TypeVar("T")

#: Keys fit the ``lock_key`` column; longer or unsafe names are hashed by ``locks.keys``.
KEY_SPEC = KeySpec(max_length=200)
_FIELD_MAX = 255


class RowLockBackend(BaseLockBackend):
    """Leases in a lock table, through a Django ``DATABASES`` entry or a URL.

    ``LOCATION``: empty (use ``OPTIONS["DATABASE"]``) or a ``rowlock+postgresql://``,
    ``rowlock+mysql://`` or ``rowlock+sqlite:///path`` URL.

    ``OPTIONS``: :data:`~locks_rowlock.options.ROWLOCK_OPTIONS` (keys in any case). With a URL,
    the database driver's own parameters (libpq's, mysqlclient's, ``sqlite3``'s) pass through;
    any other key is refused.
    """

    capabilities: ClassVar[frozenset[str]] = frozenset({TTL, FENCING, LISTING, FORCE_RELEASE, WATCHDOG})
    key_spec: ClassVar[KeySpec] = KEY_SPEC
    poll_min: ClassVar[float] = 0.001
    poll_max: ClassVar[float] = 0.025
    notify_poll: ClassVar[float] = 0.25

    OPTIONS = ROWLOCK_OPTIONS
    driver_name = "the database driver"

    def __init__(
        self, alias: str = "default", location: str | None = None, options: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(alias, location, options)
        settings = self.settings
        where = f"{type(self).__name__} (alias {alias!r})"
        database = settings["DATABASE"]
        create = settings["CREATE_TABLE"]
        self.default_ttl: float = settings["DEFAULT_TTL"]
        for what in ("POLL_MIN", "POLL_MAX", "NOTIFY_POLL"):
            setattr(self, what.lower(), settings[what])
        if self.poll_min > self.poll_max:
            raise ImproperlyConfigured(f"{where}: OPTIONS['POLL_MIN'] must not exceed OPTIONS['POLL_MAX']")
        if location:
            if database is not None:
                raise ImproperlyConfigured(f"{where}: give either a LOCATION URL or OPTIONS['DATABASE'], not both")
            if not isinstance(location, str):
                raise ImproperlyConfigured(f"{where}: LOCATION must be a URL str, not {type(location).__name__}")
            ensure_django_settings()
            try:
                base = settings_from_url(location)
            except ValueError as exc:
                raise ImproperlyConfigured(f"{where}: {exc}") from None
            self.database = None
            self.create_table = True if create is None else create
            # What is not ours goes to the driver.
            db_settings = own_settings(base, driver_values(self.options))
        else:
            if self.options:
                raise ImproperlyConfigured(
                    f"{where}: driver parameters ({', '.join(sorted(self.options))}) are taken with a LOCATION "
                    "URL only; with OPTIONS['DATABASE'], give them in that DATABASES entry's OPTIONS"
                )
            self.database = "default" if database is None else database
            self.create_table = False if create is None else create
            db_settings = self._settings_of_alias(self.database, where)
        self._pool = ConnectionPool(db_settings, f"locks-{alias}")
        dialect_class = DIALECTS.get(self._pool.vendor)
        if dialect_class is None:
            raise ImproperlyConfigured(
                f"the lock-table backend supports PostgreSQL, MySQL/MariaDB and SQLite, not {self._pool.vendor!r}"
            )
        self.vendor = self._pool.vendor
        self.dialect: Dialect = dialect_class(TABLE)
        self.notify = settings["NOTIFY"] and isinstance(self.dialect, PostgreSQLDialect)
        # The vendor of a URL is known only now (capabilities_from read the DATABASES alias).
        self.capabilities = type(self).capabilities | ({NOTIFY} if self.notify else set())  # type: ignore[misc]
        if self.notify:
            from locks_rowlock.notify import Listener

            self._listener: Listener | None = Listener(self._pool, PostgreSQLDialect.channel)
        else:
            self._listener = None
        self._table_checked = not self.create_table
        self._table_lock = threading.Lock()

    @classmethod
    def driver_options(cls) -> frozenset[str]:
        return driver_keywords()

    @classmethod
    def capabilities_from(cls, settings: Mapping[str, Any]) -> frozenset[str]:
        """``notify`` with ``NOTIFY`` on a PostgreSQL database (read from the ``DATABASES`` entry
        of ``DATABASE``, without connecting; with a ``LOCATION`` URL, from its scheme once built)."""
        if settings["NOTIFY"] and vendor_of_alias(settings["DATABASE"] or "default") == "postgresql":
            return cls.capabilities | {NOTIFY}
        return cls.capabilities

    @staticmethod
    def _settings_of_alias(database: str, where: str) -> dict[str, Any]:
        from django.db import connections

        try:
            entry = connections.settings[database]
        except Exception as exc:  # ConnectionDoesNotExist, or settings not configured
            raise ImproperlyConfigured(
                f"{where}: OPTIONS['DATABASE'] = {database!r} is not in DATABASES: {exc}"
            ) from exc
        return own_settings(entry)

    def spec(self) -> BackendSpec:
        base = super().spec()
        # A DATABASES alias means Django settings: the worker process configures Django first.
        setup = None if self.location else "locks_rowlock.setup_django"
        return BackendSpec(base.backend, base.location, base.options, setup)

    # -- running statements ------------------------------------------------------------------
    def _run(self, work: Callable[[Any], T], *, name: LockName | None = None, retry: bool = True) -> T:
        """Run ``work(cursor)`` on one of the backend's connections.

        A connection that cannot be opened raises :class:`BackendUnavailable`. A reused connection
        that fails (it died while idle: server restart, proxy timeout) is dropped and ``work``
        retried once on a fresh one when ``retry``.
        """
        if not self._table_checked:
            self._ensure_table()
        while True:
            wrapper, reused = self._pool.get()
            try:
                if wrapper.connection is None:
                    off_loop(wrapper.ensure_connection)
            except Exception as exc:  # django.db.utils.Error and driver errors alike
                self._pool.discard(wrapper)
                raise BackendUnavailable(f"cannot reach the lock table's database: {exc}", name) from exc
            connection = wrapper.connection
            cursor = connection.cursor()
            try:
                result = work(cursor)
            except wrapper.Database.Error as exc:
                _close(cursor)
                if self._is_busy(exc):
                    self._pool.put(wrapper)
                    raise _Busy from exc
                broken = not _usable(wrapper)
                if broken:
                    self._pool.discard(wrapper)
                    if reused and retry:
                        continue
                    raise BackendUnavailable(f"lost the connection to the lock table's database: {exc}", name) from exc
                self._pool.put(wrapper)
                text = str(exc)
                if (self.dialect.table in text and "exist" in text) or "no such table" in text:
                    raise ImproperlyConfigured(
                        f"the lock table {TABLE!r} is missing or out of date: add 'locks_rowlock' to "
                        f"INSTALLED_APPS and run `manage.py migrate` on the {self.database or 'URL'} database ({exc})"
                    ) from exc
                raise
            except BaseException:
                _close(cursor)
                self._pool.discard(wrapper)
                raise
            _close(cursor)
            self._pool.put(wrapper)
            return result

    def _is_busy(self, exc: BaseException) -> bool:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        if code is not None and code in self.dialect.busy_codes:
            return True
        messages = getattr(self.dialect, "busy_messages", ())
        return any(m in str(exc) for m in messages)

    def _execute(self, sql: str, params: tuple[Any, ...], **kwargs: Any) -> int:
        statement = self.dialect.sql(sql)

        def work(cursor: Any) -> int:
            cursor.execute(statement, params)
            count = cursor.rowcount
            if cursor.description is not None:
                count = len(cursor.fetchall())
            return int(count)

        return self._run(work, **kwargs)

    def _fetch(self, sql: str, params: tuple[Any, ...], **kwargs: Any) -> list[tuple[Any, ...]]:
        statement = self.dialect.sql(sql)

        def work(cursor: Any) -> list[tuple[Any, ...]]:
            cursor.execute(statement, params)
            return list(cursor.fetchall())

        return self._run(work, **kwargs)

    def _ensure_table(self) -> None:
        with self._table_lock:
            if self._table_checked:
                return
            wrapper = self._pool.new()
            try:
                off_loop(wrapper.ensure_connection)
                if TABLE not in wrapper.introspection.table_names():
                    create_table(wrapper)
            except Exception as exc:
                raise BackendUnavailable(f"cannot reach the lock table's database: {exc}") from exc
            finally:
                self._pool.discard(wrapper)
            self._table_checked = True

    # -- the primitives ---------------------------------------------------------------------
    def try_acquire(self, request: LockRequest) -> Hold | None:
        return self._try(request, waiting=False)

    def _try(self, request: LockRequest, waiting: bool) -> Hold | None:
        """One attempt. ``waiting``: the caller is counted among the row's waiters (NOTIFY), and
        an attempt that takes the lock counts it out in the same statement."""
        digest = digest_of(request.key)
        owner = request.owner
        row = (
            digest,
            str(request.key),
            display_name(request.name),
            owner.host[:_FIELD_MAX],
            owner.pid,
            owner.thread[:_FIELD_MAX],
            owner.id[:32],
        )
        ttl = request.ttl if request.ttl is not None else self.default_ttl or DEFAULT_LEASE
        try:
            version = self._run(lambda cursor: self.dialect.acquire(cursor, row, ttl, waiting), name=request.name)
        except _Busy:
            return None
        if version is None:
            return None
        return Hold(request, data=digest, token=version)

    def acquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        """Wait for the lock: polling with backoff and jitter, or, with ``NOTIFY``, woken by the
        release.

        A failed upsert is not free on MySQL and SQLite: it locks the row (or the database file)
        and queues behind the holder's release. There a waiter that wakes on its timer first
        looks with a plain read, and only tries when the lease looks free or expired; one woken
        by a release tries at once. On PostgreSQL a busy attempt is itself a read (see
        :class:`~locks_rowlock.dialects.PostgreSQLDialect`).
        """
        started = time.monotonic()
        deadline = Deadline(timeout)  # from the call: the first attempt is part of the wait
        hold = self.try_acquire(request)
        if hold is not None or timeout == 0:
            return hold
        digest = digest_of(request.key)
        listener = self._listener
        # Subscribe, then look again: a release between the failed try and the wait still wakes us.
        event = listener.subscribe(digest) if listener is not None else None
        # Counted among the row's waiters, so that the release notifies (a release with nobody
        # counted sends no NOTIFY); counted out by the attempt that succeeds, or below.
        counted = event is not None and self._count_waiter(digest, +1)
        delay = self.poll_min
        woken = False
        try:
            while True:
                if event is not None:
                    event.clear()
                if woken or self.dialect.cheap_busy_acquire or not self._looks_held(digest):
                    hold = self._try(request, counted)
                    if hold is not None:
                        counted = False
                        return hold
                if woken:
                    # Another waiter won this release. Under heavy contention every release
                    # wakes every waiter of every process: losers back off before listening
                    # again (a release meanwhile still sets the event), so a herd cannot
                    # starve the holder of CPU and row access.
                    pause = delay * random.uniform(0.5, 1.0)
                    delay = self.next_poll_delay(delay, time.monotonic() - started)
                    deadline.sleep(pause)
                    if deadline.expired():
                        woken = False
                        continue  # the back-off ran into the deadline: one last look
                if deadline.expired():
                    return None
                if listener is not None and listener.ready.is_set():
                    pause = self.notify_poll * random.uniform(0.8, 1.0)
                else:
                    pause = delay * random.uniform(0.5, 1.0)  # jitter: waiters do not retry in step
                    delay = self.next_poll_delay(delay, time.monotonic() - started)
                # the last pause ends at the deadline; the attempt after it is the last one
                pause = deadline.cap(pause)
                if event is not None:
                    woken = event.wait(pause)
                else:
                    time.sleep(pause)
        finally:
            if listener is not None and event is not None:
                listener.unsubscribe(digest, event)
            if counted:
                self._count_waiter(digest, -1)

    def _count_waiter(self, digest: str, step: int) -> bool:
        """Count a waiter in (+1) or out (-1) of the row's ``waiters``; whether the row was there
        (no row: nobody holds the lock, and the next attempt takes it). Never raises: a count
        that fails costs a waiter the fallback poll (``NOTIFY_POLL``), not the lock."""
        sql = self.dialect.wait_sql if step > 0 else self.dialect.unwait_sql  # type: ignore[attr-defined]
        try:
            return self._execute(sql, (digest,)) == 1
        except Exception:  # noqa: BLE001 - see above
            return False

    def _looks_held(self, digest: str) -> bool:
        try:
            return bool(self._fetch(self.dialect.is_locked_sql, (digest,)))
        except _Busy:
            return True

    def release(self, hold: Hold) -> None:
        sql = self.dialect.release_notify_sql if self.notify else self.dialect.release_sql  # type: ignore[attr-defined]
        if self._execute_settled(sql, (hold.data, hold.token), hold.name) != 1:
            raise LockLost(
                f"{hold.name!r} was no longer held at release: its lease expired and another holder took it, "
                "or it was force-released",
                hold.name,
            )

    def extend(self, hold: Hold, ttl: float) -> None:
        params = (self.dialect.lease(ttl), hold.data, hold.token)
        if self._execute_settled(self.dialect.extend_sql, params, hold.name) != 1:
            raise LockLost(f"{hold.name!r} could not be extended: another holder took it or it was forced", hold.name)

    def _execute_settled(self, sql: str, params: tuple[Any, ...], name: LockName | None) -> int:
        # Release and extend must not give up on a busy database: wait out contention.
        deadline = time.monotonic() + 30.0
        while True:
            try:
                return self._execute(sql, params, name=name, retry=False)
            except _Busy:
                if time.monotonic() > deadline:
                    raise BackendUnavailable(f"the lock table stayed busy for 30 s ({name!r})", name) from None
                time.sleep(0.01)

    def check(self, hold: Hold) -> bool:
        return bool(self._fetch(self.dialect.check_sql, (hold.data, hold.token), name=hold.name))

    def is_locked(self, key: Key) -> bool:
        try:
            return bool(self._fetch(self.dialect.is_locked_sql, (digest_of(key),)))
        except _Busy:
            return True

    def holders(self, prefix: str | None = None) -> list[HolderInfo]:
        rows = self._fetch(self.dialect.holders_sql, ())
        found = []
        for key, name, host, pid, thread, owner_uuid, version, acquired_at, expires_at in rows:
            if prefix is not None and not str(name).startswith(prefix):
                continue
            found.append(
                HolderInfo(
                    key=key,
                    name=name,
                    owner=f"{host}:{pid}:{thread}",
                    pid=pid,
                    host=host,
                    since=unix_time(acquired_at),
                    expires_at=unix_time(expires_at),
                    token=int(version),
                    extra={"owner_id": owner_uuid, "thread": thread},
                )
            )
        found.sort(key=lambda info: (str(info.name), str(info.key)))
        return found

    def force_release(self, name: LockName) -> int:
        key = self.make_key(self.validate_name(name))
        sql = self.dialect.force_release_notify_sql if self.notify else self.dialect.force_release_sql  # type: ignore[attr-defined]
        return self._execute_settled(sql, (digest_of(key),), name)

    def force_release_rows(self, digests: list[str]) -> int:
        """Force-release rows by digest (the admin's action); the number of live holds broken."""
        sql = self.dialect.force_release_notify_sql if self.notify else self.dialect.force_release_sql  # type: ignore[attr-defined]
        return sum(self._execute_settled(sql, (digest,), None) for digest in digests)

    def remove_stale_rows(self, older_than: float = 86400.0) -> int:
        """Delete rows released or expired more than ``older_than`` seconds ago (by the database's
        clock); the number deleted. A held lock's row is never deleted; a deleted name's next
        fencing token still exceeds every earlier one (see :mod:`locks_rowlock.dialects`)."""
        seconds = as_seconds(older_than, "older_than")
        if seconds < 60:
            raise ValueError("older_than must be at least 60 seconds: a younger row may still be in use")
        return self._execute_settled(self.dialect.stale_sql, tuple(self.dialect.stale_params(seconds)), None)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
        self._pool.close()

    def after_fork(self) -> None:
        super().after_fork()
        if self._listener is not None:
            self._listener.forget()


class _Busy(Exception):
    """The database reported contention on the row (deadlock victim, busy file)."""


def _close(cursor: Any) -> None:
    try:
        cursor.close()
    except Exception:  # noqa: BLE001 - the connection may be gone
        pass


def _usable(wrapper: Any) -> bool:
    try:
        return bool(wrapper.is_usable())
    except Exception:  # noqa: BLE001
        return False
