"""Peers measured beside the cache backends by ``locks bench --peers``.

Each class is built again in every worker process and follows the bench protocol:
``acquire(name)`` blocks until held, ``release(name)``, ``close()``. Peers run with their
defaults (that is what their users get), on keys of their own.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from locks.backends import BaseLockBackend
from locks.backends.spec import BackendSpec, BenchSubject
from locks.bench.subjects import EnteredLocks, KeptLocks, configure_django

if TYPE_CHECKING:
    from locks_cache.redis_lock import RedisLockBackend

_LEASE = 60  # seconds: every peer gets the same lease, long enough never to expire mid-run

_COMPARE_AND_DELETE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _driver_url(backend: RedisLockBackend) -> str:
    return backend._url


def redis_peers(backend: BaseLockBackend) -> list[BenchSubject]:
    """Beside a Redis backend: the raw floor, redis-py's Lock, python-redis-lock, pottery,
    django-cache-lock (those installed), and the Memcached side when LOCKS_MEMCACHED_URL is set."""
    from locks_cache.redis_lock import RedisLockBackend

    if not isinstance(backend, RedisLockBackend):
        return []
    url = _driver_url(backend)
    peers = [
        _redis_floor(url),
        BenchSubject("the same, on one connection", "locks_cache.bench:RawRedisConnection", {"url": url}),
    ]
    for module, label, factory in (
        ("redis", "redis-py Lock", "locks_cache.bench:RedisPyLock"),
        ("redis_lock", "python-redis-lock", "locks_cache.bench:PythonRedisLock"),
        ("pottery", "pottery Redlock (1 node)", "locks_cache.bench:PotteryRedlock"),
        ("django_lock", "django-cache-lock (RedisCache)", "locks_cache.bench:DjangoCacheLock"),
    ):
        if _importable(module):
            kwargs = {"url": url}
            if factory.endswith("DjangoCacheLock"):
                kwargs = {"backend": "django.core.cache.backends.redis.RedisCache", "location": url}
            peers.append(BenchSubject(label, factory, kwargs))
    memcached = os.environ.get("LOCKS_MEMCACHED_URL")
    if memcached:
        # The Memcached side in the same run: its floor first (the ratios of the rows after it are
        # to that floor), this backend, and django-cache-lock there.
        from locks.bench import backend_subject

        floor, *others = _memcached_subjects(memcached.split("?")[0])
        peers.append(floor)
        peers.append(
            backend_subject("locks-cache Memcached", BackendSpec("locks_cache.MemcachedLockBackend", memcached))
        )
        peers.extend(others)
    return peers


def _redis_floor(url: str) -> BenchSubject:
    return BenchSubject("raw SET NX + Lua release", "locks_cache.bench:RawRedis", {"url": url}, floor=True)


def memcached_peers(backend: BaseLockBackend) -> list[BenchSubject]:
    """Beside a Memcached backend: the raw floor, django-cache-lock, and the Redis side when
    LOCKS_REDIS_URL is set."""
    from locks_cache.memcached_lock import MemcachedLockBackend

    if not isinstance(backend, MemcachedLockBackend):
        return []
    peers = _memcached_subjects(backend._server_url.split("?")[0])
    redis_url = os.environ.get("LOCKS_REDIS_URL")
    if redis_url:
        from locks.bench import backend_subject

        # the Redis floor first, so that the Redis row's ratios are to it
        from locks_cache.options import lift_query
        from locks_cache.redis_lock import _URL_OPTIONS

        peers.append(_redis_floor(lift_query(redis_url, _URL_OPTIONS)[0]))
        peers.append(backend_subject("locks-cache Redis", BackendSpec("locks_cache.RedisLockBackend", redis_url)))
    return peers


def _memcached_subjects(server: str) -> list[BenchSubject]:
    peers = [BenchSubject("raw add + gets/cas release", "locks_cache.bench:RawMemcached", {"url": server}, floor=True)]
    if _importable("django_lock"):
        peers.append(
            BenchSubject(
                "django-cache-lock (PyMemcacheCache)",
                "locks_cache.bench:DjangoCacheLock",
                {
                    "backend": "django.core.cache.backends.memcached.PyMemcacheCache",
                    "location": server.removeprefix("memcached://"),
                },
            )
        )
    return peers


class _OnRedis:
    """A peer holding one redis-py client on ``url``."""

    def __init__(self, url: str) -> None:
        import redis

        super().__init__()
        self.client = redis.Redis.from_url(url)

    def close(self) -> None:
        self.client.close()


class RawRedis(_OnRedis):
    """The floor: one ``SET NX PX`` to acquire (polling every millisecond when busy) and one
    ``EVALSHA`` compare-and-delete to release. No fencing, no wake-up, no bookkeeping."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.release_script = self.client.register_script(_COMPARE_AND_DELETE)
        self.tokens: dict[str, bytes] = {}

    def acquire(self, name: str) -> None:
        token = os.urandom(16).hex().encode()
        key = "bench-raw:" + name
        while not self.client.set(key, token, nx=True, px=_LEASE * 1000):
            time.sleep(0.001)
        self.tokens[name] = token

    def release(self, name: str) -> None:
        self.release_script(["bench-raw:" + name], [self.tokens.pop(name)])


class RawRedisConnection(RawRedis):
    """The floor's two commands sent on one redis-py connection, without the client's per-command
    machinery (pool checks, retry and observability wrappers), as locks-cache sends its scripts:
    what the wire and the server cost."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.connection: Any = self.client.connection_pool.make_connection()
        self.release_sha = self.client.script_load(_COMPARE_AND_DELETE)

    def _call(self, *args: Any) -> Any:
        self.connection.send_command(*args)
        return self.connection.read_response()

    def acquire(self, name: str) -> None:
        token = os.urandom(16).hex().encode()
        key = "bench-rawconn:" + name
        while not self._call("SET", key, token, "NX", "PX", _LEASE * 1000):
            time.sleep(0.001)
        self.tokens[name] = token

    def release(self, name: str) -> None:
        self._call("EVALSHA", self.release_sha, 1, "bench-rawconn:" + name, self.tokens.pop(name))

    def close(self) -> None:
        self.connection.disconnect()
        super().close()


class RedisPyLock(_OnRedis, KeptLocks):
    """redis-py's ``Redis.lock()`` (polls every 100 ms while busy, by default)."""

    def new(self, name: str) -> Any:
        return self.client.lock("bench-redispy:" + name, timeout=_LEASE)


class PythonRedisLock(_OnRedis, EnteredLocks):
    """python-redis-lock (waiters block on a signal list); a fresh lock object per acquisition."""

    def new(self, name: str) -> Any:
        import redis_lock

        return redis_lock.Lock(self.client, "bench-prl:" + name, expire=_LEASE)


class PotteryRedlock(_OnRedis, KeptLocks):
    """pottery's ``Redlock`` with one master."""

    def new(self, name: str) -> Any:
        from pottery import Redlock

        return Redlock(key="bench-pottery:" + name, masters={self.client}, auto_release_time=_LEASE)


class DjangoCacheLock(KeptLocks):
    """django-cache-lock's ``lock()`` on a Django cache (polls every 100 ms while busy)."""

    def __init__(self, backend: str, location: str) -> None:
        super().__init__()
        configure_django(CACHES={"default": {"BACKEND": backend, "LOCATION": location}})

    def new(self, name: str) -> Any:
        from django_lock import lock

        return lock("bench-dcl:" + name, timeout=_LEASE)


class RawMemcached:
    """The Memcached floor: ``add`` to acquire (polling every millisecond), ``gets`` + ``cas`` to
    release without touching another holder's lock."""

    def __init__(self, url: str) -> None:
        from pymemcache.client.base import Client

        from locks_cache.memcached_lock import parse_server

        self.client = Client(parse_server(url), default_noreply=False, no_delay=True)
        self.tokens: dict[str, bytes] = {}

    def acquire(self, name: str) -> None:
        token = os.urandom(16).hex().encode()
        key = "bench-raw:" + name
        while not self.client.add(key, token, expire=_LEASE, noreply=False):
            time.sleep(0.001)
        self.tokens[name] = token

    def release(self, name: str) -> None:
        key = "bench-raw:" + name
        value, cas = self.client.gets(key)
        if value == self.tokens.pop(name):
            self.client.cas(key, value, cas, expire=-1, noreply=False)

    def close(self) -> None:
        self.client.close()
