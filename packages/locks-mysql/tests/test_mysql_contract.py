"""locks-mysql keeps the whole contract, through a URL and through a Django DATABASES alias."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import sessions_of_this_process

from locks_contract import BackendSpec, ContractTests
from locks_mysql._testing import mysql_url

BACKEND = "locks_mysql.UserLockBackend"


class CountsSessions:
    @pytest.fixture
    def server_connection_count(self) -> Callable[[], int]:
        return lambda: sessions_of_this_process(mysql_url())


class TestUserLockContract(CountsSessions, ContractTests):
    @pytest.fixture
    def backend_spec(self) -> BackendSpec:
        return BackendSpec(BACKEND, location=mysql_url())

    @pytest.fixture
    def unreachable_backend_spec(self) -> BackendSpec:
        return BackendSpec(BACKEND, location="mysql://root@127.0.0.1:1/test", options={"CONNECT_TIMEOUT": 2})


class TestUserLockThroughDjangoDatabase(CountsSessions, ContractTests):
    """OPTIONS['DATABASE'] names a DATABASES alias: its settings, connections of the backend's own."""

    @pytest.fixture
    def backend_spec(self) -> BackendSpec:
        return BackendSpec(
            BACKEND, options={"DATABASE": "default"}, setup="locks_mysql._testing.setup_from_environment"
        )

    @pytest.fixture
    def unreachable_backend_spec(self) -> BackendSpec:
        return BackendSpec(BACKEND, location="mysql://root@127.0.0.1:1/test", options={"CONNECT_TIMEOUT": 2})

    @pytest.fixture
    def django_database_alias(self) -> str:
        return "default"
