"""Servers that tests start for themselves, on free loopback ports: memcached and PgBouncer.

Each is a context manager that starts the server, waits until it accepts connections, yields a
:class:`Server` (its port and URL) and stops it on exit::

    from locks_contract.servers import start_memcached, start_pgbouncer

    with start_memcached() as memcached:
        backend = MemcachedLockBackend(location=memcached.url)

    with start_pgbouncer("postgresql://postgres@127.0.0.1:5432/app") as bouncer:
        ...  # bouncer.url: the same database through PgBouncer, in transaction pooling

The plugin also registers session fixtures on them: ``memcached_server`` and ``pgbouncer_server``
(in front of ``pgbouncer_upstream``, a fixture you may override; by default ``LOCKS_PG_URL``).

A binary that is not installed, or a server that does not start, is reported through
:func:`~locks_contract.plugin.server_unreachable`: the test is skipped, or fails where servers are
required (``--locks-require-servers``, ``LOCKS_REQUIRE_SERVERS=1``). The binaries are looked up
in ``LOCKS_MEMCACHED_BIN`` / ``LOCKS_PGBOUNCER``, then on ``PATH``, then at ``/usr/bin/memcached``
and ``/usr/sbin/pgbouncer`` (where Debian's packages put them).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest

from locks_contract.plugin import server_unreachable

__all__ = [
    "Server",
    "free_port",
    "memcached_server",
    "pgbouncer_server",
    "pgbouncer_upstream",
    "port_is_free",
    "start_memcached",
    "start_pgbouncer",
    "wait_for_port",
]

HOST = "127.0.0.1"
MEMCACHED_BIN_ENV = "LOCKS_MEMCACHED_BIN"
PGBOUNCER_BIN_ENV = "LOCKS_PGBOUNCER"
#: The PostgreSQL that ``pgbouncer_upstream`` points PgBouncer at, unless overridden.
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Server:
    """A server started by :func:`start_memcached` or :func:`start_pgbouncer`."""

    #: The URL a backend (or a driver) connects with.
    url: str
    host: str
    port: int
    process: subprocess.Popen[bytes]


def free_port() -> int:
    """A loopback TCP port that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether ``port`` can be bound on the loopback interface now."""
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def wait_for_port(port: int, within: float, host: str = HOST) -> bool:
    """Whether something accepts connections on ``host:port`` within ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def _binary(env: str, name: str, default: str) -> str:
    found = os.environ.get(env) or shutil.which(name) or default
    if not os.path.exists(found):
        server_unreachable(f"{name} is not installed ({found}; set {env} to its path)")
    return found


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextmanager
def start_memcached(
    port: int | None = None, *, memory_mb: int = 64, threads: int = 2, within: float = 10.0
) -> Iterator[Server]:
    """A memcached on ``127.0.0.1:port`` (a free port by default), TCP only, stopped on exit."""
    binary = _binary(MEMCACHED_BIN_ENV, "memcached", "/usr/bin/memcached")
    port = free_port() if port is None else port
    command = [binary, "-l", HOST, "-p", str(port), "-U", "0", "-m", str(memory_mb), "-t", str(threads)]
    if os.geteuid() == 0:  # memcached refuses to run as root unless told which user to be
        command += ["-u", "root"]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        try:
            if not wait_for_port(port, within):
                _stop(process)
                log.seek(0)
                server_unreachable(f"memcached did not start on port {port}: {log.read().decode(errors='replace')}")
            yield Server(f"memcached://{HOST}:{port}", HOST, port, process)
        finally:
            _stop(process)


@contextmanager
def start_pgbouncer(
    upstream: str,
    port: int | None = None,
    *,
    pool_mode: str = "transaction",
    pool_size: int = 20,
    max_client_conn: int = 500,
    within: float = 10.0,
) -> Iterator[Server]:
    """PgBouncer on ``127.0.0.1:port`` (a free port by default) in front of the PostgreSQL at
    ``upstream`` (a ``postgresql://`` URL), stopped on exit.

    Every database of the upstream server is served (``* =``), with ``pool_mode`` (transaction
    pooling by default, where session-level state such as advisory locks does not survive a
    transaction). Clients are trusted; the upstream URL's user is PgBouncer's admin user too
    (``SHOW CLIENTS`` on the ``pgbouncer`` database). The yielded URL is the upstream one with
    PgBouncer's host and port, without the password."""
    binary = _binary(PGBOUNCER_BIN_ENV, "pgbouncer", "/usr/sbin/pgbouncer")
    port = free_port() if port is None else port
    target = urlsplit(upstream)
    user = unquote(target.username or "postgres")
    password = unquote(target.password or "")
    # PgBouncer refuses to run as root: it then runs as "nobody", who must read its files.
    directory = Path(tempfile.mkdtemp(prefix="locks-pgbouncer-"))
    directory.chmod(0o755)
    server = f"host={target.hostname or HOST} port={target.port or 5432}"
    (directory / "userlist.txt").write_text(f'"{user}" "{password}"\n')
    (directory / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = {server}\n"
        "[pgbouncer]\n"
        f"listen_addr = {HOST}\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {directory / 'userlist.txt'}\n"
        f"pool_mode = {pool_mode}\ndefault_pool_size = {pool_size}\nmax_client_conn = {max_client_conn}\n"
        f"admin_users = {user}\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
    )
    for path in directory.iterdir():
        path.chmod(0o644)
    command = [binary, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "nobody"]
    log_path = directory / "pgbouncer.log"
    try:
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        try:
            if not wait_for_port(port, within):
                _stop(process)
                server_unreachable(f"pgbouncer did not start on port {port}: {log_path.read_text()[-500:]}")
            url = f"postgresql://{quote(user, safe='')}@{HOST}:{port}{target.path or '/postgres'}"
            yield Server(url, HOST, port, process)
        finally:
            _stop(process)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- fixtures (registered by the plugin) ----------------------------------------------------------
@pytest.fixture(scope="session")
def memcached_server() -> Iterator[Server]:
    """A memcached of this test session, on a free loopback port."""
    with start_memcached() as server:
        yield server


@pytest.fixture(scope="session")
def pgbouncer_upstream() -> str:
    """The PostgreSQL URL that ``pgbouncer_server`` serves: ``LOCKS_PG_URL``, else
    ``postgresql://postgres@127.0.0.1:5432/postgres``. Override it to point elsewhere."""
    return os.environ.get("LOCKS_PG_URL", DEFAULT_PG_URL)


@pytest.fixture(scope="session")
def pgbouncer_server(pgbouncer_upstream: str) -> Iterator[Server]:
    """PgBouncer of this test session, in transaction pooling, in front of ``pgbouncer_upstream``."""
    with start_pgbouncer(pgbouncer_upstream) as server:
        yield server
