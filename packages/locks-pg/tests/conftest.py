"""Django settings for locks-pg's tests (the real PostgreSQL at LOCKS_PG_URL), and a pgbouncer
in transaction pooling mode in front of it, started on a free loopback port for the session."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import django
import pytest

from locks_contract import server_unreachable
from locks_pg._testing import configure_django, database_settings, pg_url

PGBOUNCER = os.environ.get("LOCKS_PGBOUNCER", shutil.which("pgbouncer") or "/usr/sbin/pgbouncer")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


BOUNCER_PORT = _free_port()
_target = urlsplit(pg_url())
BOUNCER_URL = f"postgresql://{_target.username or 'postgres'}@127.0.0.1:{BOUNCER_PORT}{_target.path or '/postgres'}"

extra = {"bouncer": database_settings(BOUNCER_URL)}
if django.VERSION >= (5, 1):
    # Django's own connection pool (psycopg_pool), to show a held lock is never on its connections.
    extra["pooled"] = database_settings(pg_url(), OPTIONS={"pool": {"min_size": 1, "max_size": 2}})
configure_django(extra)


def sessions_of_this_process(url: str | None = None) -> int:
    """The sessions the server has open from this process (``pg_stat_activity``, matched by
    client port: other test runs share the server)."""
    import psycopg

    from locks_contract.connections import client_ports

    ports = client_ports(urlsplit(url or pg_url()).port or 5432)
    with psycopg.connect(url or pg_url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE client_port = ANY(%s)", (sorted(ports),)
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator[str]:
    """pgbouncer (pool_mode = transaction) on BOUNCER_PORT in front of the real server; its URL."""
    if not os.path.exists(PGBOUNCER):
        server_unreachable(f"pgbouncer is not installed at {PGBOUNCER}")
    directory = tempfile.mkdtemp(prefix="locks-pg-bouncer-")
    user = _target.username or "postgres"
    with open(os.path.join(directory, "userlist.txt"), "w") as handle:
        handle.write(f'"{user}" ""\n')
    dbname = (_target.path or "/postgres").lstrip("/")
    server = f"host={_target.hostname or '127.0.0.1'} port={_target.port or 5432} dbname={dbname}"
    if _target.password:
        server += f" user={user} password={unquote(_target.password)}"
    with open(os.path.join(directory, "pgbouncer.ini"), "w") as handle:
        handle.write(
            "[databases]\n"
            f"{dbname} = {server}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {BOUNCER_PORT}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {directory}/userlist.txt\n"
            "pool_mode = transaction\ndefault_pool_size = 4\nmax_client_conn = 100\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {directory}/pgbouncer.log\npidfile = {directory}/pgbouncer.pid\n"
        )
    command = [PGBOUNCER, os.path.join(directory, "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        try:
            account = pwd.getpwnam("postgres").pw_name
        except KeyError:
            account = "nobody"
        shutil.chown(directory, account)
        for name in os.listdir(directory):
            shutil.chown(os.path.join(directory, name), account)
        command[1:1] = ["-u", account]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", BOUNCER_PORT), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read().decode(errors="replace") if process.stdout else ""
                    server_unreachable(f"pgbouncer did not start on port {BOUNCER_PORT}: {output[-500:]}")
                time.sleep(0.05)
        yield BOUNCER_URL
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(directory, ignore_errors=True)
