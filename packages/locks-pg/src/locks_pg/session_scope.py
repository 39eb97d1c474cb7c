"""Session scope, threads: every hold of a thread lives on that thread's own server session.

PostgreSQL keeps any number of session advisory locks on one session, so a thread needs one
session, however many locks it holds: a thread with 1,000 holds uses one session, not 1,000.
The session is bound to the thread while it holds anything, and goes back to the idle list when
its last hold is released (so sessions scale with the threads that hold or wait).

* A key is never requested twice on one session (PostgreSQL would grant the session's own
  re-request): when the thread's session already holds the key (another asyncio task of this
  thread holds it through the synchronous API), the request goes to a second session.
* A wait blocks on the thread's session (``pg_advisory_lock`` under a statement-local
  ``lock_timeout``): nothing else of that thread can run meanwhile, and a ``lock_timeout``
  ends the statement only, never the session nor its other locks (autocommit: there is no
  transaction to abort). A deadlock between threads is reported by PostgreSQL as such.
* The watchdog never waits for a thread's session: when the thread is running a statement on it
  (a long wait, say), ``check`` asks ``pg_locks`` from another session.
* A session that ends (terminated, network lost) takes every lock on it: each hold on it is
  reported lost, by ``check`` and by its ``release``.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, cast

import psycopg
from psycopg import errors as pg_errors
from psycopg.types.numeric import Int8

from locks import keeper as keeper_module
from locks.backends import Hold, LockRequest
from locks.exceptions import BackendUnavailable, LockError, LockLost
from locks_pg.connection import _BAD, AsyncPgConnection, ConnectionFactory, Held, PgConnection, _first_line
from locks_pg.keys import KEY_SQL

if TYPE_CHECKING:
    from locks.keys import LockName

#: How long a session that holds nothing any more keeps the label of its last lock before it is
#: named ``APPLICATION_NAME`` again (seconds). Renaming it at once cost the release a second
#: ``set_config``; a lock taken again meanwhile costs no rename at all, and a session that holds
#: nothing is not in ``pg_locks``, so no listing reads its label.
IDLE_LABEL_RESET = 0.5

#: How long a successful watchdog ``SELECT 1`` on a session vouches for all the holds on it.
CHECK_FRESH = 0.1

_MAX_LOCK_TIMEOUT_MS = 2_147_483_647  # lock_timeout is an int4 of milliseconds

_HELD_BY_PID = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 1 "
    f"AND l.granted AND l.pid = %s AND {KEY_SQL} = %s)"
)


_SET_LABEL = "SELECT set_config('application_name', %s, false)"


def _reset_idle_labels(ref: weakref.ref[SessionScope]) -> None:
    # in the keeper's thread; weakly, so a dropped backend is not kept alive until then
    backend = ref()
    if backend is not None:
        backend.reset_idle_labels()


_int8_cache: dict[int, Int8] = {}


def _int8(key: int) -> Int8:
    """``Int8(key)``, remembered for the keys used most recently (a hot path: two per lock)."""
    value = _int8_cache.get(key)
    if value is None:
        if len(_int8_cache) >= 4096:
            _int8_cache.clear()
        value = _int8_cache[key] = Int8(key)
    return value


class _Unlocking(Protocol):
    def _release_sql(self, shared: bool, label: bool) -> str: ...
    def session_label(self, conn: Any, adding: LockName | None) -> str | None: ...


def unlock_statement(backend: _Unlocking, conn: Any, key: int, shared: bool) -> tuple[str, list[Any], str | None]:
    """The statement that unlocks ``key`` on ``conn`` (after an attempt whose outcome is unknown),
    as ``(sql, params, label)``: ``label`` is what the statement names the session.

    Raises:
        psycopg.OperationalError: the session is closed or not idle (it cannot say).
    """
    if conn.broken or conn.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise psycopg.OperationalError("the session is busy or in an unknown state")
    label = backend.session_label(conn, None)
    params: list[Any] = [Int8(key)]
    if label is not None:
        params.append(label)
    return backend._release_sql(shared, label is not None), params, label


@contextlib.contextmanager
def ended_if_unsure(end: Callable[[], object]) -> Iterator[None]:
    """Runs the block; if it fails, ``end()``: what the session holds is not known any more. An
    ``Exception`` stops there; anything else (cancellation, ``KeyboardInterrupt``) goes on."""
    try:
        yield
    except Exception:  # noqa: BLE001 - not sure what the session holds: end it
        end()
    except BaseException:
        end()
        raise


def milliseconds(timeout: float) -> str:
    """A wait as ``lock_timeout`` takes it: whole milliseconds, at least 1 (0 would mean no
    limit), at most its range (longer waits go on in parts)."""
    import math

    return str(min(_MAX_LOCK_TIMEOUT_MS, max(1, math.ceil(timeout * 1000))))


class SessionScope:
    """The synchronous session-scope primitives of :class:`~locks_pg.AdvisoryLockBackend`."""

    if TYPE_CHECKING:
        _factory: ConnectionFactory
        _threads: threading.local
        fencing: bool
        _fence_ready: bool
        _label_reset_due: bool
        application_name: str
        labels: bool
        _labels: dict[LockName, str | None]

        def _ensure_fencing(self, conn: PgConnection) -> None: ...
        def _acquire_sql(self, shared: bool, wait: bool, timed: bool, label: bool) -> tuple[str, int]: ...
        def _release_sql(self, shared: bool, label: bool) -> str: ...
        def session_label(self, conn: PgConnection | AsyncPgConnection, adding: LockName | None) -> str | None: ...
        def _run(self, sql: str, params: Any = None, all_rows: bool = False) -> Any: ...

    # -- where a thread's holds live ------------------------------------------------------------
    def _home(self) -> list[PgConnection]:
        """This thread's sessions (usually one) that hold something."""
        home: list[PgConnection] | None = getattr(self._threads, "sessions", None)
        if home is None:
            home = self._threads.sessions = []
        return home

    def _session_for(self, key: int) -> tuple[PgConnection, bool]:
        """The session to request ``key`` on, and whether it was just opened."""
        home = getattr(self._threads, "sessions", None)
        if home:
            for conn in home:
                if conn.dead is None and key not in conn.holds:
                    return conn, False
        factory = self._factory
        idle_list = factory._idle
        idle = idle_list.pop() if idle_list else None  # the one used last: the common case
        if idle is not None and idle.raw.pgconn.status == _BAD:
            idle.close()
            idle = factory.idle()
        conn = idle or factory.connect()
        if conn.behind_pooler and not factory.allow_pooler:
            factory.put(conn)  # fine for queries, not for holding a session lock
            factory.check_session_safe(conn)
        return conn, idle is None

    def _bind(self, conn: PgConnection) -> None:
        if conn.home is None:
            home = getattr(self._threads, "sessions", None) or self._home()
            home.append(conn)
            conn.home = home

    def _unbind(self, conn: PgConnection) -> None:
        """A session that holds nothing any more goes back to the idle list."""
        home = conn.home
        if home is not None:
            conn.home = None
            if len(home) == 1 and home[0] is conn:
                home.clear()
            else:
                try:
                    home.remove(conn)
                except ValueError:
                    pass
        self._factory.put(conn)

    @staticmethod
    def _session_died(conn: PgConnection, reason: str) -> None:
        """The session ended: every hold on it is lost (their release and check say so)."""
        if conn.dead is None:
            conn.dead = reason
        home = conn.home
        if home is not None:
            conn.home = None
            try:
                home.remove(conn)
            except ValueError:
                pass
        conn.close()

    # -- the primitives -------------------------------------------------------------------------
    def _attempt(self, conn: PgConnection, request: LockRequest, wait: bool, timeout: float | None) -> Any:
        """One acquiring statement on ``conn`` (whose mutex the caller holds): the fencing token
        (``0`` without fencing) when acquired, ``None`` when busy (try-once)."""
        if not self.labels:
            label, set_label = None, False
        else:
            # the common case, a session holding nothing else: its label is the lock's, cached
            label = self._labels.get(request.name) if not conn.holds else None
            if label is None:
                label = self.session_label(conn, request.name)
            set_label = label != conn.label
        timed = wait and timeout is not None
        params: list[Any] = []
        if timed:
            assert timeout is not None
            params.append(milliseconds(timeout))
        params.append(_int8(request.key))  # type: ignore[arg-type]  # int64 keys
        if set_label:
            params.append(label)
        sql, token_at = self._acquire_sql(request.shared, wait, timed, set_label)
        row = conn.execute(sql, params)
        token = row[token_at]
        if token is not None and set_label:
            conn.label = label
        return token

    def _session_acquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        """One statement on this thread's session when the lock is free: ``pg_try_advisory_lock``
        (also first when ``timeout`` is a bound), or a wait on the server (``timeout=None``,
        and a bounded one once the try found the lock busy). A session found dead (server
        restarted, session terminated) is replaced once."""
        key: int = request.key  # type: ignore[assignment]  # int64 keys (no cast(): a hot path)
        conn, fresh = self._session_for(key)
        wait = timeout != 0
        deadline = time.monotonic() + timeout if timeout else 0.0
        # A bounded wait tries first: a free lock then costs no lock_timeout setting.
        first_try = timeout is not None and timeout > 0
        while True:
            try:
                with conn.mutex:
                    if not self._fence_ready:
                        self._ensure_fencing(conn)
                    try:
                        result = self._attempt(conn, request, wait and not first_try, timeout)
                    except pg_errors.QueryCanceled:
                        self._reconcile(conn, request)  # granted just before the cancel, maybe
                        raise
                    except psycopg.Error:
                        raise
                    except BaseException:
                        self._interrupted(conn, request)
                        raise
                if result is None and first_try:
                    first_try = False
                    left = deadline - time.monotonic()
                    if left > 0.001:
                        timeout = left
                        continue
                break
            except pg_errors.LockNotAvailable:
                # lock_timeout: the failed statement took nothing with it. A timeout beyond
                # lock_timeout's range (24.8 days) is waited in parts.
                left = deadline - time.monotonic() if timeout else 0.0
                if left > 0.001:
                    timeout = left
                    continue
                self._not_taken(conn)
                return None
            except pg_errors.QueryCanceled as exc:
                self._not_taken(conn)
                raise LockError(f"waiting for {request.name!r} was cancelled on the server", request.name) from exc
            except pg_errors.DeadlockDetected as exc:
                self._not_taken(conn)
                raise LockError(f"deadlock detected waiting for {request.name!r}", request.name) from exc
            except psycopg.OperationalError as exc:
                self._session_died(conn, f"the session ended: {_first_line(exc)}")
                if fresh:
                    raise BackendUnavailable(f"PostgreSQL connection failed: {_first_line(exc)}") from exc
                conn, fresh = self._factory.connect(), True
                if conn.behind_pooler and not self._factory.allow_pooler:
                    self._factory.put(conn)
                    self._factory.check_session_safe(conn)
                if timeout:
                    timeout = max(0.001, deadline - time.monotonic())
            except psycopg.Error as exc:  # out of shared memory for locks, privileges...
                if conn.broken:
                    self._session_died(conn, f"the session ended: {_first_line(exc)}")
                else:
                    self._not_taken(conn)
                raise LockError(
                    f"PostgreSQL refused to lock {request.name!r}: {_first_line(exc)}", request.name
                ) from exc
        if result is None:
            self._not_taken(conn)
            return None
        holds = conn.holds  # conn.add(...), inlined: the hot path
        held = holds.get(key)
        if held is None:
            holds[key] = Held(request.name, request.shared)
        else:
            held.count += 1
        if conn.home is None:  # _bind, inlined: the hot path
            home = getattr(self._threads, "sessions", None)
            if home is None:
                home = self._home()
            home.append(conn)
            conn.home = home
        return Hold(request, data=conn, token=result if self.fencing else None)

    def _not_taken(self, conn: PgConnection) -> None:
        if not conn.holds and conn.dead is None:
            self._unbind(conn)

    def _interrupted(self, conn: PgConnection, request: LockRequest) -> None:
        """An acquiring statement interrupted (KeyboardInterrupt...): psycopg cancelled it on
        the server, but it may have got the lock first. A session with nothing else on it is
        ended; one with other holds is kept, and the key unlocked on it in case it was taken
        (the session never held it before: its unlock returns false otherwise)."""
        if not conn.holds or conn.broken:
            self._session_died(conn, "interrupted")
            return
        self._reconcile(conn, request)

    def _reconcile(self, conn: PgConnection, request: LockRequest) -> None:
        """Unlock the key of an attempt whose outcome is unknown (the session did not hold it
        before: the unlock says false if the attempt took nothing); a session that cannot say
        is ended."""
        conn.label = None  # unknown now: set again by the next statement
        with ended_if_unsure(lambda: self._session_died(conn, "interrupted while taking another lock")):
            sql, params, label = unlock_statement(self, conn, cast(int, request.key), request.shared)
            conn.execute(sql, params)
            conn.label = label

    def release(self, hold: Hold) -> None:
        conn = hold.data
        if isinstance(conn, AsyncPgConnection):
            from locks_pg.asyncio_scope import release_from_thread

            release_from_thread(conn, hold)
            return
        key: int = hold.key  # type: ignore[assignment]
        with conn.mutex:
            holds = conn.holds  # conn.remove(key), inlined: the hot path
            held = holds.get(key)
            if held is not None:
                held.count -= 1
                if held.count <= 0:
                    del holds[key]
            if conn.dead is not None:
                raise LockLost(f"the session holding {hold.name!r} ended: {conn.dead}", hold.name)
            params: list[Any] = [_int8(key)]
            label = None
            if not self.labels:
                stale = set_label = False
            elif not conn.holds:
                # the last hold: renamed later, in one sweep of the idle sessions (IDLE_LABEL_RESET)
                stale, set_label = conn.label != self.application_name, False
            else:
                label = self.session_label(conn, None)
                stale, set_label = False, label != conn.label
                if set_label:
                    params.append(label)
            sql = self._release_sql(hold.request.shared, set_label)
            try:
                try:
                    row = conn.execute(sql, params)
                except pg_errors.QueryCanceled:
                    # cancelled before or after the unlock: unlock again, it is released either way
                    conn.execute(sql, params)
                    row = (True,)
            except psycopg.OperationalError as exc:
                self._session_died(conn, f"connection lost or terminated: {_first_line(exc)}")
                raise LockLost(
                    f"the session holding {hold.name!r} ended (connection lost or terminated): {_first_line(exc)}",
                    hold.name,
                ) from exc
            except BaseException:
                self._session_died(conn, "interrupted during a release")  # ending it releases the lock
                raise
            if set_label:
                conn.label = label
        if not conn.holds:
            home = conn.home  # _unbind, inlined for the usual case: the thread's only session
            if home is not None and len(home) == 1 and home[0] is conn:
                conn.home = None
                home.clear()
                factory = self._factory  # factory.put(conn), inlined
                idle = factory._idle
                if conn.raw.pgconn.status != _BAD and len(idle) < factory.max_idle:
                    conn.idle_since = time.monotonic()
                    idle.append(conn)
                else:
                    factory.put(conn)
            else:
                self._unbind(conn)
            if stale and not self._label_reset_due:
                self._schedule_label_reset()
        if not row[0]:
            raise LockLost(f"the session no longer held {hold.name!r} at release", hold.name)

    def _schedule_label_reset(self, delay: float = IDLE_LABEL_RESET) -> None:
        if not self._label_reset_due:  # one sweep at a time (a race costs one more, harmlessly)
            self._label_reset_due = True
            keeper_module.keeper.call_later(delay, _reset_idle_labels, weakref.ref(self))

    def reset_idle_labels(self) -> None:
        """Name every session that has been idle for :data:`IDLE_LABEL_RESET` and still carries
        the label of its last lock ``APPLICATION_NAME`` again, each taken off the idle list
        meanwhile. One idle for less is looked at again later: in a loop that takes and releases
        locks, a session is never idle that long, and is never renamed nor taken away."""
        self._label_reset_due = False
        name = self.application_name
        factory = self._factory
        now = time.monotonic()
        later: float | None = None
        for conn in factory.idle_sessions():
            if conn.label == name:
                continue
            wait = conn.idle_since + IDLE_LABEL_RESET - now
            if wait > 0:
                later = wait if later is None else min(later, wait)
                continue
            if not factory.claim(conn):
                continue
            try:
                conn.execute(_SET_LABEL, [name])
                conn.label = name
            except Exception:  # noqa: BLE001 - a session that cannot be renamed is not worth keeping
                conn.close()
            factory.put(conn)  # closed ones are dropped
        if later is not None:
            self._schedule_label_reset(later)

    def check(self, hold: Hold) -> bool:
        """A session lock is held as long as its session lives (only its holder ever unlocks on
        it): a ``SELECT 1`` on the holding session tells, for every hold on it at once. When the
        session is busy (its thread waits on it), ``pg_locks`` is asked from another session."""
        conn = hold.data
        if isinstance(conn, AsyncPgConnection):
            # its connection belongs to an event loop: ask from another session instead
            if conn.dead is not None or conn.broken:
                return False
            return bool(self._run(_HELD_BY_PID, (conn.pid, Int8(cast(int, hold.key))))[0])
        if not isinstance(conn, PgConnection):
            return True  # a transaction-scoped hold
        if conn.dead is not None:
            return False
        if time.monotonic() - conn.checked < CHECK_FRESH:
            return True
        if not conn.mutex.acquire(blocking=False):
            return bool(self._run(_HELD_BY_PID, (conn.pid, Int8(cast(int, hold.key))))[0])
        try:
            if conn.dead is not None:
                return False
            try:
                conn.execute("SELECT 1")
            except psycopg.OperationalError as exc:
                self._session_died(conn, f"connection lost or terminated: {_first_line(exc)}")
                return False
            conn.checked = time.monotonic()
            return True
        finally:
            conn.mutex.release()
