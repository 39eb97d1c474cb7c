"""Inspection and administration: ``is_locked``, ``holders`` (``pg_locks`` joined with
``pg_stat_activity``) and ``force_release`` (terminating the holding sessions)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import psycopg
from psycopg import errors as pg_errors
from psycopg.types.numeric import Int8

from locks.backends import HolderInfo
from locks.exceptions import BackendUnavailable, LockError
from locks_pg.connection import ConnectionFactory, _first_line
from locks_pg.keys import KEY_SQL

if TYPE_CHECKING:
    from locks.keys import Key, LockName
    from locks.registry import HoldRegistry

_THIS_DATABASE = "l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
#: Whether any session holds an advisory key of this database (``%s``: the key).
IS_LOCKED_SQL = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 1 "
    f"AND l.granted AND {_THIS_DATABASE} AND {KEY_SQL} = %s)"
)


class Administration:
    """What the PostgreSQL backends answer about locks, their own and others'."""

    if TYPE_CHECKING:
        _factory: ConnectionFactory
        application_name: str
        holds: HoldRegistry

        def make_key(self, name: LockName) -> Key: ...
        def validate_name(self, name: object) -> LockName: ...

    def _run(self, sql: str, params: Any = None, all_rows: bool = False) -> Any:
        """A statement on an idle owned connection (replacing a stale one once)."""
        factory = self._factory
        conn = factory.get()
        for attempt in (1, 2):
            try:
                cursor = conn.cursor
                cursor.execute(sql, params)
                result = cursor.fetchall() if all_rows else cursor.fetchone()
                break
            except psycopg.OperationalError as exc:
                conn.close()
                if attempt == 2:
                    raise BackendUnavailable(f"PostgreSQL connection failed: {_first_line(exc)}") from exc
                conn = factory.connect()
            except BaseException:
                conn.close()
                raise
        factory.put(conn)
        return result

    def is_locked(self, key: Key) -> bool:
        row = self._run(IS_LOCKED_SQL, (Int8(cast(int, key)),))
        return bool(row[0])

    def holders(self, prefix: str | None = None) -> list[HolderInfo]:
        """Advisory locks of this database, from ``pg_locks`` joined with ``pg_stat_activity``:
        holder pid, application, client address, since when, how many sessions wait. Names are
        known for locks this backend's clients hold (their session's ``application_name``) and
        this process's own holds; with ``prefix``, only locks whose name is known are listed."""
        from locks_pg.views import advisory_locks

        local: dict[Any, LockName] = {entry.key: entry.hold.request.name for entry in self.holds.entries()}
        rows = advisory_locks(self._run_all, application_name=self.application_name)
        rows = [row for row in rows if row.key is not None]
        waiting: dict[int | None, int] = {}
        for row in rows:
            if not row.granted:
                waiting[row.key] = waiting.get(row.key, 0) + 1
        found = []
        for row in rows:
            if not row.granted:
                continue
            name = local.get(row.key)
            if name is None and row.name is not None and self.make_key(row.name) == row.key:
                name = row.name
            if prefix is not None and (not isinstance(name, str) or not name.startswith(prefix)):
                continue
            found.append(
                HolderInfo(
                    key=cast(int, row.key),
                    name=None if name is None else str(name),
                    shared=row.mode == "ShareLock",
                    owner=row.application_name,
                    pid=row.pid,
                    host=row.client_addr,
                    since=row.since,
                    waiting=waiting.get(row.key, 0),
                    extra={"mode": row.mode, "user": row.user, "state": row.state},
                )
            )
        return found

    def _run_all(self, sql: str, params: Any = None) -> list[Any]:
        return self._run(sql, params, all_rows=True)  # type: ignore[no-any-return]

    def force_release(self, name: LockName) -> int:
        """Terminate every other session that holds ``name`` (PostgreSQL frees its locks with
        it); the number of sessions ended. On PostgreSQL 14+ this waits (up to 5 s) for them to
        exit, so the lock is free when it returns."""
        key = self.make_key(self.validate_name(name))
        conn = self._factory.get()
        wait = ", 5000" if conn.server_version >= 140000 else ""
        self._factory.put(conn)
        try:
            rows = self._run(
                f"SELECT l.pid, pg_terminate_backend(l.pid{wait}) FROM pg_locks l WHERE l.locktype = 'advisory' "
                f"AND l.objsubid = 1 AND l.granted AND {_THIS_DATABASE} AND {KEY_SQL} = %s "
                "AND l.pid <> pg_backend_pid()",
                (Int8(cast(int, key)),),
                all_rows=True,
            )
        except pg_errors.InsufficientPrivilege as exc:
            raise LockError(
                f"not allowed to terminate the holder of {name!r}: {_first_line(exc)} "
                "(needs the holder's role, pg_signal_backend or superuser)",
                name,
            ) from exc
        return sum(1 for _, ended in rows if ended)
