"""Peers measured beside the lock-table backend by ``locks bench --peers``.

* the floor: a raw ``SELECT … FOR UPDATE`` row lock held in an open transaction (PostgreSQL,
  psycopg): the server queues waiters and hands over at commit, the least a row lock can cost;
* django-database-locks with its defaults but ``auto_renew=False`` (its renewer breaks under
  contention: see :class:`DatabaseLocksPeer`): a ``SELECT … FOR UPDATE`` transaction per
  attempt, retried every 0.5 s, expiry by the client's clock;
* on PostgreSQL, this backend without ``LISTEN/NOTIFY`` (polling with backoff), beside the
  measured configuration that has it.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from locks.backends import BaseLockBackend, BenchSubject
from locks.bench.subjects import EnteredLocks, close_django_connections, configure_django

if TYPE_CHECKING:
    from locks_rowlock.backend import RowLockBackend

FLOOR_TABLE = "locks_rowlock_bench_floor"


def _database_entry(backend: RowLockBackend) -> dict[str, Any]:
    """A picklable ``DATABASES`` entry for the backend's database."""
    settings = copy.deepcopy(backend._pool.settings)
    keep = ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT")
    return {key: settings.get(key, "") for key in keep}


def peers(backend: BaseLockBackend) -> list[BenchSubject]:
    """The raw row-lock floor (PostgreSQL), django-database-locks, and this backend polling."""
    from locks.bench import backend_subject
    from locks_rowlock.backend import RowLockBackend

    if not isinstance(backend, RowLockBackend):
        return []
    found: list[BenchSubject] = []
    entry = _database_entry(backend)
    if backend.vendor == "postgresql" and importlib.util.find_spec("psycopg") is not None:
        found.append(
            BenchSubject("raw row lock FOR UPDATE, psycopg", f"{__name__}.RawRowLock", {"db": entry}, floor=True)
        )
    if importlib.util.find_spec("database_locks") is not None and backend.vendor != "sqlite":
        # django-database-locks does not lock at all on SQLite (no SELECT FOR UPDATE): not measured.
        found.append(
            BenchSubject("django-database-locks (auto_renew off)", f"{__name__}.DatabaseLocksPeer", {"db": entry})
        )
    if backend.notify:
        spec = backend.spec()
        polling = replace(spec, options={**spec.options, "NOTIFY": False})
        found.append(backend_subject("locks-rowlock (polling)", polling))
    return found


class RawRowLock:
    """The floor: one connection per held name, ``SELECT … FOR UPDATE`` on a pre-created row
    in an open transaction; ``COMMIT`` releases and the server wakes the next waiter."""

    def __init__(self, db: dict[str, Any]) -> None:
        import psycopg

        self._params = {
            "dbname": db["NAME"],
            "user": db["USER"] or None,
            "password": db["PASSWORD"] or None,
            "host": db["HOST"] or None,
            "port": db["PORT"] or None,
        }
        self._psycopg = psycopg
        self._idle: list[Any] = []
        self._held: dict[str, Any] = {}
        with psycopg.connect(autocommit=True, **self._params) as setup:
            setup.execute(f"CREATE TABLE IF NOT EXISTS {FLOOR_TABLE} (name text PRIMARY KEY)")

    def acquire(self, name: str) -> None:
        connection = self._idle.pop() if self._idle else self._psycopg.connect(**self._params)
        connection.execute(f"INSERT INTO {FLOOR_TABLE} (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,))
        connection.commit()
        connection.execute(f"SELECT 1 FROM {FLOOR_TABLE} WHERE name = %s FOR UPDATE", (name,))
        self._held[name] = connection

    def release(self, name: str) -> None:
        connection = self._held.pop(name)
        connection.commit()
        self._idle.append(connection)

    def close(self) -> None:
        for connection in [*self._idle, *self._held.values()]:
            connection.close()


class DatabaseLocksPeer(EnteredLocks):
    """django-database-locks' ``lock()`` context manager with its defaults, on the same database
    (Django configured in the worker with ``database_locks`` installed)."""

    def __init__(self, db: dict[str, Any]) -> None:
        super().__init__()
        configure_django(
            INSTALLED_APPS=["database_locks"],
            DATABASES={"default": dict(db)},
            USE_TZ=True,
            DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        )
        from django.apps import apps

        if not apps.is_installed("database_locks"):
            raise RuntimeError("django-database-locks needs 'database_locks' in INSTALLED_APPS")
        _migrate_once()
        from database_locks import lock

        self._lock = lock
        self._owner = f"bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def new(self, name: str) -> Any:
        # auto_renew off: its renewer outlives release (stop() does not join it), fails once
        # another process holds the lock, and then raises LockException into the main thread
        # through SIGUSR1, in the middle of whatever it runs. Everything else: its defaults.
        return self._lock(name, locked_by=self._owner, auto_renew=False)

    def close(self) -> None:
        close_django_connections()


def _migrate_once() -> None:
    from django.core.management import call_command
    from django.db import DatabaseError, connection

    if "database_locks_lock" in connection.introspection.table_names():
        return
    try:
        call_command("migrate", "database_locks", verbosity=0)
    except DatabaseError:
        # another worker migrated at the same moment
        if "database_locks_lock" not in connection.introspection.table_names():
            raise
