"""The Memcached backend keeps the whole contract, against a memcached started for the session."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import NAMESPACE, memcached_connections_of_this_process

from locks_contract import BackendSpec, ContractTests


class TestMemcachedLockContract(ContractTests):
    @pytest.fixture
    def backend_spec(self, memcached_url: str) -> BackendSpec:
        return BackendSpec("locks_cache.MemcachedLockBackend", location=memcached_url, options={"NAMESPACE": NAMESPACE})

    @pytest.fixture
    def unreachable_backend_spec(self, closed_port: int) -> BackendSpec:
        return BackendSpec("locks_cache.MemcachedLockBackend", location=f"memcached://127.0.0.1:{closed_port}")

    @pytest.fixture
    def server_connection_count(self, memcached_url: str) -> Callable[[], int]:
        return lambda: memcached_connections_of_this_process(memcached_url)
