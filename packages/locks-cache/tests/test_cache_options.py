"""The OPTIONS of the cache backends: declared once, refused when misspelt, documented as declared."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import NAMESPACE, REDIS_URL
from django.core.exceptions import ImproperlyConfigured

import locks
from locks.backends import FENCING, NOTIFY, TTL
from locks.backends.options import Option, options_table
from locks_cache import (
    DjangoCacheLockBackend,
    DjangoMemcachedCacheLockBackend,
    DjangoRedisCacheLockBackend,
    MemcachedLockBackend,
    RedisLockBackend,
)
from locks_cache.django_cache import DJANGO_CACHE_OPTIONS
from locks_cache.memcached_lock import MEMCACHED_OPTIONS
from locks_cache.redis_lock import REDIS_OPTIONS

PAGE = Path(__file__).resolve().parents[3] / "docs" / "pages" / "backends" / "cache.md"


def unique() -> str:
    return f"o-{uuid.uuid4().hex[:12]}"


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


@pytest.mark.parametrize("declared", [REDIS_OPTIONS, MEMCACHED_OPTIONS, DJANGO_CACHE_OPTIONS])
def test_the_settings_page_shows_the_declared_options(declared: tuple[Option, ...]) -> None:
    table = options_table(declared)
    assert table in PAGE.read_text(encoding="utf-8"), f"docs/pages/backends/cache.md must show:\n{table}"


class TestRedis:
    def test_a_typo_is_refused_at_construction_with_the_alias_and_a_hint(self) -> None:
        with pytest.raises(ImproperlyConfigured) as info:
            RedisLockBackend(alias="jobs", location=REDIS_URL, options={"NAMESAPCE": "x:"})
        message = str(info.value)
        assert "RedisLockBackend (alias 'jobs')" in message
        assert "nor a parameter of redis-py; did you mean 'NAMESPACE'?" in message

    def test_a_typo_in_the_url_is_refused_by_connect(self) -> None:
        with pytest.raises(ImproperlyConfigured, match=r"RedisLockBackend \(alias 'url'\): 'fencnig' is not"):
            locks.connect(with_query(REDIS_URL, "fencnig=1"))
        with pytest.raises(ImproperlyConfigured, match="did you mean 'NAMESPACE'"):
            locks.connect(with_query(REDIS_URL, "namesapce=x:"))

    @pytest.mark.parametrize("options", [{"WAIT_SLICE": 0}, {"CLUSTER": "maybe"}, {"DEFAULT_TTL": "soon"}])
    def test_an_ill_typed_option_is_refused_naming_the_alias(self, options: dict[str, Any]) -> None:
        with pytest.raises(ImproperlyConfigured, match=r"RedisLockBackend \(alias 'jobs'\): OPTIONS\["):
            RedisLockBackend(alias="jobs", location=REDIS_URL, options=options)

    def test_a_redis_py_keyword_passes_through_and_works(self) -> None:
        client_name = unique()
        backend = RedisLockBackend(
            location=REDIS_URL,
            options={"NAMESPACE": NAMESPACE, "client_name": client_name, "HEALTH_CHECK_INTERVAL": 30},
        )
        assert backend.options == {"client_name": client_name, "HEALTH_CHECK_INTERVAL": 30}
        kwargs = backend.client.connection_pool.connection_kwargs
        assert kwargs["client_name"] == client_name and kwargs["health_check_interval"] == 30
        with backend.lock(unique(), timeout=5):
            # the lock scripts ran on a connection made with that keyword
            assert client_name in {entry["name"] for entry in backend.client.client_list()}
        backend.close()

    def test_a_misspelt_redis_py_keyword_is_refused_with_a_hint(self) -> None:
        with pytest.raises(ImproperlyConfigured, match="did you mean 'socket_timeout'"):
            RedisLockBackend(location=REDIS_URL, options={"socket_timout": 1})
        with pytest.raises(ImproperlyConfigured, match="did you mean 'socket_timeout'"):
            locks.connect(with_query(REDIS_URL, "socket_timout=1"))

    def test_the_url_gives_lock_options_and_keeps_redis_py_ones(self) -> None:
        backend = locks.connect(with_query(REDIS_URL, "TTL=3&Wait_Slice=1&socket_timeout=4"), NAMESPACE="u:")
        assert isinstance(backend, RedisLockBackend)
        assert backend.default_ttl == 3.0 and backend.wait_slice == 1.0 and backend.namespace == "u:"
        assert "ttl" not in backend._url.lower() and "socket_timeout=4" in backend._url
        assert backend.client.connection_pool.connection_kwargs["socket_timeout"] == 4.0
        with backend.lock(unique(), timeout=5):
            pass
        backend.close()

    def test_options_win_over_the_url(self) -> None:
        backend = RedisLockBackend(location=with_query(REDIS_URL, "ttl=3"), options={"TTL": 7})
        assert backend.default_ttl == 7.0
        assert backend.spec().build().default_ttl == 7.0
        backend.close()

    @pytest.mark.parametrize("options", [{}, {"ttl": "5", "CLUSTER": False}, {"WATCHDOG": True, "socket_timeout": 2}])
    def test_capabilities_are_known_without_connecting(self, options: dict[str, Any]) -> None:
        expected = RedisLockBackend.capabilities_with(options)
        assert FENCING in expected and NOTIFY in expected
        backend = RedisLockBackend(location=REDIS_URL, options=options)
        assert backend.capabilities == expected
        backend.close()
        with pytest.raises(ImproperlyConfigured, match="did you mean 'NAMESPACE'"):
            RedisLockBackend.capabilities_with({**options, "namespce": "x"})


class TestMemcached:
    def test_a_typo_is_refused_with_the_alias_and_a_hint(self, memcached_url: str) -> None:
        with pytest.raises(ImproperlyConfigured) as info:
            MemcachedLockBackend(alias="mc", location=memcached_url, options={"TIMOUT": 1})
        assert "MemcachedLockBackend (alias 'mc')" in str(info.value)
        assert "did you mean 'TIMEOUT'?" in str(info.value)
        with pytest.raises(ImproperlyConfigured, match=r"\(alias 'url'\): 'namesapce' is not.*'NAMESPACE'"):
            locks.connect(with_query(memcached_url, "namesapce=x:"))

    def test_a_pymemcache_keyword_passes_through_and_a_misspelt_one_is_refused(self, memcached_url: str) -> None:
        backend = MemcachedLockBackend(location=memcached_url, options={"max_pool_size": 3, "NAMESPACE": NAMESPACE})
        assert backend.client.client_pool.max_size == 3
        with backend.lock(unique(), timeout=5):
            pass
        backend.close()
        with pytest.raises(ImproperlyConfigured, match="did you mean 'max_pool_size'"):
            MemcachedLockBackend(location=memcached_url, options={"max_pool_sise": 3})

    @pytest.mark.parametrize("options", [{}, {"ttl": "5"}, {"WATCHDOG": True, "TIMEOUT": 2}])
    def test_capabilities_are_known_without_connecting(self, memcached_url: str, options: dict[str, Any]) -> None:
        backend = MemcachedLockBackend(location=memcached_url, options=options)
        assert backend.capabilities == MemcachedLockBackend.capabilities_with(options)
        backend.close()


class TestDjangoCaches:
    def test_a_misspelt_cache_option_is_refused_with_a_hint(self) -> None:
        with pytest.raises(ImproperlyConfigured) as info:
            DjangoCacheLockBackend(alias="jobs", options={"cahce": "memcached"})
        message = str(info.value)
        assert "DjangoCacheLockBackend (alias 'jobs')" in message and "did you mean 'CACHE'?" in message

    def test_an_option_of_the_other_kind_is_refused_by_the_engine(self, memcached_url: str) -> None:
        with pytest.raises(ImproperlyConfigured, match="'WAIT_SLICE' is not an option"):
            DjangoCacheLockBackend(options={"CACHE": "memcached", "WAIT_SLICE": 1})

    def test_a_backend_of_one_kind_refuses_a_cache_of_the_other(self, memcached_url: str) -> None:
        with pytest.raises(ImproperlyConfigured, match="takes redis caches"):
            DjangoRedisCacheLockBackend(options={"CACHE": "memcached"})
        with pytest.raises(ImproperlyConfigured, match="takes memcached caches"):
            DjangoMemcachedCacheLockBackend(options={"CACHE": "redis"})

    @pytest.mark.parametrize(
        ("options", "engine"),
        [
            ({"CACHE": "redis", "NAMESPACE": NAMESPACE}, RedisLockBackend),
            ({"CACHE": "django-redis", "ttl": "4"}, RedisLockBackend),
            ({"CACHE": "memcached", "NAMESPACE": NAMESPACE}, MemcachedLockBackend),
        ],
    )
    def test_one_class_holds_the_engine_of_the_cache_kind(
        self, memcached_url: str, options: dict[str, Any], engine: type[Any]
    ) -> None:
        capabilities = DjangoCacheLockBackend.capabilities_with(options)
        backend = DjangoCacheLockBackend(options=options)
        assert type(backend) is DjangoCacheLockBackend and type(backend.engine) is engine
        assert backend.capabilities == capabilities == engine.capabilities
        assert (FENCING in capabilities) is (engine is RedisLockBackend) and TTL in capabilities
        name = unique()
        with backend.lock(name, timeout=5) as held:
            assert backend.lock(name).locked()
            if engine is RedisLockBackend:
                assert isinstance(held.token, int)
        assert not backend.lock(name).locked()
        backend.close()
