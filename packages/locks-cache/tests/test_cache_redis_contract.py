"""The Redis backend keeps the whole contract, against the real server."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import NAMESPACE, REDIS_URL, redis_clients_of_this_process

from locks_contract import AbstractDeadlineTests, BackendSpec, ContractTests


class TestRedisLockContract(ContractTests):
    @pytest.fixture
    def backend_spec(self) -> BackendSpec:
        return BackendSpec("locks_cache.RedisLockBackend", location=REDIS_URL, options={"NAMESPACE": NAMESPACE})

    @pytest.fixture
    def unreachable_backend_spec(self, closed_port: int) -> BackendSpec:
        return BackendSpec("locks_cache.RedisLockBackend", location=f"redis://127.0.0.1:{closed_port}/0")

    @pytest.fixture
    def server_connection_count(self) -> Callable[[], int]:
        return lambda: redis_clients_of_this_process(REDIS_URL)


class TestRedisShortSlicesDeadlines(AbstractDeadlineTests):
    """Waits of several slices: a slice that is not the last still ends by the deadline."""

    deadline_timeouts = (0.05, 0.07, 0.1)

    @pytest.fixture
    def backend_spec(self) -> BackendSpec:
        return BackendSpec(
            "locks_cache.RedisLockBackend", location=REDIS_URL, options={"NAMESPACE": NAMESPACE, "WAIT_SLICE": 0.03}
        )
