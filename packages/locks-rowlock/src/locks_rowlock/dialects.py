"""The SQL of the lock table, one dialect per database vendor.

Every statement runs alone, in autocommit, on a connection the backend owns: each is its own
short transaction, and the database's row locking makes each one atomic. Expiry is judged by the
database's clock in SQL (``clock_timestamp()``, ``UTC_TIMESTAMP(6)``, SQLite's ``'now'``); the
client's clock is never read.

Fencing tokens: a new row starts at the database clock in microseconds since 1970, and every
acquisition sets ``GREATEST(version + 1, clock in µs)``. Tokens therefore grow strictly per name,
and a row deleted by the stale-row cleanup (only after a long idle time) comes back with a token
larger than any it had before.

Round trips: acquire, release, extend and force release are one statement each on every vendor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

#: The table the statements work on (the model's ``db_table``).
TABLE = "locks_rowlock_lock"

COLUMNS = (
    "digest",
    "lock_key",
    "name",
    "host",
    "pid",
    "thread",
    "owner_uuid",
    "version",
    "acquired_at",
    "expires_at",
    "waiters",
)
HOLDER_COLUMNS = "lock_key, name, host, pid, thread, owner_uuid, version, acquired_at, expires_at"


def _take_over_expired(t: str, x: str, greatest: str, now: str, also: str = "") -> str:
    """The ``ON CONFLICT … DO UPDATE`` clause of an acquire on table ``t`` (PostgreSQL, SQLite):
    the row is taken over by the new holder (``x``: the excluded row, as the dialect spells it)
    only when it was released or its lease ran out by ``now``; its version grows past both.
    ``also``: more assignments."""
    return (
        f"ON CONFLICT (digest) DO UPDATE SET lock_key = {x}.lock_key, name = {x}.name, "
        f"host = {x}.host, pid = {x}.pid, thread = {x}.thread, owner_uuid = {x}.owner_uuid, "
        f"version = {greatest}({t}.version + 1, {x}.version), acquired_at = {x}.acquired_at, "
        f"expires_at = {x}.expires_at{also} "
        f"WHERE {t}.expires_at IS NULL OR {t}.expires_at <= {now} "
        f"RETURNING version"
    )


class Dialect:
    """SQL for one vendor. ``now``/``now_us``/``later`` are SQL expressions of the database clock."""

    vendor: ClassVar[str] = ""
    #: The database clock, comparable with ``expires_at``.
    now: ClassVar[str] = ""
    #: The database clock in integer microseconds since 1970 (the fencing token's floor).
    now_us: ClassVar[str] = ""
    #: ``now`` plus a lease; takes one parameter (see :meth:`lease`).
    later: ClassVar[str] = ""
    #: Error codes meaning "someone else is writing this row": treated as busy, not as failure.
    busy_codes: ClassVar[frozenset[int]] = frozenset()
    #: Whether a busy acquire is as cheap as a read (then waiters need no read before trying).
    cheap_busy_acquire: ClassVar[bool] = False

    def __init__(self, table: str = TABLE) -> None:
        self.table = table
        #: The start of every dialect's acquire statement.
        self.insert = f"INSERT INTO {table} ({', '.join(COLUMNS)}) "
        t, now = table, self.now
        self.release_sql = (
            f"UPDATE {t} SET expires_at = NULL WHERE digest = %s AND version = %s AND expires_at IS NOT NULL"
        )
        self.extend_sql = (
            f"UPDATE {t} SET expires_at = {self.later} WHERE digest = %s AND version = %s AND expires_at IS NOT NULL"
        )
        self.check_sql = f"SELECT 1 FROM {t} WHERE digest = %s AND version = %s AND expires_at IS NOT NULL"
        self.is_locked_sql = f"SELECT 1 FROM {t} WHERE digest = %s AND expires_at > {now}"
        self.holders_sql = f"SELECT {HOLDER_COLUMNS} FROM {t} WHERE expires_at > {now}"
        # The version grows so that the broken holder's release, extend and check all fail.
        self.force_release_sql = (
            f"UPDATE {t} SET expires_at = NULL, version = version + 1 WHERE digest = %s AND expires_at > {now}"
        )
        self.force_release_all_sql = (
            f"UPDATE {t} SET expires_at = NULL, version = version + 1 WHERE expires_at IS NOT NULL"
        )
        # Stale: released, or expired, long ago. A live holder's row has expires_at > now, and the
        # statement re-checks that under the row lock, so cleanup never races a holder.
        self.stale_sql = (
            f"DELETE FROM {t} WHERE (expires_at IS NULL AND (acquired_at IS NULL OR acquired_at < {self.earlier})) "
            f"OR expires_at < {self.earlier}"
        )

    # -- parameters ------------------------------------------------------------------------
    @staticmethod
    def lease(seconds: float) -> Any:
        """The parameter of :attr:`later` for a lease of ``seconds``."""
        return seconds

    earlier: ClassVar[str] = ""

    def stale_params(self, seconds: float) -> Sequence[Any]:
        return (self.lease(seconds), self.lease(seconds))

    def sql(self, statement: str) -> str:
        """The statement in the driver's parameter style."""
        return statement

    # -- acquire ---------------------------------------------------------------------------
    def acquire(self, cursor: Any, row: Sequence[Any], ttl: float, waiting: bool = False) -> int | None:
        """Take the lock when free or expired; its new fencing token, else ``None``.

        ``row``: digest, lock_key, name, host, pid, thread, owner_uuid. ``waiting``: the caller
        counted itself among the row's waiters, and leaves them when it takes the lock.
        """
        raise NotImplementedError


class PostgreSQLDialect(Dialect):
    vendor = "postgresql"
    # clock_timestamp(), not now(): now() is the start of the transaction.
    now = "clock_timestamp()"
    now_us = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
    later = "clock_timestamp() + %s * interval '1 second'"
    earlier = "clock_timestamp() - %s * interval '1 second'"
    cheap_busy_acquire = True
    #: The channel of release notifications; the payload is the digest.
    channel = "locks_rowlock"

    def __init__(self, table: str = TABLE) -> None:
        super().__init__(table)
        t = table
        # INSERT … SELECT … WHERE NOT EXISTS: while the lease is live (a plain read of the row)
        # the statement inserts nothing and locks nothing, so a busy attempt costs a read, not
        # a row lock and a commit queued behind the holder. When it looks free, the upsert
        # takes the row lock and checks again.
        self.acquire_sql = (
            self.insert + f"SELECT %s, %s, %s, %s, %s, %s, %s, {self.now_us}, clock_timestamp(), {self.later}, 0 "
            f"WHERE NOT EXISTS (SELECT 1 FROM {t} WHERE digest = %s AND expires_at > clock_timestamp()) "
            + _take_over_expired(
                t, "EXCLUDED", "GREATEST", "clock_timestamp()", also=f", waiters = GREATEST({t}.waiters - %s, 0)"
            )
        )
        # A release need not wait for the disk: lost in a server crash, the lease merely lasts
        # until it expires (safe), and the next acquisition's durable commit flushes it anyway
        # (the WAL is sequential). set_config(..., true) is SET LOCAL inside the statement's own
        # transaction: still one round trip. Acquire, extend and force release stay durable.
        self.release_sql = (
            f"UPDATE {t} SET expires_at = NULL WHERE digest = %s AND version = %s AND expires_at IS NOT NULL "
            "AND set_config('synchronous_commit', 'off', true) IS NOT NULL"
        )
        # Release and notify in one statement, and only when someone waits: a NOTIFY serializes
        # the commits of the whole server on the notification queue. Delivered at commit.
        self.release_notify_sql = (
            f"WITH released AS ({self.release_sql} RETURNING digest, waiters) "
            f"SELECT CASE WHEN waiters > 0 THEN pg_notify('{self.channel}', digest) END FROM released"
        )
        # A waiter counts itself in before its last look, so a release after that look sees it.
        sync_off = "set_config('synchronous_commit', 'off', true) IS NOT NULL"
        self.wait_sql = f"UPDATE {t} SET waiters = waiters + 1 WHERE digest = %s AND {sync_off}"
        self.unwait_sql = f"UPDATE {t} SET waiters = GREATEST(waiters - 1, 0) WHERE digest = %s AND {sync_off}"
        self.force_release_notify_sql = (
            f"WITH released AS ({self.force_release_sql} RETURNING digest) "
            f"SELECT pg_notify('{self.channel}', digest) FROM released"
        )

    def acquire(self, cursor: Any, row: Sequence[Any], ttl: float, waiting: bool = False) -> int | None:
        cursor.execute(self.acquire_sql, (*row, ttl, row[0], int(waiting)))
        found = cursor.fetchone()
        return None if found is None else int(found[0])


class MySQLDialect(Dialect):
    """MySQL and MariaDB.

    ``INSERT … ON DUPLICATE KEY UPDATE`` evaluates its assignments left to right, each seeing the
    columns already assigned: every assignment tests the *old* ``expires_at``, which is assigned
    last. The new token comes back through ``LAST_INSERT_ID(expr)`` (the OK packet's insert id),
    and whether the row changed through the affected-rows count (the backend's connections do not
    set ``CLIENT_FOUND_ROWS``): 1 inserted, 2 updated, 0 busy. One round trip.
    """

    vendor = "mysql"
    # UTC_TIMESTAMP, not NOW(): the session time zone must not matter.
    now = "UTC_TIMESTAMP(6)"
    now_us = "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6))"
    later = "UTC_TIMESTAMP(6) + INTERVAL %s MICROSECOND"
    earlier = "UTC_TIMESTAMP(6) - INTERVAL %s MICROSECOND"
    # 1213 deadlock (two first inserts of one name), 1205 lock wait timeout.
    busy_codes = frozenset({1213, 1205})

    def __init__(self, table: str = TABLE) -> None:
        super().__init__(table)
        free = f"(expires_at IS NULL OR expires_at <= {self.now})"

        def take(column: str, value: str) -> str:
            return f"{column} = IF({free}, {value}, {column})"

        self.acquire_sql = (
            self.insert
            + f"VALUES (%s, %s, %s, %s, %s, %s, %s, LAST_INSERT_ID({self.now_us}), {self.now}, {self.later}, 0) "
            "ON DUPLICATE KEY UPDATE "
            + ", ".join(
                [take(c, f"VALUES({c})") for c in COLUMNS[1:7]]
                + [
                    take("acquired_at", "VALUES(acquired_at)"),
                    take("version", f"LAST_INSERT_ID(GREATEST(version + 1, {self.now_us}))"),
                    take("expires_at", "VALUES(expires_at)"),
                ]
            )
        )

    @staticmethod
    def lease(seconds: float) -> Any:
        return int(seconds * 1_000_000)

    def acquire(self, cursor: Any, row: Sequence[Any], ttl: float, waiting: bool = False) -> int | None:
        cursor.execute(self.acquire_sql, (*row, self.lease(ttl)))
        if cursor.rowcount <= 0:
            return None
        return int(cursor.lastrowid)


class SQLiteDialect(Dialect):
    """SQLite: each statement takes the database's write lock, across processes (a file database;
    an in-memory one is refused). ``RETURNING`` needs SQLite 3.35."""

    vendor = "sqlite"
    now = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
    now_us = "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)"
    later = "strftime('%Y-%m-%d %H:%M:%f', 'now', %s)"
    earlier = "strftime('%Y-%m-%d %H:%M:%f', 'now', %s)"
    #: "database is locked" after the busy timeout is contention, not an outage.
    busy_messages = ("database is locked", "database table is locked")

    def __init__(self, table: str = TABLE) -> None:
        super().__init__(table)
        t = table
        self.acquire_sql = (
            self.insert
            + f"VALUES (%s, %s, %s, %s, %s, %s, %s, {self.now_us}, {self.now}, {self.later}, 0) "
            + _take_over_expired(t, "excluded", "max", self.now)
        )

    @staticmethod
    def lease(seconds: float) -> Any:
        return f"+{seconds:.6f} seconds"

    def stale_params(self, seconds: float) -> Sequence[Any]:
        return (f"-{seconds:.6f} seconds",) * 2

    def sql(self, statement: str) -> str:
        # sqlite3 takes qmark parameters; our statements hold no other "%s".
        return statement.replace("%s", "?")

    def acquire(self, cursor: Any, row: Sequence[Any], ttl: float, waiting: bool = False) -> int | None:
        cursor.execute(self.sql(self.acquire_sql), (*row, self.lease(ttl)))
        # Read every row: the statement (and its write lock) ends when the cursor is exhausted.
        found = cursor.fetchall()
        return int(found[0][0]) if found else None


DIALECTS: dict[str, type[Dialect]] = {
    "postgresql": PostgreSQLDialect,
    "mysql": MySQLDialect,
    "sqlite": SQLiteDialect,
}
