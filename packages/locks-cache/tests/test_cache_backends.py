"""What the cache backends add to the contract: options, keys, refusals, Redis specifics."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from conftest import MEMCACHED_URL, NAMESPACE, REDIS_URL
from django.core.exceptions import ImproperlyConfigured

import locks
from locks import LockLost
from locks.backends import BaseLockBackend
from locks_cache import (
    DjangoCacheLockBackend,
    DjangoMemcachedCacheLockBackend,
    DjangoRedisCacheLockBackend,
    MemcachedLockBackend,
    RedisLockBackend,
)
from locks_cache.memcached_lock import RELATIVE_EXPIRY_MAX, memcached_expiry, parse_server


@pytest.fixture
def redis_backend() -> Iterator[RedisLockBackend]:
    backend = RedisLockBackend(location=REDIS_URL, options={"NAMESPACE": NAMESPACE})
    yield backend
    backend.close()


@pytest.fixture
def memcached_backend(memcached_url: str) -> Iterator[MemcachedLockBackend]:
    backend = MemcachedLockBackend(location=memcached_url, options={"NAMESPACE": NAMESPACE})
    yield backend
    backend.close()


def unique() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def _check_release_after_takeover(
    backend: BaseLockBackend, other: BaseLockBackend, ttl: float, expire: Callable[[str], object]
) -> None:
    """A hold of ``ttl`` seconds on ``backend`` ends (``expire(name)``) and ``other`` takes the
    lock: the old holder's release raises LockLost and leaves the new holder's lock in place."""
    name = unique()
    old = backend.lock(name, ttl=ttl)
    old.acquire(timeout=5)
    expire(name)
    new = other.lock(name, ttl=30)
    assert new.acquire(timeout=0)
    with pytest.raises(LockLost):
        old.release()
    assert backend.lock(name).locked()
    new.release()


class TestRedisOptions:
    def test_url_query_gives_lock_options_and_keeps_driver_options(self) -> None:
        backend = RedisLockBackend.from_url("redis://127.0.0.1:6379/3?ttl=12&namespace=app:&socket_timeout=4")
        assert backend.default_ttl == 12.0
        assert backend.namespace == "app:"
        assert backend.client.connection_pool.connection_kwargs["socket_timeout"] == 4.0
        assert backend.client.connection_pool.connection_kwargs["db"] == 3

    def test_connect_picks_the_redis_backend(self) -> None:
        backend = locks.connect("redis://127.0.0.1:6379/0")
        assert isinstance(backend, RedisLockBackend)
        assert isinstance(locks.connect("rediss://user:secret@127.0.0.1:6380/0"), RedisLockBackend)

    def test_tls_and_credentials_come_from_the_url_and_never_show(self) -> None:
        backend = RedisLockBackend(location="rediss://user:s3cret@127.0.0.1:1/0?ssl_cert_reqs=none")
        kwargs = backend.client.connection_pool.connection_kwargs
        assert kwargs["username"] == "user" and kwargs["password"] == "s3cret"
        assert backend.client.connection_pool.connection_class.__name__ == "SSLConnection"
        assert "s3cret" not in backend._where()

    @pytest.mark.parametrize(
        "options",
        [{"TTL": 0}, {"TTL": "soon"}, {"NAMESPACE": "has space"}, {"CLUSTER": "maybe"}, {"UNKNOWN": 1}],
    )
    def test_bad_options_are_improperly_configured(self, options: dict[str, object]) -> None:
        with pytest.raises(ImproperlyConfigured):
            RedisLockBackend(location=REDIS_URL, options=options)

    def test_keys_of_one_lock_share_a_cluster_hash_slot(self, redis_backend: RedisLockBackend) -> None:
        from redis.crc import key_slot

        for name in ("plain", "x" * 500, "{braces}", "🔒"):
            keys = redis_backend.keys_of(redis_backend.make_key(name))
            slots = {key_slot(k.encode()) for k in (keys.lock, keys.fence, keys.wait, keys.wake)}
            assert len(slots) == 1, (name, keys.lock)


class TestRedisBehaviour:
    def test_value_records_the_holder_for_listing(self, redis_backend: RedisLockBackend) -> None:
        name = unique()
        with redis_backend.lock(name, timeout=5) as held:
            (info,) = redis_backend.holders(prefix=name)
            assert info.name == name
            assert info.token == held.token
            assert info.pid is not None and info.expires_at is not None

    def test_shared_holders_are_listed(self, redis_backend: RedisLockBackend) -> None:
        name = unique()
        with redis_backend.lock(name, shared=True, timeout=5), redis_backend.lock(name, shared=True, timeout=5):
            pass  # the same thread nests: one server hold
        reader = redis_backend.lock(name, shared=True)
        reader.acquire(timeout=5)
        key = redis_backend.make_key(name)
        shared = [h for h in redis_backend.holders() if h.key == key]
        assert len(shared) == 1 and shared[0].shared
        reader.release()
        assert not redis_backend.lock(name).locked()

    def test_an_expired_reader_does_not_block_a_writer(self, redis_backend: RedisLockBackend) -> None:
        name = unique()
        reader = redis_backend.lock(name, shared=True, ttl=0.3)
        reader.acquire(timeout=5)
        writer = RedisLockBackend(location=REDIS_URL, options={"NAMESPACE": NAMESPACE}).lock(name)
        assert writer.acquire(timeout=5)
        with pytest.raises(LockLost):
            reader.release()
        writer.release()

    def test_release_of_a_lock_taken_over_after_expiry_leaves_the_new_holder(
        self, redis_backend: RedisLockBackend
    ) -> None:
        other = RedisLockBackend(location=REDIS_URL, options={"NAMESPACE": NAMESPACE})
        _check_release_after_takeover(redis_backend, other, 0.2, lambda name: time.sleep(0.3))

    def test_fencing_tokens_keep_growing_after_the_counter_expires(self, redis_backend: RedisLockBackend) -> None:
        name = unique()
        with redis_backend.lock(name, timeout=5) as held:
            first = held.token
        redis_backend.client.delete(redis_backend.keys_of(redis_backend.make_key(name)).fence)
        with redis_backend.lock(name, timeout=5) as held:
            assert held.token > first

    def test_a_waiter_is_woken_by_the_release_not_by_polling(self, redis_backend: RedisLockBackend) -> None:
        name = unique()
        holder = redis_backend.lock(name)
        holder.acquire(timeout=5)
        key = redis_backend.keys_of(redis_backend.make_key(name))
        results: list[bool] = []

        import threading

        waiter = threading.Thread(target=lambda: results.append(redis_backend.lock(name).acquire(timeout=10)))
        waiter.start()
        deadline = time.monotonic() + 5
        while not redis_backend.client.exists(key.wait):  # the waiter registered and blocks
            assert time.monotonic() < deadline
            time.sleep(0.01)
        holder.release()
        waiter.join(10)
        assert results == [True]

    def test_native_asyncio_uses_no_thread(self, redis_backend: RedisLockBackend) -> None:
        name = unique()

        async def main() -> bool:
            async with redis_backend.alock(name, timeout=5, ttl=5) as held:
                await held.extend(10)
                return await held.locked()

        assert asyncio.run(main())
        assert not redis_backend.lock(name).locked()


def direct_connection_id(backend: RedisLockBackend) -> int:
    """The server's id of the idle connection the lock scripts run on."""
    assert backend._direct is not None
    (connection,) = backend._direct._idle
    connection.send_command("CLIENT", "ID")
    return int(connection.read_response())


class TestRedisScriptConnections:
    """The lock scripts run on connections of their own (``locks_cache.redis_connections``)."""

    def test_one_thread_reuses_one_connection(self, redis_backend: RedisLockBackend) -> None:
        name = unique()
        with redis_backend.lock(name, timeout=5):
            pass
        first = direct_connection_id(redis_backend)
        for _ in range(20):
            with redis_backend.lock(name, timeout=5):
                pass
        assert direct_connection_id(redis_backend) == first

    def test_scripts_are_sent_again_after_a_script_flush(self, redis_backend: RedisLockBackend) -> None:
        name = unique()
        with redis_backend.lock(name, timeout=5) as held:
            first = held.token
        redis_backend.client.script_flush()
        with redis_backend.lock(name, timeout=5) as held:
            assert held.token is not None and first is not None and held.token > first
        assert not redis_backend.lock(name).locked()

    def test_a_connection_the_server_closed_is_replaced_without_an_error(self, redis_backend: RedisLockBackend) -> None:
        name = unique()
        handle = redis_backend.lock(name)
        assert handle.acquire(timeout=5)
        killed = direct_connection_id(redis_backend)
        assert redis_backend.client.client_kill_filter(_id=killed) == 1
        handle.release()  # the idle connection is dead: a new one carries the release
        assert not handle.locked()
        assert direct_connection_id(redis_backend) != killed
        with redis_backend.lock(name, timeout=5):
            pass

    def test_an_acquire_sent_twice_finds_its_own_hold(self, redis_backend: RedisLockBackend) -> None:
        """A call sent again after its connection broke before the reply must not leave the lock
        held by nobody's knowledge until its lease ends."""
        from locks.backends import LockRequest, Owner

        name = unique()
        request = LockRequest(name, redis_backend.make_key(name), shared=False, ttl=30, owner=Owner.current())
        script, keys, args, _ = redis_backend._acquire_args(request, 0)
        first = redis_backend._run(script, keys, args)
        again = redis_backend._run(script, keys, args)
        assert first[0] == 1 and list(again) == list(first)
        other = RedisLockBackend(location=REDIS_URL, options={"NAMESPACE": NAMESPACE}).lock(name)
        assert not other.acquire(timeout=0)
        assert redis_backend.force_release(name) == 1

    def test_a_forked_child_uses_its_own_connections(self, redis_backend: RedisLockBackend) -> None:
        import multiprocessing

        name, other_name = unique(), unique()
        with redis_backend.lock(name, timeout=5):
            pass
        parent_id = direct_connection_id(redis_backend)
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()

        def child() -> None:
            try:
                for _ in range(200):
                    with redis_backend.lock(other_name, timeout=5):
                        pass
                queue.put(direct_connection_id(redis_backend))
            except BaseException as exc:
                queue.put(repr(exc))

        process = ctx.Process(target=child)
        process.start()
        for _ in range(200):  # at the same time: a shared socket would mix up the replies
            with redis_backend.lock(name, timeout=5):
                pass
        child_id = queue.get(timeout=30)
        process.join(20)
        assert isinstance(child_id, int) and child_id != parent_id, child_id
        # the child dropped the connection it inherited without shutting the parent's down
        assert direct_connection_id(redis_backend) == parent_id
        with redis_backend.lock(name, timeout=5):
            pass

    def test_an_error_reply_keeps_the_connection(self, redis_backend: RedisLockBackend) -> None:
        import redis

        name = unique()
        with redis_backend.lock(name, timeout=5):
            pass
        first = direct_connection_id(redis_backend)
        with pytest.raises(redis.exceptions.ResponseError):
            keys = redis_backend.keys_of(redis_backend.make_key(name))
            redis_backend._run("acquire", [keys.lock, keys.fence, keys.wait, keys.wake], [b"t", b"not-a-ttl", 0])
        assert direct_connection_id(redis_backend) == first
        with redis_backend.lock(name, timeout=5):
            pass

    def test_resp3_connections(self) -> None:
        sep = "&" if "?" in REDIS_URL else "?"
        backend = RedisLockBackend(location=f"{REDIS_URL}{sep}protocol=3", options={"NAMESPACE": NAMESPACE})
        name = unique()
        try:
            with backend.lock(name, timeout=5) as held:
                assert isinstance(held.token, int)
                assert not RedisLockBackend(location=REDIS_URL, options={"NAMESPACE": NAMESPACE}).lock(name).acquire(0)
            assert backend._direct is not None and backend._direct._idle[0].protocol in (3, "3")
        finally:
            backend.close()

    def test_asyncio_calls_reuse_a_connection_and_replace_a_dead_one(self, redis_backend: RedisLockBackend) -> None:
        name = unique()

        async def connection_id() -> int:
            direct = redis_backend._astate().direct
            assert direct is not None
            (connection,) = direct._idle
            await connection.send_command("CLIENT", "ID")
            return int(await connection.read_response())

        async def main() -> None:
            for _ in range(3):
                async with redis_backend.alock(name, timeout=5):
                    pass
            first = await connection_id()
            async with redis_backend.alock(name, timeout=5):
                pass
            assert await connection_id() == first
            handle = redis_backend.alock(name)
            assert await handle.acquire(timeout=5)
            await redis_backend._astate().client.client_kill_filter(_id=first)
            await handle.release()  # on a new connection, without an error
            assert not await handle.locked()
            assert await connection_id() != first

        asyncio.run(main())

    def test_close_closes_the_script_connections(self) -> None:
        backend = RedisLockBackend(location=REDIS_URL, options={"NAMESPACE": NAMESPACE})
        with backend.lock(unique(), timeout=5):
            pass
        ident = direct_connection_id(backend)
        backend.close()
        listed = RedisLockBackend(location=REDIS_URL).client.client_list()
        assert ident not in {int(entry["id"]) for entry in listed}


class TestMemcached:
    def test_expiry_is_never_shorter_than_the_ttl(self) -> None:
        assert memcached_expiry(0.2) == 2
        assert memcached_expiry(1.0) == 2
        assert memcached_expiry(59.5) == 61

    def test_ttl_over_thirty_days_becomes_an_absolute_time(self) -> None:
        now = 1_800_000_000.0
        assert memcached_expiry(RELATIVE_EXPIRY_MAX - 1, now) == RELATIVE_EXPIRY_MAX
        assert memcached_expiry(RELATIVE_EXPIRY_MAX + 10, now) == int(now) + RELATIVE_EXPIRY_MAX + 11

    def test_a_forty_day_lease_holds(self, memcached_backend: MemcachedLockBackend) -> None:
        name = unique()
        with memcached_backend.lock(name, ttl=40 * 24 * 3600, timeout=5):
            assert memcached_backend.lock(name).locked()
        assert not memcached_backend.lock(name).locked()

    def test_server_addresses(self) -> None:
        assert parse_server("memcached://10.0.0.1:11311") == ("10.0.0.1", 11311)
        assert parse_server("127.0.0.1") == ("127.0.0.1", 11211)
        assert parse_server("memcached:///run/memcached.sock") == "/run/memcached.sock"
        with pytest.raises(ImproperlyConfigured, match="one server"):
            parse_server("memcached://a:1,b:2")
        with pytest.raises(ImproperlyConfigured):
            parse_server("redis://a:1")

    def test_keys_stay_within_memcached_rules(self, memcached_backend: MemcachedLockBackend) -> None:
        for name in ("x" * 1000, "white space", "ctrl\x01", "🔒"):
            key = memcached_backend.server_key(memcached_backend.make_key(name))
            assert len(key) <= 250
            assert all(33 <= byte < 127 for byte in key)

    def test_noreply_cannot_be_turned_on(self, memcached_url: str) -> None:
        backend = MemcachedLockBackend(location=memcached_url, options={"default_noreply": True})
        assert backend.client.default_noreply is False
        name = unique()
        other = MemcachedLockBackend(location=memcached_url)
        with backend.lock(name, timeout=5):
            assert not other.lock(name).acquire(timeout=0)

    def test_release_after_expiry_never_deletes_the_new_holder(self, memcached_backend: MemcachedLockBackend) -> None:
        other = MemcachedLockBackend(location=memcached_backend.location, options={"NAMESPACE": NAMESPACE})
        # force_release: as if it had expired
        _check_release_after_takeover(memcached_backend, other, 0.1, memcached_backend.force_release)

    def test_url_options(self, memcached_url: str) -> None:
        backend = locks.connect(memcached_url + "?ttl=7&namespace=m:")
        assert isinstance(backend, MemcachedLockBackend)
        assert backend.default_ttl == 7.0 and backend.namespace == "m:"


class TestDjangoCaches:
    def test_redis_alias_gives_the_redis_backend_on_the_cache_pool(self) -> None:
        from django.core.cache import caches

        backend = DjangoCacheLockBackend(options={"CACHE": "redis"})
        assert isinstance(backend.engine, RedisLockBackend)
        # the cache's pool has a socket timeout (see conftest): locks use that very pool
        assert backend.client.connection_pool is caches["redis"]._cache._get_connection_pool(True)
        assert backend.spec().build().cache_alias == "redis"

    def test_the_lower_case_cache_option_still_works_with_a_deprecation_warning(self) -> None:
        with pytest.warns(DeprecationWarning, match=r"OPTIONS\['CACHE'\]"):
            backend = DjangoCacheLockBackend(options={"cache": "redis"})
        assert isinstance(backend.engine, RedisLockBackend)
        assert backend.cache_alias == "redis"
        options = backend.spec().options  # a worker builds it without the warning
        assert options["CACHE"] == "redis" and "cache" not in options

    def test_django_redis_alias_uses_its_own_client(self) -> None:
        from django.core.cache import caches

        backend = DjangoRedisCacheLockBackend(options={"CACHE": "django-redis", "NAMESPACE": NAMESPACE})
        own = caches["django-redis"].client.get_client(write=True)
        assert backend.client.connection_pool is own.connection_pool
        plain = RedisLockBackend(location=REDIS_URL, options={"NAMESPACE": NAMESPACE})
        name = unique()
        with backend.lock(name, timeout=5):
            # the same server and keys as a Redis backend pointed at that server
            assert plain.is_locked(plain.make_key(name))
        assert not plain.is_locked(plain.make_key(name))
        plain.close()
        backend.close()

    def test_a_cache_without_socket_timeout_gets_one_for_locks(self) -> None:
        from django.core.cache import caches

        backend = DjangoCacheLockBackend(options={"CACHE": "redis-no-timeout"})
        pool = caches["redis-no-timeout"]._cache._get_connection_pool(True)
        assert backend.client.connection_pool is not pool
        assert backend.client.connection_pool.connection_kwargs["socket_timeout"] == 5.0
        assert backend.client.connection_pool.connection_kwargs["host"] == pool.connection_kwargs["host"]
        with backend.lock(unique(), timeout=5):
            pass
        backend.close()

    def test_memcached_alias_gives_the_memcached_backend(self, memcached_url: str) -> None:
        backend = DjangoCacheLockBackend(options={"CACHE": "memcached"})
        assert isinstance(backend.engine, MemcachedLockBackend)
        with backend.lock(unique(), timeout=5):
            pass

    @pytest.mark.parametrize(
        ("alias", "reason"),
        [
            ("locmem", "one process"),
            ("default", "one process"),
            ("files", "checks, then writes"),
            ("dummy", "always succeeds"),
            ("database", "locks_rowlock"),
            ("memcached-two", "2 servers"),
            ("nope", "not in CACHES"),
        ],
    )
    def test_unsafe_caches_are_refused_with_the_reason(self, alias: str, reason: str) -> None:
        with pytest.raises(ImproperlyConfigured, match=reason):
            DjangoCacheLockBackend(options={"CACHE": alias})

    def test_several_servers_can_be_accepted_knowingly(self) -> None:
        backend = DjangoMemcachedCacheLockBackend(options={"CACHE": "memcached-two", "SEVERAL_SERVERS": True})
        assert isinstance(backend.engine, MemcachedLockBackend)

    def test_locks_setting_with_a_cache_alias(self, memcached_url: str) -> None:
        from django.test import override_settings

        with override_settings(
            LOCKS={
                "default": {"BACKEND": "locks_cache.DjangoCacheLockBackend", "OPTIONS": {"CACHE": "redis"}},
                "mc": {"BACKEND": "locks_cache.DjangoCacheLockBackend", "OPTIONS": {"CACHE": "memcached"}},
            }
        ):
            name = unique()
            with locks.lock(name, timeout=5) as held:
                assert isinstance(held.token, int)
            with locks.lock(name, using="mc", timeout=5):
                pass

    def test_memcached_url_constant_matches_the_fixture(self, memcached_url: str) -> None:
        assert memcached_url == MEMCACHED_URL


def test_a_forked_child_uses_its_own_memcached_connections(memcached_backend: MemcachedLockBackend) -> None:
    import multiprocessing

    name = unique()
    with memcached_backend.lock(name, timeout=5):
        pass  # the parent's pool now has a connection
    parent_client = memcached_backend.client
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child() -> None:
        with memcached_backend.lock(name, timeout=5):
            queue.put(memcached_backend.client is not parent_client)

    process = ctx.Process(target=child)
    process.start()
    assert queue.get(timeout=20) is True
    process.join(20)
    with memcached_backend.lock(name, timeout=5):
        pass
