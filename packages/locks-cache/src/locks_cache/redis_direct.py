"""The lock scripts, sent straight over redis-py connections of their own.

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
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


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

    def forget(self) -> None:
        """Drops the idle connections without closing them: in a forked child, they are the
        parent's sockets (redis-py closes a connection of another pid without a shutdown)."""
        self._idle = []

    def take_idle(self) -> list[Any]:
        """Removes the idle connections and returns them (for the caller to close)."""
        idle, self._idle = self._idle, []
        return idle

    def _take(self) -> tuple[Any, bool]:
        """An idle connection (or a new one), and whether it was connected before."""
        try:
            connection = self._idle.pop()
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

    async def _send(self, connection: Any, name: str, parts: list[bytes]) -> Any:
        parts[1] = self._evalsha[name]
        await connection.send_packed_command([b"".join(parts)], check_health=False)
        try:
            return await connection.read_response()
        except self._no_script:
            parts[1] = self._eval[name]
            await connection.send_packed_command([b"".join(parts)], check_health=False)
            return await connection.read_response()
