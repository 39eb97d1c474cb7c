"""locks-rowlock keeps the whole contract on PostgreSQL, MariaDB/MySQL and SQLite (a file)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import migrate, sessions_of_this_process

from locks.backends import BaseLockBackend
from locks_contract import AbstractDjangoConnectionTests, BackendSpec, ContractTests

BACKEND = "locks_rowlock.RowLockBackend"
SETUP = "rowlock_test_settings.setup"


class RowLockContract(ContractTests, AbstractDjangoConnectionTests):
    alias: str = ""
    down_alias: str = ""

    @pytest.fixture
    def backend_spec(self) -> BackendSpec:
        migrate(self.alias)
        return BackendSpec(BACKEND, options={"DATABASE": self.alias}, setup=SETUP)

    @pytest.fixture
    def unreachable_backend_spec(self) -> BackendSpec:
        return BackendSpec(BACKEND, options={"DATABASE": self.down_alias}, setup=SETUP)

    @pytest.fixture
    def django_database_alias(self) -> str:
        return self.alias

    @pytest.fixture
    def server_connection_count(self) -> Callable[[], int]:
        return lambda: sessions_of_this_process(self.alias)

    # The same hypothesis test runs in three classes of one process, which hypothesis's
    # "differing executors" health check refuses; calling it through a method of our own keeps
    # the case unchanged and the check quiet.
    def test_distinct_arbitrary_names_are_independent_locks(  # type: ignore[override]
        self, backend: BaseLockBackend, other_backend: BaseLockBackend
    ) -> None:
        ContractTests.test_distinct_arbitrary_names_are_independent_locks(self, backend, other_backend)  # type: ignore[call-arg]


class TestRowLockPostgreSQLContract(RowLockContract):
    alias = "pg"
    down_alias = "pg_down"


class TestRowLockMariaDBContract(RowLockContract):
    alias = "mysql"
    down_alias = "mysql_down"


class TestRowLockSQLiteContract(RowLockContract):
    alias = "default"
    down_alias = "sqlite_down"


class TestRowLockPgBouncerContract(RowLockContract):
    """PostgreSQL behind PgBouncer in transaction pooling, where session (advisory) locks do not
    work: leases in a table do. LISTEN does not survive transaction pooling: NOTIFY off."""

    alias = "pgbouncer"
    down_alias = "pg_down"

    @pytest.fixture
    def backend_spec(self, pgbouncer: int) -> BackendSpec:
        migrate("pg")
        return BackendSpec(BACKEND, options={"DATABASE": self.alias, "NOTIFY": False}, setup=SETUP)
