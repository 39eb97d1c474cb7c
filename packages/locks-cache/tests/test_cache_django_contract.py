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


class DjangoCacheContract(ContractTests):
    """The contract through the lock backend ``lock_backend`` on the Django cache alias
    ``cache_alias``; unreachable, on the alias ``<cache_alias>-down``."""

    lock_backend: str
    cache_alias: str

    def spec(self) -> BackendSpec:
        return BackendSpec(self.lock_backend, options={"CACHE": self.cache_alias, "NAMESPACE": NAMESPACE}, setup=SETUP)

    @pytest.fixture
    def backend_spec(self) -> BackendSpec:
        return self.spec()

    @pytest.fixture
    def unreachable_backend_spec(self) -> BackendSpec:
        return BackendSpec(self.lock_backend, options={"CACHE": f"{self.cache_alias}-down"}, setup=SETUP)


class TestDjangoRedisCacheContract(CountsRedisClients, DjangoCacheContract):
    lock_backend = "locks_cache.DjangoRedisCacheLockBackend"
    cache_alias = "redis"


class TestDjangoRedisPackageCacheContract(CountsRedisClients, DjangoCacheContract):
    """django-redis's RedisCache: the same Redis backend, on django-redis's own client."""

    lock_backend = "locks_cache.DjangoRedisCacheLockBackend"
    cache_alias = "django-redis"


class TestDjangoMemcachedCacheContract(DjangoCacheContract):
    lock_backend = "locks_cache.DjangoMemcachedCacheLockBackend"
    cache_alias = "memcached"

    @pytest.fixture
    def backend_spec(self, memcached_url: str) -> BackendSpec:
        return self.spec()  # once the server runs

    @pytest.fixture
    def server_connection_count(self, memcached_url: str) -> Callable[[], int]:
        # Django keeps a cache object, and its client, per thread, for the thread's life: each
        # worker thread of the async API opens one when it first locks. They are Django's, not
        # the backend's, and are not counted.
        return lambda: memcached_connections_of_this_process(MEMCACHED_URL, but_django_caches=True)
