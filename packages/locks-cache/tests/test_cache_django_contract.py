"""Django cache aliases that can hold locks keep the whole contract, on their own clients."""

from __future__ import annotations

import pytest
from conftest import NAMESPACE

from locks_contract import BackendSpec, ContractTests

SETUP = "conftest.django_settings"


class TestDjangoRedisCacheContract(ContractTests):
    @pytest.fixture
    def backend_spec(self) -> BackendSpec:
        return BackendSpec(
            "locks_cache.DjangoRedisCacheLockBackend", options={"cache": "redis", "NAMESPACE": NAMESPACE}, setup=SETUP
        )

    @pytest.fixture
    def unreachable_backend_spec(self) -> BackendSpec:
        return BackendSpec("locks_cache.DjangoRedisCacheLockBackend", options={"cache": "redis-down"}, setup=SETUP)


class TestDjangoRedisPackageCacheContract(ContractTests):
    """django-redis's RedisCache: the same Redis backend, on django-redis's own client."""

    @pytest.fixture
    def backend_spec(self) -> BackendSpec:
        return BackendSpec(
            "locks_cache.DjangoRedisCacheLockBackend",
            options={"cache": "django-redis", "NAMESPACE": NAMESPACE},
            setup=SETUP,
        )

    @pytest.fixture
    def unreachable_backend_spec(self) -> BackendSpec:
        return BackendSpec(
            "locks_cache.DjangoRedisCacheLockBackend", options={"cache": "django-redis-down"}, setup=SETUP
        )


class TestDjangoMemcachedCacheContract(ContractTests):
    @pytest.fixture
    def backend_spec(self, memcached_url: str) -> BackendSpec:
        return BackendSpec(
            "locks_cache.DjangoMemcachedCacheLockBackend",
            options={"cache": "memcached", "NAMESPACE": NAMESPACE},
            setup=SETUP,
        )

    @pytest.fixture
    def unreachable_backend_spec(self) -> BackendSpec:
        return BackendSpec(
            "locks_cache.DjangoMemcachedCacheLockBackend", options={"cache": "memcached-down"}, setup=SETUP
        )
