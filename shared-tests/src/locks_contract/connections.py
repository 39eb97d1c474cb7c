"""This process's own connections, for ``server_connection_count`` fixtures (Linux ``/proc``).

Test runs share their servers with other test runs, so a server's total of connections moves
under a test. A fixture asks the server about this process's connections alone: the server's rows
(``pg_stat_activity``, ``information_schema.PROCESSLIST``, ``CLIENT LIST``) whose client port is
one of :func:`client_ports`. Servers started by the tests themselves may be counted whole, and a
backend without a server counts :func:`open_descriptors`.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _socket_inodes() -> set[str]:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def client_ports(server_port: int) -> set[int]:
    """The local ports of this process's TCP sockets connected to ``server_port`` (any host)."""
    inodes = _socket_inodes()
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)  # the header
                rows = [line.split() for line in lines]
        except OSError:
            continue
        for row in rows:
            local, remote, inode = row[1], row[2], row[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == server_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def open_descriptors() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


def processlist_clients(connection: Any, ports: set[int]) -> int:
    """MySQL/MariaDB: the sessions in ``information_schema.PROCESSLIST`` (but the asking one,
    opened on ``connection``, a DB-API connection) whose client port is one of ``ports``."""
    cursor = connection.cursor()
    cursor.execute("SELECT HOST FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID()")
    return sum(1 for (host,) in cursor.fetchall() if _client_port(host) in ports)


def _client_port(host: str | None) -> int | None:
    """The client port of a processlist ``HOST`` (``127.0.0.1:54321``)."""
    port = (host or "").rpartition(":")[2]
    return int(port) if port.isdigit() else None


@contextmanager
def cyclic_gc_off() -> Iterator[None]:
    """Only reference counting frees objects inside the block, as in a process whose cyclic
    collector has not run yet (collected once before, enabled again after, if it was)."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
