"""The Redis backend's own connections: the lock scripts and the waiters' ``BLPOP``, sent
straight over redis-py connections rather than through redis-py's client.

A call through a redis-py client spends most of its time in Python, not on the wire: the pool
checks the process id twice and reads the socket without blocking to see that the connection is
clean, then come the command packer, the retry and the observability wrappers. Measured with
redis-py 8.1 on loopback: about 90 µs per command, where the round trip itself takes 25 µs. A lock
pays that twice (acquire and release), so the scripts take a shorter road:

* connections built like the client's own (same class and arguments: TLS, auth, db, RESP3, socket
  timeouts), kept in an idle list of their own, one per thread (or asyncio task) at a time;
  asyncio ones (:class:`AsyncDirectScripts`) belong to one event loop;
* ``EVALSHA`` packed here, sent with ``send_packed_command`` and read with ``read_response``;
* ``NOSCRIPT`` (a restarted or flushed server) sends the script's source once with ``EVAL``;
* a forked child drops the connections it inherited (``forget``, from the backend's fork hook);
* a connection that had sat idle and turns out dead (the server restarted or closed it) is
  reconnected and the call sent once more, as redis-py's own retry would; a timeout is never
  retried: the server may be frozen, and the caller must hear of it in one socket timeout.

Redis Cluster clients keep redis-py's path: there, redis-py routes each call to its slot's node.

Waiters block with ``BLPOP`` (:meth:`DirectScripts.pop`; on a cluster, over connections made like
those of the node that owns the key: :func:`node_pops`). Redis checks blocking timeouts only when
its event loop runs, at least ``hz`` times a second (10 by default): a wait whose end matters
bounds the reply on this side too, and gives up on a reply that is late by closing the connection
(the server then drops the blocked call).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

#: What a blocking pop returns when the reply did not come by its end (the connection is dropped).
LATE = object()


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def pop_command(key: str, block: float) -> bytes:
    """``BLPOP key block`` (seconds, fractions allowed since Redis 6), packed."""
    return b"*3\r\n" + _bulk(b"BLPOP") + _bulk(key.encode()) + _bulk(b"%.6f" % block)


def pop_on(connection: Any, command: bytes, until: float | None) -> Any:
    """Sends a packed ``BLPOP`` and reads its reply, waiting for it until ``until`` at the
    latest (:func:`time.monotonic`; ``None``: the socket timeout). :data:`LATE` when it had not
    come by then: the connection must then be dropped."""
    connection.send_packed_command([command], check_health=False)
    if until is not None and not connection.can_read(timeout=max(0.0, until - time.monotonic())):
        return LATE
    return connection.read_response()


async def apop_on(connection: Any, command: bytes, until: float | None) -> Any:
    """:func:`pop_on` on a ``redis.asyncio`` connection."""
    await connection.send_packed_command([command], check_health=False)
    if until is None:
        return await connection.read_response()
    try:
        return await asyncio.wait_for(connection.read_response(), max(0.0, until - time.monotonic()))
    except asyncio.TimeoutError:
        return LATE


def node_pops(pops: dict[str, Any], node: Any, kind: type[_ScriptConnections], exceptions: Any) -> Any:
    """The blocking-pop connections (a ``kind``) for a cluster ``node`` (with ``name`` and, for
    asyncio nodes, ``connection_class`` and ``connection_kwargs``; sync nodes have them on the
    pool of ``redis_connection``), kept in ``pops`` by node name."""
    found = pops.get(node.name)
    if found is None:
        template = node.redis_connection.connection_pool if hasattr(node, "redis_connection") else node
        found = pops[node.name] = kind(template, {}, exceptions)
    return found


def _connected(connection: Any) -> bool:
    state = getattr(connection, "is_connected", None)  # asyncio connections (and recent sync ones)
    if state is None:
        state = getattr(connection, "_sock", None) is not None
    return bool(state)


class _ScriptConnections:
    """What the sync and asyncio runners share: the packed commands and the idle list."""

    def __init__(self, pool: Any, sources: Mapping[str, str], exceptions: Any) -> None:
        self._connection_class = pool.connection_class
        self._connection_kwargs = dict(pool.connection_kwargs)
        self._evalsha = {
            name: _bulk(b"EVALSHA") + _bulk(hashlib.sha1(src.encode()).hexdigest().encode())
            for name, src in sources.items()
        }
        self._eval = {name: _bulk(b"EVAL") + _bulk(src.encode()) for name, src in sources.items()}
        self._no_script = exceptions.NoScriptError
        self._connection_error = exceptions.ConnectionError
        self._timeout_error = exceptions.TimeoutError
        self._error_reply = exceptions.ResponseError
        self._idle: list[Any] = []
        # Blocking pops have connections of their own: one dropped at a deadline (see pop) is
        # connected again when the next pop starts, while the last attempt runs on a warm one.
        self._blocking: list[Any] = []

    def forget(self) -> None:
        """Drops the idle connections without closing them: in a forked child, they are the
        parent's sockets (redis-py closes a connection of another pid without a shutdown)."""
        self._idle = []
        self._blocking = []

    def take_idle(self) -> list[Any]:
        """Removes the idle connections, the scripts' and the blocking pops', and returns them
        (for the caller to close)."""
        idle, self._idle = self._idle + self._blocking, []
        self._blocking = []
        return idle

    def _take(self, idle: list[Any] | None = None) -> tuple[Any, bool]:
        """An idle connection (or a new one), and whether it was connected before."""
        try:
            connection = (self._idle if idle is None else idle).pop()
        except IndexError:
            connection = self._connection_class(**self._connection_kwargs)
        return connection, _connected(connection)

    @staticmethod
    def _parts(keys: Sequence[str], args: Sequence[bytes | int]) -> list[bytes]:
        """The command, with a free slot (index 1) for ``EVALSHA <sha>`` or ``EVAL <source>``."""
        parts = [b"*%d\r\n" % (3 + len(keys) + len(args)), b"", b"$%d\r\n%d\r\n" % (len(str(len(keys))), len(keys))]
        parts.extend(_bulk(key.encode()) for key in keys)
        parts.extend(_bulk(arg if isinstance(arg, bytes) else b"%d" % arg) for arg in args)
        return parts


class DirectScripts(_ScriptConnections):
    """Runs named Lua scripts on connections made from ``pool``'s class and arguments."""

    def __call__(self, name: str, keys: Sequence[str], args: Sequence[bytes | int]) -> Any:
        """The script's reply; redis-py's ``ConnectionError``/``TimeoutError`` when the server
        cannot be reached, its ``ResponseError`` for an error reply."""
        parts = self._parts(keys, args)
        connection, reused = self._take()
        try:
            try:
                reply = self._send(connection, name, parts)
            except self._timeout_error:
                raise
            except self._connection_error:
                if not reused:
                    raise
                reply = self._send(connection, name, parts)  # redis-py reconnects it on send
        except self._error_reply:
            self._idle.append(connection)  # an error reply leaves the connection in step
            raise
        except BaseException:
            # redis-py has closed it on a socket error; anything else (an interrupt mid-read)
            # leaves it in an unknown state: either way it does not go back to the idle list.
            connection.disconnect()
            raise
        self._idle.append(connection)
        return reply

    def pop(self, key: str, block: float, until: float | None) -> bool:
        """``BLPOP key block`` on a connection of its own: whether an element came. The reply is
        waited for until ``until`` at the latest (see :func:`pop_on`)."""
        command = pop_command(key, block)
        connection, reused = self._take(self._blocking)
        try:
            try:
                reply = pop_on(connection, command, until)
            except self._timeout_error:
                raise
            except self._connection_error:
                if not reused:
                    raise
                reply = pop_on(connection, command, until)
        except BaseException:
            connection.disconnect()
            raise
        if reply is LATE:
            # Still blocked on the server: closing the connection ends the call there, so that a
            # release signal is not taken by a waiter that has given up.
            connection.disconnect()
            self._blocking.append(connection)  # the object is kept: building one costs ms
            return False
        self._blocking.append(connection)
        return reply is not None

    def _send(self, connection: Any, name: str, parts: list[bytes]) -> Any:
        parts[1] = self._evalsha[name]
        connection.send_packed_command([b"".join(parts)], check_health=False)
        try:
            return connection.read_response()
        except self._no_script:
            parts[1] = self._eval[name]
            connection.send_packed_command([b"".join(parts)], check_health=False)
            return connection.read_response()

    def close(self) -> None:
        """Closes the idle connections; a later call connects again."""
        for connection in self.take_idle():
            connection.disconnect()


class AsyncDirectScripts(_ScriptConnections):
    """:class:`DirectScripts` on ``redis.asyncio`` connections, for one event loop."""

    async def __call__(self, name: str, keys: Sequence[str], args: Sequence[bytes | int]) -> Any:
        parts = self._parts(keys, args)
        connection, reused = self._take()
        try:
            try:
                reply = await self._send(connection, name, parts)
            except self._timeout_error:
                raise
            except self._connection_error:
                if not reused:
                    raise
                reply = await self._send(connection, name, parts)
        except self._error_reply:
            self._idle.append(connection)
            raise
        except BaseException:
            # Cancelled mid-call, or a socket error: the connection's state is unknown. redis-py
            # has already closed it on most paths; it never goes back to the idle list.
            await connection.disconnect(nowait=True)
            raise
        self._idle.append(connection)
        return reply

    async def pop(self, key: str, block: float, until: float | None) -> bool:
        """:meth:`DirectScripts.pop` on this loop."""
        command = pop_command(key, block)
        connection, reused = self._take(self._blocking)
        try:
            try:
                reply = await apop_on(connection, command, until)
            except self._timeout_error:
                raise
            except self._connection_error:
                if not reused:
                    raise
                reply = await apop_on(connection, command, until)
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        if reply is LATE:
            await connection.disconnect(nowait=True)
            self._blocking.append(connection)
            return False
        self._blocking.append(connection)
        return reply is not None

    async def _send(self, connection: Any, name: str, parts: list[bytes]) -> Any:
        parts[1] = self._evalsha[name]
        await connection.send_packed_command([b"".join(parts)], check_health=False)
        try:
            return await connection.read_response()
        except self._no_script:
            parts[1] = self._eval[name]
            await connection.send_packed_command([b"".join(parts)], check_health=False)
            return await connection.read_response()
