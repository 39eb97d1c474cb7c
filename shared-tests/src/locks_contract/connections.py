"""This process's own connections, for ``server_connection_count`` fixtures (Linux ``/proc``).

Test runs share their servers with other test runs, so a server's total of connections moves
under a test. A fixture asks the server about this process's connections alone: the server's rows
(``pg_stat_activity``, ``information_schema.PROCESSLIST``, ``CLIENT LIST``) whose client port is
one of :func:`client_ports`. Servers started by the tests themselves may be counted whole, and a
backend without a server counts :func:`open_descriptors`.
"""

from __future__ import annotations

import os


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
