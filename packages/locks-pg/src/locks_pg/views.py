"""Views of ``pg_locks`` joined with ``pg_stat_activity``: who holds what, who waits, who blocks.

Plain queries (no model, no migration), through a Django ``DATABASES`` alias or an
:class:`~locks_pg.AdvisoryLockBackend`'s own connection::

    from locks_pg import views

    for lock in views.locks("default"):                 # every lock of this database
        print(lock.pid, lock.locktype, lock.relation or lock.key, lock.mode, lock.granted)
    for waiter in views.blocked("default"):              # waiting sessions and who blocks them
        print(waiter.pid, "waits for", waiter.relation or waiter.name or waiter.key, "behind", waiter.blocked_by)

Advisory locks are listed with their bigint key and, when the holder is a ``locks_pg``
connection (its ``application_name`` is ``locks:<name>``, or ``locks[n]:<name>`` for a session
holding n locks: the one held longest) and the name hashes to that key, their
lock name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from locks.keys import int64_of
from locks_pg.keys import KEY_SQL

if TYPE_CHECKING:
    from locks_pg.backend import PostgreSQLLockBackend

__all__ = ["PgLock", "advisory_locks", "blocked", "locks"]

Runner = Callable[[str, Any], Sequence[Sequence[Any]]]

_QUERY = f"""
SELECT l.locktype, l.mode, l.granted, l.pid,
       CASE WHEN l.relation IS NOT NULL THEN l.relation::regclass::text END,
       CASE WHEN l.locktype = 'advisory' AND l.objsubid = 1 THEN {KEY_SQL} END,
       a.application_name, a.usename, host(a.client_addr), a.state, a.query,
       extract(epoch FROM CASE WHEN NOT l.granted THEN a.query_start
                               WHEN a.state = 'idle' THEN a.state_change
                               ELSE coalesce(a.xact_start, a.state_change) END)::float8,
       CASE WHEN NOT l.granted THEN pg_blocking_pids(l.pid) END
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE (l.database IS NULL OR l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
  AND (l.pid <> pg_backend_pid() OR l.locktype = 'advisory')
"""


@dataclass(frozen=True)
class PgLock:
    """One row of ``pg_locks`` with its session from ``pg_stat_activity``.

    Attributes:
        locktype: ``relation``, ``advisory``, ``transactionid``, ``tuple``...
        mode: ``AccessShareLock`` ... ``AccessExclusiveLock``; ``ExclusiveLock`` / ``ShareLock``
            for advisory locks.
        granted: held (``True``) or waited for (``False``).
        pid: the server process of the session.
        relation: the table (``schema.name`` as ``regclass`` prints it) for relation locks.
        key: the bigint key of an advisory lock (``objsubid = 1``).
        name: the lock name of an advisory lock, where known.
        application_name, user, client_addr, state, query: from ``pg_stat_activity``.
        since: Unix time the session has held (or waited for) the lock since, approximately: the
            start of its transaction, or when it went idle holding a session lock.
        blocked_by: for a waiting row, the pids that block it (``pg_blocking_pids``).
    """

    locktype: str
    mode: str
    granted: bool
    pid: int | None
    relation: str | None
    key: int | None
    name: str | None
    application_name: str | None
    user: str | None
    client_addr: str | None
    state: str | None
    query: str | None
    since: float | None
    blocked_by: tuple[int, ...] = ()


def _runner(source: str | PostgreSQLLockBackend | Runner) -> Runner:
    if callable(source) and not hasattr(source, "connection_factory"):
        return source
    if isinstance(source, str):
        from django.db import connections

        connection = connections[source]

        def run(sql: str, params: Any) -> Sequence[Sequence[Any]]:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()  # type: ignore[no-any-return]

        return run
    return source._run_all  # type: ignore[union-attr]


def _rows(run: Runner, where: str, application_name: str) -> list[PgLock]:
    # "<app>:<name>" (a session holding one lock) or "<app>[n]:<oldest name>" (n locks)
    label = re.compile(re.escape(application_name) + r"(?:\[\d+\])?:(.*)", re.DOTALL)
    result = []
    for row in run(_QUERY + where + " ORDER BY l.granted DESC, l.pid", None):
        key = row[5]
        app = row[6]
        name = None
        if key is not None and isinstance(app, str):
            match = label.fullmatch(app)
            if match is not None:
                name = match.group(1)
        result.append(
            PgLock(
                locktype=row[0],
                mode=row[1],
                granted=row[2],
                pid=row[3],
                relation=row[4],
                key=key,
                name=name,
                application_name=app,
                user=row[7],
                client_addr=row[8],
                state=row[9],
                query=row[10],
                since=row[11],
                blocked_by=tuple(row[12] or ()),
            )
        )
    return result


def locks(source: str | PostgreSQLLockBackend = "default", *, application_name: str = "locks") -> list[PgLock]:
    """Every lock of the current database (held ones first). ``source``: a ``DATABASES`` alias or
    an :class:`~locks_pg.AdvisoryLockBackend`. Advisory lock names are checked against their key
    (without ``KEY_PREFIX``; the backend's ``holders()`` checks with it)."""
    return [_verified(lock) for lock in _rows(_runner(source), "", application_name)]


def advisory_locks(
    source: str | PostgreSQLLockBackend | Runner = "default", *, application_name: str = "locks"
) -> list[PgLock]:
    """The advisory locks (bigint keys) of the current database, held and waited for. Names
    are as the holder's session label says: the caller checks them against the key."""
    return _rows(_runner(source), " AND l.locktype = 'advisory' AND l.objsubid = 1", application_name)


def blocked(source: str | PostgreSQLLockBackend = "default", *, application_name: str = "locks") -> list[PgLock]:
    """The locks sessions wait for, each with the pids blocking it."""
    return [_verified(lock) for lock in _rows(_runner(source), " AND NOT l.granted", application_name)]


def _verified(lock: PgLock) -> PgLock:
    if lock.name is None or lock.key is None or int64_of(lock.name) == lock.key:
        return lock
    from dataclasses import replace

    return replace(lock, name=None)
