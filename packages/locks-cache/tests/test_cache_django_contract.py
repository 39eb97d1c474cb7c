"""Django cache aliases that can hold locks keep the whole contract, on their own clients."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import (
    MEMCACHED_URL,
    NAMESPACE,
    REDIS_URL,
    memcached_connections_of_this_process,
    redis_clients_of_this_process,
)

from locks_contract import BackendSpec, ContractTests

SETUP = "conftest.django_settings"


class CountsRedisClients:
    """The cache alias's own pool is made once per process and counted before the cycles."""

    @pytest.fixture
    def server_connection_count(self) -> Callable[[], int]:
        return lambda: redis_clients_of_this_process(REDIS_URL)


class TestDjangoRedisCacheContract(CountsRedisClients, ContractTests):
    @pytest.fixture
    def backend_spec(self) -> BackendSpec:
        return BackendSpec(
            "locks_cache.DjangoRedisCacheLockBackend", options={"CACHE": "redis", "NAMESPACE": NAMESPACE}, setup=SETUP
        )

    @pytest.fixture
    def unreachable_backend_spec(self) -> BackendSpec:
        return BackendSpec("locks_cache.DjangoRedisCacheLockBackend", options={"CACHE": "redis-down"}, setup=SETUP)


class TestDjangoRedisPackageCacheContract(CountsRedisClients, ContractTests):
    """django-redis's RedisCache: the same Redis backend, on django-redis's own client."""

    @pytest.fixture
    def backend_spec(self) -> BackendSpec:
        return BackendSpec(
            "locks_cache.DjangoRedisCacheLockBackend",
            options={"CACHE": "django-redis", "NAMESPACE": NAMESPACE},
            setup=SETUP,
        )

    @pytest.fixture
    def unreachable_backend_spec(self) -> BackendSpec:
        return BackendSpec(
            "locks_cache.DjangoRedisCacheLockBackend", options={"CACHE": "django-redis-down"}, setup=SETUP
        )


class TestDjangoMemcachedCacheContract(ContractTests):
    @pytest.fixture
    def backend_spec(self, memcached_url: str) -> BackendSpec:
        return BackendSpec(
            "locks_cache.DjangoMemcachedCacheLockBackend",
            options={"CACHE": "memcached", "NAMESPACE": NAMESPACE},
            setup=SETUP,
        )

    @pytest.fixture
    def unreachable_backend_spec(self) -> BackendSpec:
        return BackendSpec(
            "locks_cache.DjangoMemcachedCacheLockBackend", options={"CACHE": "memcached-down"}, setup=SETUP
        )

    @pytest.fixture
    def server_connection_count(self, memcached_url: str) -> Callable[[], int]:
        # Django keeps a cache object, and its client, per thread, for the thread's life: each
        # worker thread of the async API opens one when it first locks. They are Django's, not
        # the backend's, and are not counted.
        return lambda: memcached_connections_of_this_process(MEMCACHED_URL, but_django_caches=True)
