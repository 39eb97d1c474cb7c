"""Configure Django for locks-rowlock's tests and create the lock table on every database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import rowlock_test_settings

rowlock_test_settings.setup()

from locks_contract import server_unreachable  # noqa: E402

VENDOR_ALIASES = {"postgresql": "pg", "mysql": "mysql", "sqlite": "default"}
_migrated: dict[str, str | None] = {}


def migrate(alias: str) -> None:
    """Create the lock table on ``alias`` once per run (fails the test when the server is down)."""
    if alias not in _migrated:
        from django.core.management import call_command
        from django.db import connections

        try:
            _drop_unrecorded_table(alias)
            call_command("migrate", "locks_rowlock", database=alias, verbosity=0)
            _migrated[alias] = None
        except Exception as exc:
            _migrated[alias] = f"{type(exc).__name__}: {exc}"
        finally:
            connections[alias].close()
    if _migrated[alias] is not None:
        server_unreachable(f"database {alias!r}: {_migrated[alias]}")


def _drop_unrecorded_table(alias: str) -> None:
    """A lock table that a backend created itself (``CREATE_TABLE`` on a URL) in an earlier run,
    with no migration recorded, would make ``migrate`` fail: drop it (a test database)."""
    from django.db import connections
    from django.db.migrations.recorder import MigrationRecorder

    from locks_rowlock.models import RowLock

    connection = connections[alias]
    if RowLock._meta.db_table not in connection.introspection.table_names():
        return
    recorder = MigrationRecorder(connection)
    if recorder.has_table() and any(app == "locks_rowlock" for app, _ in recorder.applied_migrations()):
        return
    with connection.schema_editor() as editor:
        editor.delete_model(RowLock)


@pytest.fixture(params=["postgresql", "mysql", "sqlite"])
def vendor(request: pytest.FixtureRequest) -> str:
    migrate(VENDOR_ALIASES[request.param])
    return str(request.param)


def sessions_of_this_process(alias: str) -> int:
    """The sessions the server behind ``DATABASES[alias]`` has open from this process (matched
    by client port: other test runs share the servers): ``pg_stat_activity``, PgBouncer's
    ``SHOW CLIENTS``, MariaDB's processlist; for SQLite, this process's open descriptors."""
    from django.db import connections

    from locks_contract.connections import client_ports, open_descriptors, processlist_clients

    entry = connections.settings[alias]
    engine = entry["ENGINE"]
    if "sqlite" in engine:
        return open_descriptors()
    port = int(entry["PORT"] or (5432 if "postgresql" in engine else 3306))
    ports = client_ports(port)
    if "postgresql" in engine:
        import psycopg

        params = {"host": entry["HOST"], "port": port, "user": entry["USER"], "password": entry["PASSWORD"]}
        if alias == "pgbouncer":
            with psycopg.connect(dbname="pgbouncer", autocommit=True, **params) as conn:
                cursor = conn.execute("SHOW CLIENTS")
                column = [c.name for c in cursor.description or ()].index("port")
                return sum(1 for row in cursor.fetchall() if row[column] in ports)
        with psycopg.connect(dbname=entry["NAME"], autocommit=True, **params) as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE client_port = ANY(%s)", (sorted(ports),)
            ).fetchone() or (0,)
            return int(count)
    import MySQLdb

    conn = MySQLdb.connect(host=entry["HOST"], port=port, user=entry["USER"], passwd=entry["PASSWORD"])
    try:
        return processlist_clients(conn, ports)
    finally:
        conn.close()


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator[int]:
    """PgBouncer in transaction pooling in front of the test PostgreSQL, on the port the
    settings chose; stopped at the end of the session."""
    import os

    from locks_contract.servers import start_pgbouncer

    upstream = os.environ.get("LOCKS_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    with start_pgbouncer(upstream, port=rowlock_test_settings.pgbouncer_port()) as server:
        yield server.port
