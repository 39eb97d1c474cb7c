"""The Redis backend on asyncio: its primitives on the event loop (:class:`AsyncRedisPrimitives`),
and its ``redis.asyncio`` clients, one per event loop, closed without their loop.

A ``redis.asyncio`` connection belongs to the event loop that opened it, and ``asyncio.run``
closes its loop without telling anyone. A connection of a closed loop can no longer be closed by
awaiting ``disconnect()``, and its transport sits in a reference cycle: the socket would stay open
until the cyclic garbage collector runs (100 ``asyncio.run`` calls on dropped backends left 100
Redis clients open). So the backend closes them itself, synchronously (:func:`close_now`):

* when it is closed or dropped (:meth:`AsyncStates.close`);
* when a new loop first uses it, for the loops that have closed meanwhile: a backend that lives
  across many ``asyncio.run`` calls keeps one loop's connections open, not one set per call.

Only idle connections are closed; one in use by a task finishes its call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from locks.backends import Hold, LockRequest
from locks.deadline import Deadline
from locks.exceptions import LockLost
from locks_cache.redis_connections import AsyncDirectScripts, node_pops

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from locks.exceptions import BackendUnavailable
    from locks.keys import Key, LockName
    from locks_cache.redis_scripts import KeySet


def close_now(connection: Any, loop: asyncio.AbstractEventLoop) -> None:
    """Close a ``redis.asyncio`` connection of ``loop`` at once, whatever state the loop is in.

    A loop running in another thread closes it itself (``call_soon_threadsafe``); a loop running
    in this thread does so at its next step; otherwise (closed, or stopped) the socket is closed
    here. The connection is left disconnected: its pool reconnects it if it is used again."""
    writer = getattr(connection, "_writer", None)
    if writer is None:
        return
    connection._reader = connection._writer = None
    transport = writer.transport
    here = asyncio._get_running_loop() is loop
    if loop.is_running() and not here:
        try:
            loop.call_soon_threadsafe(transport.abort)
            return
        except RuntimeError:  # closed meanwhile
            pass
    else:
        try:
            transport.abort()
        except RuntimeError:  # a closed loop schedules nothing: close the socket below
            pass
        if here:
            return
    # asyncio's selector transports keep their socket in ``_sock``; the loop closes it in
    # ``_call_connection_lost``, which a closed (or stopped) loop never runs.
    sock = getattr(transport, "_sock", None)
    if sock is not None:
        sock.close()
        if loop.is_closed():
            transport._sock = None  # nothing is scheduled that would close it again


class AsyncState:
    """A ``redis.asyncio`` client bound to one event loop, with its scripts."""

    def __init__(self, client: Any, scripts: dict[str, str], exceptions: Any, cluster: bool) -> None:
        self.client = client
        self.scripts = {name: client.register_script(src) for name, src in scripts.items()}
        self.direct = None if cluster else AsyncDirectScripts(client.connection_pool, scripts, exceptions)
        self.exceptions = exceptions
        self.node_pops: dict[str, AsyncDirectScripts] = {}  # cluster: blocking pops per node

    def pops(self, key: str) -> AsyncDirectScripts:
        """The connections a waiter blocks on for ``key``: on a cluster, those of its node."""
        if self.direct is not None:
            return self.direct
        node = self.client.get_node_from_key(key)
        return node_pops(self.node_pops, node, AsyncDirectScripts, self.exceptions)  # type: ignore[no-any-return]

    def run(self, script: str, keys: list[str], args: list[Any]) -> Awaitable[Any]:
        """As :meth:`RedisLockBackend._run`, on this loop."""
        if self.direct is None:
            return cast("Awaitable[Any]", self.scripts[script](keys, args))
        return self.direct(script, keys, args)

    def idle_connections(self) -> list[Any]:
        """The connections no call is using: the scripts' and the client's pool's (or, for a
        cluster, each node's)."""
        idle: list[Any] = []
        if self.direct is not None:
            idle.extend(self.direct.take_idle())
        for pops in self.node_pops.values():
            idle.extend(pops.take_idle())
        pool = getattr(self.client, "connection_pool", None)
        if pool is not None:
            idle.extend(getattr(pool, "_available_connections", ()))
        else:
            for node in self.client.get_nodes():
                idle.extend(getattr(node, "_free", ()))
        return idle

    def close_now(self, loop: asyncio.AbstractEventLoop) -> None:
        for connection in self.idle_connections():
            try:
                close_now(connection, loop)
            except Exception:  # noqa: BLE001 - closing is best effort; the next one may work
                pass


class AsyncStates:
    """The :class:`AsyncState` of each event loop that used the backend.

    Keyed by the loop itself, not weakly: a state's connections refer to their loop, so a weak key
    would never die anyway. Closed loops are dropped as new ones come (see the module's doc)."""

    def __init__(self) -> None:
        self._states: dict[asyncio.AbstractEventLoop, AsyncState] = {}
        self._lock = threading.Lock()

    def get(self, make: Callable[[], AsyncState]) -> AsyncState:
        """The running loop's state, made with ``make`` on first use."""
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            finished: list[tuple[asyncio.AbstractEventLoop, AsyncState]] = []
            with self._lock:
                state = self._states.get(loop)
                if state is None:
                    finished = self._drop_closed()
                    state = self._states[loop] = make()
            for old, stale in finished:
                stale.close_now(old)
        return state

    def _drop_closed(self) -> list[tuple[asyncio.AbstractEventLoop, AsyncState]]:
        finished = [(loop, state) for loop, state in self._states.items() if loop.is_closed()]
        for loop, _ in finished:
            del self._states[loop]
        return finished

    def close(self) -> None:
        """Close every loop's idle connections. The states of loops still open stay: a call in
        flight gives its connection back to them, and the next call connects again."""
        with self._lock:
            states = self._drop_closed() + list(self._states.items())
        for loop, state in states:
            state.close_now(loop)

    def forget(self) -> None:
        """After a fork: drop every state without closing anything (the sockets are the parent's,
        and so is the loops' selector)."""
        self._states = {}
        self._lock = threading.Lock()


class AsyncRedisPrimitives:
    """The asyncio primitives of :class:`~locks_cache.RedisLockBackend`: the sync ones' steps, on
    the event loop's own client (:meth:`_astate`), never in a thread."""

    if TYPE_CHECKING:
        _errors: tuple[type[BaseException], ...]
        _wait_ms: int

        @classmethod
        def executor(cls) -> ThreadPoolExecutor: ...
        def release_quietly(self, hold: Hold) -> None: ...
        def keys_of(self, key: Key) -> KeySet: ...
        def _astate(self) -> AsyncState: ...
        def _acquire_args(self, request: LockRequest, wait_ms: int) -> tuple[Any, list[str], list[Any], bytes]: ...
        def _release_args(self, hold: Hold) -> tuple[str, list[str], list[Any]]: ...
        def _extend_args(self, hold: Hold, ttl: float) -> tuple[list[str], list[Any]]: ...
        def _unavailable(self, exc: BaseException, name: LockName | None = None) -> BackendUnavailable: ...
        def _block_for(self, left_ms: int, remaining: float | None) -> float: ...
        def _reply_until(self, block: float, deadline: Deadline) -> float: ...
        def _backoff(self, lost: int) -> float: ...

    async def _aattempt(self, request: LockRequest, wait_ms: int) -> Hold | int:
        state = self._astate()
        script, keys, args, token = self._acquire_args(request, wait_ms)
        call = asyncio.ensure_future(state.run(script, keys, args))
        try:
            got, value = await asyncio.shield(call)
        except asyncio.CancelledError:
            # The server may still grant it: whatever it grants, give back.
            call.add_done_callback(lambda done: self._release_orphaned_attempt(done, request, token))
            raise
        except self._errors as exc:
            raise self._unavailable(exc, request.name) from exc
        if got:
            return Hold(request, data=token, token=int(value))
        return int(value)

    def _release_orphaned_attempt(self, done: asyncio.Future[Any], request: LockRequest, token: bytes) -> None:
        if done.cancelled() or done.exception() is not None or not done.result()[0]:
            return
        self.executor().submit(self.release_quietly, Hold(request, data=token))

    async def aacquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        """:meth:`acquire` on the event loop (``redis.asyncio``), never in a thread."""
        deadline = Deadline(timeout)
        wake = self.keys_of(request.key).wake
        woken = False
        lost = 0
        while True:
            waiting = not deadline.expired()
            result = await self._aattempt(request, self._wait_ms if waiting and not woken else 0)
            if isinstance(result, Hold):
                return result
            if not waiting:
                return None
            if woken:
                woken = False
                lost += 1
                await asyncio.sleep(deadline.cap(self._backoff(lost)))
                continue
            block = self._block_for(result, deadline.remaining())
            if block >= 0.001:
                woken = await self._apop(wake, block, deadline, request.name)
            else:
                await asyncio.sleep(deadline.cap(block))

    async def _apop(self, wake: str, block: float, deadline: Deadline, name: LockName) -> bool:
        """:meth:`_pop` on the event loop."""
        until = self._reply_until(block, deadline)
        try:
            return await self._astate().pops(wake).pop(wake, block, until)
        except self._errors as exc:
            raise self._unavailable(exc, name) from exc

    async def arelease(self, hold: Hold) -> None:
        script, keys, args = self._release_args(hold)
        try:
            released = await self._astate().run(script, keys, args)
        except self._errors as exc:
            raise self._unavailable(exc, hold.name) from exc
        if not released:
            raise LockLost(f"{hold.name!r} was no longer held (lease expired or forced)", hold.name)

    async def aextend(self, hold: Hold, ttl: float) -> None:
        keys, args = self._extend_args(hold, ttl)
        try:
            extended = await self._astate().run("extend", keys, args)
        except self._errors as exc:
            raise self._unavailable(exc, hold.name) from exc
        if not extended:
            raise LockLost(f"{hold.name!r} was no longer held (lease expired or forced)", hold.name)

    async def ais_locked(self, key: Key) -> bool:
        try:
            return bool(await self._astate().client.exists(self.keys_of(key).lock))
        except self._errors as exc:
            raise self._unavailable(exc) from exc
