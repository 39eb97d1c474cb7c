"""Peers measured beside the advisory lock backend by ``locks bench --peers``.

* ``raw psycopg``, the floor: one connection, ``pg_advisory_lock``/``pg_advisory_unlock`` and nothing
  else: what any session advisory lock costs on this server;
* ``django-pglock``: ``pglock.advisory(name)`` on Django's connection (when installed);
* ``locks-pg (fencing)`` / ``(no fencing)``: this backend with the other ``FENCING`` setting, to
  show what a token costs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from locks.backends import BaseLockBackend, BenchSubject
from locks.bench.subjects import EnteredLocks, close_django_connections, configure_django
from locks.keys import int64_of

if TYPE_CHECKING:
    from locks_pg.backend import PostgreSQLLockBackend


def peers(backend: BaseLockBackend) -> list[BenchSubject]:
    """The raw psycopg floor, django-pglock where installed, and the other fencing setting."""
    from locks.bench import backend_subject
    from locks_pg.backend import AdvisoryLockBackend, PostgreSQLLockBackend

    if not isinstance(backend, PostgreSQLLockBackend):
        return []
    url = _url_of(backend)
    found = [BenchSubject("raw psycopg", "locks_pg.bench:RawAdvisoryLock", {"url": url}, floor=True)]
    try:
        __import__("pglock")
    except ImportError:
        pass
    else:
        found.append(BenchSubject("django-pglock", "locks_pg.bench:DjangoPglockPeer", {"url": url}))
    if isinstance(backend, AdvisoryLockBackend):
        spec = backend.spec()
        label = "locks-pg (no fencing)" if backend.fencing else "locks-pg (fencing)"
        found.append(backend_subject(label, replace(spec, options={**spec.options, "FENCING": not backend.fencing})))
        if backend.labels:
            # what naming sessions after their locks costs
            quiet = replace(spec, options={**spec.options, "LABELS": False})
            found.append(backend_subject("locks-pg (LABELS=False)", quiet))
    return found


def _url_of(backend: PostgreSQLLockBackend) -> str:
    if backend.location:
        return backend.location.split("?", 1)[0]
    from locks_pg._testing import url_of_database

    assert backend.database is not None
    return url_of_database(backend.database)


class RawAdvisoryLock:
    """The floor: a psycopg connection and the two advisory lock functions, nothing more."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.keys: dict[str, int] = {}

    def acquire(self, name: str) -> None:
        key = self.keys.get(name)
        if key is None:
            key = self.keys[name] = int64_of(name)
        self.conn.execute("SELECT pg_advisory_lock(%s)", (key,))

    def release(self, name: str) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.keys[name],))

    def close(self) -> None:
        self.conn.close()


class DjangoPglockPeer(EnteredLocks):
    """``pglock.advisory(name)`` entered and exited, on Django's connection to ``url``."""

    def __init__(self, url: str) -> None:
        from locks_pg._testing import database_settings

        super().__init__()
        configure_django(DATABASES={"default": database_settings(url)}, USE_TZ=True)

    def new(self, name: str) -> Any:
        import pglock

        return pglock.advisory(name)

    def close(self) -> None:
        close_django_connections()
