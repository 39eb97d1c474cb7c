"""The lock scripts, sent straight over redis-py connections of their own.

A call through a redis-py client spends most of its time in Python, not on the wire: the pool
checks the process id twice and reads the socket without blocking to see that the connection is
clean, then come the command packer, the retry and the observability wrappers. Measured with
redis-py 8.1 on loopback: about 90 µs per command, where the round trip itself takes 25 µs. A lock
pays that twice (acquire and release), so the scripts take a shorter road:

* connections built like the client's own (same class and arguments: TLS, auth, db, RESP3, socket
  timeouts), kept in an idle list of their own, one per thread at a time;
* ``EVALSHA`` packed here, sent with ``send_packed_command`` and read with ``read_response``;
* ``NOSCRIPT`` (a restarted or flushed server) sends the script's source once with ``EVAL``;
* a connection that had sat idle and turns out dead (the server restarted or closed it) is
  reconnected and the call sent once more, as redis-py's own retry would; a timeout is never
  retried: the server may be frozen, and the caller must hear of it in one socket timeout.

Redis Cluster clients keep redis-py's path: there, redis-py routes each call to its slot's node.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


class DirectScripts:
    """Runs named Lua scripts on connections made from ``pool``'s class and arguments."""

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
        self._idle: list[Any] = []
        self._pid = os.getpid()

    def __call__(self, name: str, keys: Sequence[str], args: Sequence[bytes | int]) -> Any:
        """The script's reply; redis-py's ``ConnectionError``/``TimeoutError`` when the server
        cannot be reached, its ``ResponseError`` for an error reply."""
        if self._pid != os.getpid():
            # A forked child must not share its parent's sockets: the parent keeps them (they
            # are closed here without a shutdown, as redis-py does for a foreign pid).
            self._idle = []
            self._pid = os.getpid()
        parts = [b"*%d\r\n" % (3 + len(keys) + len(args)), b"", b"$%d\r\n%d\r\n" % (len(str(len(keys))), len(keys))]
        parts.extend(_bulk(key.encode()) for key in keys)
        parts.extend(_bulk(arg if isinstance(arg, bytes) else b"%d" % arg) for arg in args)
        try:
            connection = self._idle.pop()
        except IndexError:
            connection = self._connection_class(**self._connection_kwargs)
        reused = getattr(connection, "_sock", None) is not None
        try:
            try:
                reply = self._send(connection, name, parts)
            except self._timeout_error:
                raise
            except self._connection_error:
                if not reused:
                    raise
                reply = self._send(connection, name, parts)  # redis-py reconnects it on send
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
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.disconnect()
