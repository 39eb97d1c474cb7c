"""locks-mysql keeps the whole contract, through a URL and through a Django DATABASES alias."""

from __future__ import annotations

import pytest

from locks_contract import (
    AbstractArgumentTests,
    AbstractAsyncTests,
    AbstractBasicTests,
    AbstractCapabilityTests,
    AbstractCrashTests,
    AbstractDjangoConnectionTests,
    AbstractExclusionTests,
    AbstractFencingTests,
    AbstractForceReleaseTests,
    AbstractLeaseTests,
    AbstractListingTests,
    AbstractReentrancyTests,
    AbstractSharedTests,
    AbstractTimeoutTests,
    AbstractUnavailableTests,
    BackendSpec,
    ContractTests,
)
from locks_mysql.testing import mysql_url

BACKEND = "locks_mysql.UserLockBackend"


class TestUserLockContract(ContractTests):
    @pytest.fixture
    def backend_spec(self) -> BackendSpec:
        return BackendSpec(BACKEND, location=mysql_url())

    @pytest.fixture
    def unreachable_backend_spec(self) -> BackendSpec:
        return BackendSpec(BACKEND, location="mysql://root@127.0.0.1:1/test", options={"connect_timeout": 2})


class TestUserLockThroughDjangoDatabase(
    AbstractBasicTests,
    AbstractArgumentTests,
    AbstractCapabilityTests,
    AbstractTimeoutTests,
    AbstractExclusionTests,
    AbstractReentrancyTests,
    AbstractCrashTests,
    AbstractLeaseTests,
    AbstractFencingTests,
    AbstractSharedTests,
    AbstractListingTests,
    AbstractForceReleaseTests,
    AbstractAsyncTests,
    AbstractUnavailableTests,
    AbstractDjangoConnectionTests,
):
    """OPTIONS['database'] names a DATABASES alias: its settings, connections of the backend's own.

    The whole contract but the name cases (names map to keys the same way; hypothesis refuses to
    run one test method from two classes in one process)."""

    @pytest.fixture
    def backend_spec(self) -> BackendSpec:
        return BackendSpec(BACKEND, options={"database": "default"}, setup="locks_mysql.testing.setup_from_environment")

    @pytest.fixture
    def unreachable_backend_spec(self) -> BackendSpec:
        return BackendSpec(BACKEND, location="mysql://root@127.0.0.1:1/test", options={"connect_timeout": 2})

    @pytest.fixture
    def django_database_alias(self) -> str:
        return "default"
