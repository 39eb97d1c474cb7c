"""locks-pg keeps the whole contract, on a URL and on a Django DATABASES alias."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import sessions_of_this_process

from locks_contract import (
    AbstractBasicTests,
    AbstractCapabilityTests,
    AbstractDjangoConnectionTests,
    AbstractLifecycleTests,
    BackendSpec,
    ContractTests,
)
from locks_pg._testing import pg_url

CLOSED_PORT_URL = "postgresql://postgres@127.0.0.1:9/test"


class CountsSessions:
    @pytest.fixture
    def server_connection_count(self) -> Callable[[], int]:
        return sessions_of_this_process


class TestAdvisoryLockContract(CountsSessions, ContractTests):
    @pytest.fixture
    def backend_spec(self) -> BackendSpec:
        return BackendSpec("locks_pg.AdvisoryLockBackend", location=pg_url(), options={"FENCING": True})

    @pytest.fixture
    def unreachable_backend_spec(self) -> BackendSpec:
        return BackendSpec("locks_pg.AdvisoryLockBackend", location=CLOSED_PORT_URL, options={"CONNECT_TIMEOUT": 2})


class TestAdvisoryLockOnDjangoDatabase(
    CountsSessions, AbstractBasicTests, AbstractCapabilityTests, AbstractDjangoConnectionTests, AbstractLifecycleTests
):
    """The backend built from a DATABASES alias, default options (no fencing): Django's
    connection handling never drops a lock."""

    @pytest.fixture
    def backend_spec(self) -> BackendSpec:
        return BackendSpec(
            "locks_pg.AdvisoryLockBackend", options={"database": "default"}, setup="locks_pg._testing.configure_django"
        )

    @pytest.fixture
    def django_database_alias(self) -> str:
        return "default"
