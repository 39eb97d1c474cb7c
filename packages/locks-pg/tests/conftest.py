"""Django settings for locks-pg's tests (the real PostgreSQL at LOCKS_PG_URL), and a pgbouncer
in transaction pooling mode in front of it, started on a free loopback port for the session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import django
import pytest

from locks_contract.servers import free_port, start_pgbouncer
from locks_pg._testing import MakeBackend, configure_django, database_settings, pg_url

BOUNCER_PORT = free_port()
_target = urlsplit(pg_url())
BOUNCER_URL = f"postgresql://{_target.username or 'postgres'}@127.0.0.1:{BOUNCER_PORT}{_target.path or '/postgres'}"

extra = {"bouncer": database_settings(BOUNCER_URL)}
if django.VERSION >= (5, 1):
    # Django's own connection pool (psycopg_pool), to show a held lock is never on its connections.
    extra["pooled"] = database_settings(pg_url(), OPTIONS={"pool": {"min_size": 1, "max_size": 2}})
configure_django(extra)

from locks_pg import AdvisoryLockBackend  # noqa: E402 - once Django is configured


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
    with start_pgbouncer(pg_url(), port=BOUNCER_PORT) as server:
        assert server.url == BOUNCER_URL
        yield server.url


@pytest.fixture
def make_backend() -> Iterator[MakeBackend]:
    """Builds advisory lock backends on the test server (``make_backend("other", FENCING=True)``),
    all closed when the test ends."""
    built: list[AdvisoryLockBackend] = []

    def make(alias: str = "default", **options: Any) -> AdvisoryLockBackend:
        backend = AdvisoryLockBackend(alias=alias, location=pg_url(), options=options or None)
        built.append(backend)
        return backend

    yield make
    for backend in reversed(built):
        backend.close()


@pytest.fixture
def backend(make_backend: MakeBackend) -> AdvisoryLockBackend:
    return make_backend()


@pytest.fixture
def other(make_backend: MakeBackend) -> AdvisoryLockBackend:
    return make_backend("other")


@pytest.fixture
def name() -> str:
    return f"pg-{uuid.uuid4().hex[:12]}"
