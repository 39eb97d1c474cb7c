"""Session scope, asyncio: the holds of all the tasks of an event loop share a few sessions.

A hold is only a row in its session's lock table, so any number of tasks can hold locks on one
session, as long as no statement on it blocks. Per event loop:

* **holding sessions** (at most ``ASYNC_SESSIONS``, default 4): every acquisition is a
  ``pg_try_advisory_lock`` on one of them, every release a ``pg_advisory_unlock`` on the one
  that took it. Statements on one session take turns (an ``asyncio.Lock``); none of them waits.
  A key is never requested on a session that holds it already (PostgreSQL would grant its own
  re-request): a key held here exclusively is busy for the other tasks without asking.
* **waiting sessions** (at most ``ASYNC_WAITS``, default 4): a task that finds the lock busy
  waits in PostgreSQL's own queue, on a waiting session, with
  ``pg_advisory_lock(k), pg_advisory_unlock(k)`` in one statement: it returns as soon as the
  lock is free (woken by the release itself, whoever releases it), and keeps nothing. The task
  then takes the lock with ``pg_try_advisory_lock`` on a holding session; if someone was faster,
  it waits again. The tasks of one loop that wait for the same key share one such wait; beyond
  ``ASYNC_WAITS`` keys, waiters retry every ``poll_max`` seconds until a waiting session frees.

Fairness: PostgreSQL's queue is first come, first served for blocked sessions; these waits are
not. A waiting task only learns that the lock was free, then competes for it: every session
queued behind its wait (another process's blocking waiter) is granted before its retry, and any
other retrying waiter may win. Under steady contention with blocking waiters an asyncio waiter
may wait until its timeout. The gain: an event loop needs at most ``ASYNC_SESSIONS +
ASYNC_WAITS`` sessions, whatever the number of tasks that hold or wait.

A task cancelled during a statement never breaks the session for the other holds on it: psycopg
cancels the statement on the server and waits for it, and the key is then unlocked in case the
statement took it (statements that an unlock could confuse with another task's shared hold of
the same key run shielded in a task of their own, and a lock they got for a cancelled task is
released at once).
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Any, cast

import psycopg
from psycopg import errors as pg_errors
from psycopg.types.numeric import Int8

from locks.backends import Hold, LockRequest
from locks.exceptions import BackendUnavailable, LockError, LockLost
from locks_pg.admin import IS_LOCKED_SQL
from locks_pg.connection import AsyncPgConnection, ConnectionFactory, _first_line
from locks_pg.session_scope import ended_if_unsure, milliseconds, unlock_statement

if TYPE_CHECKING:
    from locks.keys import LockName

#: What a direct attempt answers when the key is already held on the session it chose.
_STACKED: Any = object()

#: The longest a waiter sleeps between retries while a wait on the server runs for it (a safety
#: net: the wait wakes it as soon as the lock is free).
_RECHECK = 1.0


class _WaitGroup:
    """The tasks of one loop waiting for one key in one mode, and the server wait done for them."""

    __slots__ = ("deadlines", "event", "probe", "started")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.deadlines: list[float | None] = []
        self.probe: asyncio.Task[None] | None = None
        self.started = False

    def until(self, now: float) -> float | None:
        """How long the wait on the server may last: until the last waiter's deadline."""
        if not self.deadlines or None in self.deadlines:
            return None
        return max(cast(list[float], self.deadlines)) - now


class LoopSessions:
    """The asyncio sessions of one event loop (kept in ``ConnectionFactory.loops``)."""

    def __init__(self, max_shared: int, max_waits: int) -> None:
        self.max_shared = max_shared
        self.shared: list[AsyncPgConnection] = []
        self.spare: list[AsyncPgConnection] = []
        self.slots = asyncio.Semaphore(max_waits)
        self.groups: dict[tuple[int, bool], _WaitGroup] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.connecting = 0
        self.opened = asyncio.Event()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a clean-up nobody awaits has nobody to tell

    def drop(self, conn: AsyncPgConnection, reason: str) -> None:
        """A session ended: every hold on it is lost."""
        if conn.dead is None:
            conn.dead = reason
        if conn in self.shared:
            self.shared.remove(conn)
        conn.finish()

    def tidy(self, conn: AsyncPgConnection) -> None:
        """Keep one holding session that holds nothing; close the others."""
        if conn.holds:
            return
        kept = False
        for other in list(self.shared):
            if other.holds:
                continue
            if not kept:
                kept = True  # the first empty one stays for the next acquisition
            elif not other.alock.locked():
                self.retire(other)

    def retire(self, conn: AsyncPgConnection) -> None:
        """Close a holding session that holds nothing. A task about to use it finds it marked
        (``can_take`` is false) and chooses another."""
        conn.dead = "closed while holding nothing"
        self.shared.remove(conn)
        conn.finish()

    def close_idle(self) -> bool:
        """Close the sessions that hold nothing; whether nothing is left (from any thread)."""
        for conn in list(self.shared):
            if not conn.holds and not conn.alock.locked():
                self.retire(conn)
        while self.spare:
            self.spare.pop().finish()
        return not self.shared and not self.groups


def loop_sessions(factory: ConnectionFactory, max_shared: int, max_waits: int) -> LoopSessions:
    loop = asyncio.get_running_loop()
    state: LoopSessions | None = factory.loops.get(loop)
    if state is None:
        for other, sessions in list(factory.loops.items()):
            if other.is_closed():  # a finished asyncio.run(): its sessions can serve no one
                sessions.close_idle()
                factory.loops.pop(other, None)
        state = factory.loops[loop] = LoopSessions(max_shared, max_waits)
    return state


class AsyncScope:
    """The asyncio session-scope primitives of :class:`~locks_pg.AdvisoryLockBackend`."""

    if TYPE_CHECKING:
        _factory: ConnectionFactory
        fencing: bool
        _fence_ready: bool
        async_sessions: int
        async_waits: int
        poll_min: float
        poll_max: float

        async def _aensure_fencing(self, conn: AsyncPgConnection) -> None: ...
        def _acquire_sql(self, shared: bool, wait: bool, timed: bool, label: bool) -> tuple[str, int]: ...
        def _release_sql(self, shared: bool, label: bool) -> str: ...
        def _probe_sql(self, shared: bool, timed: bool) -> str: ...
        def session_label(self, conn: Any, adding: LockName | None) -> str | None: ...

    async def _session_aacquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        state = loop_sessions(self._factory, self.async_sessions, self.async_waits)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        group_key = (cast(int, request.key), request.shared)
        delay = self.poll_min
        while True:
            conn, token = await self._atry(state, request, True)
            if token is _STACKED:
                # Another task holds the key shared on that session: an interrupted statement
                # could not be told from theirs, so this one runs in a task of its own.
                attempt = loop.create_task(self._atry(state, request, False))
                try:
                    conn, token = await asyncio.shield(attempt)
                except asyncio.CancelledError:
                    attempt.add_done_callback(functools.partial(self._undo, state, request))
                    raise
            if token is not None:
                assert conn is not None
                return Hold(request, data=conn, token=token if self.fencing else None)
            now = loop.time()
            if deadline is not None and now >= deadline:
                return None
            group = state.groups.get(group_key)
            if group is None:
                group = state.groups[group_key] = _WaitGroup()
            group.deadlines.append(deadline)
            if group.probe is None:
                group.probe = state.spawn(self._probe(state, group, request))
            pause = _RECHECK if group.started else delay
            if deadline is not None:
                pause = min(pause, deadline - now)
            try:
                await asyncio.wait_for(group.event.wait(), pause)
            except asyncio.TimeoutError:
                delay = min(delay * 2, self.poll_max)
            except asyncio.CancelledError:
                group.deadlines.remove(deadline)
                if not group.deadlines and group.probe is not None and not group.event.is_set():
                    group.probe.cancel()  # nobody waits any more: end the wait on the server
                raise
            if deadline in group.deadlines:
                group.deadlines.remove(deadline)

    async def _session_ais_locked(self, key: int) -> bool:
        """:meth:`is_locked` on one of the loop's holding sessions (a short statement)."""
        state = loop_sessions(self._factory, self.async_sessions, self.async_waits)
        conn = await self._apick(state, key, False)
        if conn is None:
            return True  # a session of this loop holds it
        async with conn.alock:
            try:
                row = await conn.execute(IS_LOCKED_SQL, [Int8(key)])
            except psycopg.Error as exc:
                if conn.broken:
                    state.drop(conn, f"the session ended: {_first_line(exc)}")
                raise BackendUnavailable(f"PostgreSQL connection failed: {_first_line(exc)}") from exc
        return bool(row[0])

    def _undo(self, state: LoopSessions, request: LockRequest, attempt: asyncio.Task[Any]) -> None:
        """The task that asked was cancelled while its statement ran: give back what it got."""
        if attempt.cancelled() or attempt.exception() is not None:
            return
        conn, token = attempt.result()
        if token is not None and conn is not None:
            state.spawn(self._aunlock(state, conn, cast(int, request.key), request.shared, request.name, False))

    async def _apick(self, state: LoopSessions, key: int, shared: bool) -> AsyncPgConnection | None:
        """A holding session on which ``key`` may be requested (opening one if there are fewer
        than ``ASYNC_SESSIONS``); ``None`` when a session of this loop holds the key in a mode
        that excludes the request (the lock is busy: no need to ask)."""
        while True:
            usable = [c for c in state.shared if c.can_take(key, shared, stack=True) and not c.broken]
            for conn in usable:
                if not conn.alock.locked():
                    return conn
            if len(state.shared) + state.connecting < state.max_shared:
                return await self._aopen(state)
            if usable:
                return usable[key % len(usable)]
            if state.connecting:
                await state.opened.wait()
                continue
            return None

    async def _aopen(self, state: LoopSessions) -> AsyncPgConnection:
        factory = self._factory
        state.connecting += 1
        try:
            conn = await factory.aconnect()
        finally:
            state.connecting -= 1
            state.opened.set()
            state.opened = asyncio.Event()
        if conn.behind_pooler and not factory.allow_pooler:
            conn.finish()
            factory.check_session_safe(conn)
        state.shared.append(conn)
        return conn

    async def _atry(
        self, state: LoopSessions, request: LockRequest, direct: bool
    ) -> tuple[AsyncPgConnection | None, Any]:
        """One ``pg_try_advisory_lock`` on a holding session: (session, token or ``None``).

        ``direct``: in the calling task. Cancelled mid-statement, psycopg cancels it on the
        server and waits for it; whether it got the lock is then unknown, so the key is unlocked
        (the session did not hold it: the answer is false otherwise). On a session that holds
        the key already (shared, for another task) the unlock could take theirs: the attempt
        is handed back (``_STACKED``) to run shielded in a task."""
        key = cast(int, request.key)
        retried = False
        while True:
            conn = await self._apick(state, key, request.shared)
            if conn is None:
                return None, None
            async with conn.alock:
                if not conn.can_take(key, request.shared, stack=True):
                    continue  # taken on it meanwhile by another task: choose again
                if direct and key in conn.holds:
                    return conn, _STACKED
                try:
                    if not self._fence_ready:
                        await self._aensure_fencing(conn)
                    label = self.session_label(conn, request.name if key not in conn.holds else None)
                    set_label = label is not None and label != conn.label
                    params: list[Any] = [Int8(key)]
                    if set_label:
                        params.append(label)
                    sql, token_at = self._acquire_sql(request.shared, False, False, set_label)
                    row = await conn.execute(sql, params)
                except pg_errors.QueryCanceled as exc:
                    if direct:
                        await self._areconcile(state, conn, key, request.shared)
                    else:
                        state.drop(conn, "a statement was cancelled")
                    raise LockError(f"taking {request.name!r} was cancelled on the server", request.name) from exc
                except psycopg.OperationalError as exc:
                    state.drop(conn, f"the session ended: {_first_line(exc)}")
                    if retried:
                        raise BackendUnavailable(f"PostgreSQL connection failed: {_first_line(exc)}") from exc
                    retried = True
                    continue
                except psycopg.Error as exc:
                    if conn.broken:
                        state.drop(conn, f"the session ended: {_first_line(exc)}")
                    raise LockError(
                        f"PostgreSQL refused to lock {request.name!r}: {_first_line(exc)}", request.name
                    ) from exc
                except BaseException:
                    if direct:
                        await self._areconcile(state, conn, key, request.shared)
                    else:
                        state.drop(conn, "interrupted")  # the loop is shutting down
                    raise
                token = row[token_at]
                if token is None:
                    return conn, None
                conn.add(key, request.name, request.shared)
                if set_label:
                    conn.label = label
                return conn, token

    async def _probe(self, state: LoopSessions, group: _WaitGroup, request: LockRequest) -> None:
        """Wait in PostgreSQL's queue until the lock is free, on a waiting session, then wake the
        group (its tasks then try to take the lock)."""
        loop = asyncio.get_running_loop()
        key = Int8(cast(int, request.key))
        conn: AsyncPgConnection | None = None
        try:
            async with state.slots:
                if not group.deadlines:
                    return  # its waiters left (or got the lock) while it waited for a slot
                group.started = True
                conn = state.spare.pop() if state.spare else None
                if conn is None or conn.broken:
                    conn = await self._factory.aconnect()
                while group.deadlines:
                    left = group.until(loop.time())
                    if left is not None and left <= 0:
                        break
                    params: list[Any] = [] if left is None else [milliseconds(left)]
                    params += [key, key]
                    try:
                        await conn.execute(self._probe_sql(request.shared, left is not None), params)
                    except pg_errors.LockNotAvailable:
                        continue
                    break
        except asyncio.CancelledError:
            if conn is not None:
                conn.finish()  # ends its wait on the server
                conn = None
            raise
        except psycopg.Error:
            if conn is not None:
                conn.finish()
                conn = None
        finally:
            if state.groups.get((cast(int, request.key), request.shared)) is group:
                del state.groups[(cast(int, request.key), request.shared)]
            group.event.set()
            if conn is not None:
                if conn.broken or state.spare:
                    conn.finish()
                else:
                    state.spare.append(conn)

    async def _areconcile(self, state: LoopSessions, conn: AsyncPgConnection, key: int, shared: bool) -> None:
        """After a statement on ``conn`` was cancelled: unlock ``key`` (which ``conn`` held at
        most once, by this task) in case the statement took it or left it; a session that
        cannot say is ended (its holds are then reported lost)."""
        conn.label = None  # unknown now: set again by the next statement
        with ended_if_unsure(lambda: state.drop(conn, "interrupted")):
            sql, params, label = unlock_statement(self, conn, key, shared)
            await conn.execute(sql, params)
            conn.label = label

    async def _session_arelease(self, hold: Hold) -> None:
        conn = hold.data
        assert isinstance(conn, AsyncPgConnection)
        state = loop_sessions(self._factory, self.async_sessions, self.async_waits)
        key = cast(int, hold.key)
        held = conn.holds.get(key)
        if held is not None and held.count > 1:
            # Shielded: a cancelled unlock could not be told from another task's hold of the key.
            await asyncio.shield(state.spawn(self._aunlock(state, conn, key, hold.request.shared, hold.name, False)))
        else:
            await self._aunlock(state, conn, key, hold.request.shared, hold.name, True)

    async def _aunlock(
        self, state: LoopSessions, conn: AsyncPgConnection, key: int, shared: bool, name: Any, direct: bool
    ) -> None:
        try:
            await conn.alock.acquire()
        except asyncio.CancelledError:
            # cancelled before its turn on the session: the unlock still has to happen
            state.spawn(self._aunlock(state, conn, key, shared, name, False))
            raise
        try:
            held = conn.holds.get(key)
            alone = held is None or held.count == 1
            conn.remove(key)
            if conn.dead is not None:
                raise LockLost(f"the session holding {name!r} ended: {conn.dead}", name)
            label = self.session_label(conn, None)
            set_label = label is not None and label != conn.label
            params: list[Any] = [Int8(key)]
            if set_label:
                params.append(label)
            try:
                try:
                    row = await conn.execute(self._release_sql(shared, set_label), params)
                except pg_errors.QueryCanceled:
                    if not alone:
                        raise
                    # cancelled before or after the unlock: unlock again, it is released either way
                    await conn.execute(self._release_sql(shared, set_label), params)
                    row = (True,)
            except psycopg.OperationalError as exc:
                state.drop(conn, f"connection lost or terminated: {_first_line(exc)}")
                raise LockLost(
                    f"the session holding {name!r} ended (connection lost or terminated): {_first_line(exc)}", name
                ) from exc
            except BaseException:
                if direct and alone:
                    await self._areconcile(state, conn, key, shared)  # unlocked either way
                else:
                    state.drop(conn, "interrupted during a release")
                raise
            if set_label:
                conn.label = label
        finally:
            conn.alock.release()
        state.tidy(conn)
        if not row[0]:
            raise LockLost(f"the session no longer held {name!r} at release", name)


def release_from_thread(conn: AsyncPgConnection, hold: Hold) -> None:
    """An asyncio hold released from a thread (a lost hold's clean-up): the unlock is handed to
    the session's event loop; a session whose loop is gone is ended instead."""
    key = cast(int, hold.key)
    if conn.dead is not None or conn.broken:
        conn.remove(key)
        raise LockLost(f"the session holding {hold.name!r} ended", hold.name)
    loop = conn.loop
    sql = "SELECT pg_advisory_unlock_shared(%s)" if hold.request.shared else "SELECT pg_advisory_unlock(%s)"

    async def unlock() -> None:
        async with conn.alock:
            conn.remove(key)
            await conn.execute(sql, (Int8(key),))

    try:
        if loop.is_closed():
            raise RuntimeError("closed")
        asyncio.run_coroutine_threadsafe(unlock(), loop)
    except RuntimeError:
        conn.remove(key)
        conn.finish()
