"""Locks on a Django ``CACHES`` alias, through the cache's own client.

Django's cache API has ``add`` but no compare-and-delete, so a lock built on the API alone either
deletes other holders' locks (``get`` then ``delete``) or leaks. This backend therefore locks only
on caches that have an atomic owner-checked release, with their native client:

* ``django.core.cache.backends.redis.RedisCache`` and django-redis's ``RedisCache``: the Redis
  backend's scripts, on the cache's connection pool;
* ``django.core.cache.backends.memcached.PyMemcacheCache``: the Memcached backend's ``add`` and
  ``gets`` + ``cas``, on the cache's pymemcache client.

Every other cache is refused with the reason (:data:`REFUSED`): running a lock on it would
look fine in development and fail in production.

The backend is one class holding a *lock engine*: the :class:`~locks_cache.RedisLockBackend` or
:class:`~locks_cache.MemcachedLockBackend` that the cache's kind calls for, built around the
cache's own client, to which every primitive is handed. The kind and the servers are read from
the ``CACHES`` setting; Django has no public accessor of a cache's client, so the client is taken
in one place each (:func:`redis_client_of`, :func:`memcached_clients_of`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured

from locks.backends import BaseLockBackend, Hold, HolderInfo, LockRequest
from locks.backends.options import Option
from locks.backends.spec import BackendSpec
from locks.keys import Key, LockName
from locks_cache.memcached_lock import MemcachedLockBackend
from locks_cache.options import LEASE_OPTIONS, key_text
from locks_cache.redis_lock import WAIT_SLICE, RedisLockBackend

#: Cache backends that cannot lock safely, and why (matched on the class and its bases).
REFUSED: dict[str, str] = {
    "django.core.cache.backends.locmem.LocMemCache": (
        "LocMemCache lives in one process: two processes (or two servers) would both get the lock"
    ),
    "django.core.cache.backends.filebased.FileBasedCache": (
        "FileBasedCache's add() checks, then writes: two processes can both add the same key; "
        "use locks_file.FileLockBackend for locks on one machine"
    ),
    "django.core.cache.backends.dummy.DummyCache": "DummyCache stores nothing: its add() always succeeds",
    "django.core.cache.backends.db.DatabaseCache": (
        "DatabaseCache's add() can let two clients take an expired key at once, and it runs on the "
        "caller's connection and transaction; use locks_rowlock (database rows) or locks_pg / locks_mysql"
    ),
    "django.core.cache.backends.memcached.PyLibMCCache": (
        "the pylibmc client is not supported: use Django's PyMemcacheCache for the same server"
    ),
}

_REDIS = ("django.core.cache.backends.redis.RedisCache", "django_redis.cache.RedisCache")
_MEMCACHED = ("django.core.cache.backends.memcached.PyMemcacheCache",)


REDIS, MEMCACHED = "redis", "memcached"
_ENGINES: dict[str, type[RedisLockBackend] | type[MemcachedLockBackend]] = {
    REDIS: RedisLockBackend,
    MEMCACHED: MemcachedLockBackend,
}

#: The options of the Django cache backends, besides ``KEY_PREFIX`` and ``WATCHDOG``.
DJANGO_CACHE_OPTIONS: tuple[Option, ...] = (
    Option("CACHE", str, "default", "the `CACHES` alias whose server and client locks use"),
    Option(
        "SEVERAL_SERVERS",
        bool,
        False,
        "accept a `PyMemcacheCache` over several servers (keys move when one drops out)",
    ),
    Option(
        "NAMESPACE",
        str,
        None,
        "prefix of every key (at most 32 bytes on Memcached); not set: `<the cache's KEY_PREFIX>:locks:`, "
        "or `locks:` when the cache has none",
        check=key_text(64),
    ),
    *LEASE_OPTIONS,
    WAIT_SLICE,
)
_OWN = frozenset({"CACHE", "SEVERAL_SERVERS"})


def cache_setting(alias: str) -> Mapping[str, Any]:
    """``settings.CACHES[alias]``; ``ImproperlyConfigured`` when there is none."""
    from django.conf import settings

    caches: Mapping[str, Mapping[str, Any]] = settings.CACHES
    if alias not in caches:
        raise ImproperlyConfigured(f"OPTIONS['CACHE'] = {alias!r} is not in CACHES")
    return caches[alias]


def cache_kind(alias: str) -> str:
    """:data:`REDIS` or :data:`MEMCACHED`: the kind of ``CACHES[alias]``, from its ``BACKEND``
    class and bases, without building the cache; ``ImproperlyConfigured`` with the reason for a
    cache that cannot hold locks."""
    from django.utils.module_loading import import_string

    backend = cache_setting(alias).get("BACKEND", "")
    try:
        cls = import_string(backend)
    except ImportError as exc:
        raise ImproperlyConfigured(f"CACHES[{alias!r}]: cannot import BACKEND {backend!r}: {exc}") from exc
    paths = [f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__]
    if any(p in _REDIS for p in paths):
        return REDIS
    if any(p in _MEMCACHED for p in paths):
        return MEMCACHED
    for path in paths:
        if path in REFUSED:
            raise ImproperlyConfigured(f"CACHES[{alias!r}] cannot hold locks: {REFUSED[path]}.")
    raise ImproperlyConfigured(
        f"CACHES[{alias!r}] ({paths[0]}) cannot hold locks: Django's cache API has no atomic "
        "compare-and-delete, and only Redis and PyMemcache caches are known to have one natively"
    )


def cache_servers(alias: str) -> list[str]:
    """The servers of ``CACHES[alias]``, split from its ``LOCATION`` as Django splits them."""
    location = cache_setting(alias).get("LOCATION", "")
    servers = re.split("[;,]", location) if isinstance(location, str) else list(location)
    return [server for server in servers if server]


def redis_client_of(cache: Any) -> tuple[Any, bool]:
    """A redis-py client on the write pool of a Django ``RedisCache`` or a django-redis cache, and
    whether it is the lock backend's own to close (see :func:`_with_timeout`)."""
    import redis

    django_client = getattr(cache, "_cache", None)
    if django_client is not None and hasattr(django_client, "_get_connection_pool"):
        # Django's RedisCache builds a client object per call (~170 µs): one client on its pool.
        pool, owned = _with_timeout(django_client._get_connection_pool(True))
        return redis.Redis(connection_pool=pool), owned
    client = getattr(cache, "client", None)  # django-redis
    if client is not None and hasattr(client, "get_client"):
        redis_client = client.get_client(write=True)
        pool, owned = _with_timeout(redis_client.connection_pool)
        return (redis.Redis(connection_pool=pool) if owned else redis_client), owned
    raise ImproperlyConfigured(f"{type(cache).__name__}: cannot find its Redis client")


def _with_timeout(pool: Any) -> tuple[Any, bool]:
    """The cache's pool, or, when its connections have no socket timeout (Django's default), a
    pool of the same connections with one (and True): a frozen server must raise
    BackendUnavailable, not hang a lock call forever."""
    if pool.connection_kwargs.get("socket_timeout"):
        return pool, False
    kwargs = {**pool.connection_kwargs, "socket_timeout": 5.0}
    if not kwargs.get("socket_connect_timeout"):
        kwargs["socket_connect_timeout"] = 5.0
    return type(pool)(connection_class=pool.connection_class, **kwargs), True


def memcached_clients_of(alias: str) -> Callable[[bytes], Any]:
    """The per-server pymemcache client for a key, on the calling thread's cache object.

    The cache's HashClient answers "not stored" for a server it saw fail once, without raising:
    a lock needs the error. Its per-server clients are used instead (one per thread, as Django
    keeps one cache object per thread), routed by our own hash over every server."""
    from django.core.cache import caches
    from pymemcache.client.rendezvous import RendezvousHash

    def clients() -> dict[str, Any]:
        return caches[alias]._cache.clients  # type: ignore[attr-defined,no-any-return]

    nodes = list(clients())
    if len(nodes) == 1:
        return lambda key: next(iter(clients().values()))
    hasher = RendezvousHash(nodes)
    return lambda key: clients()[hasher.get_node(key.decode())]


class DjangoCacheLockBackend(BaseLockBackend):
    """Locks on any Django cache alias that can hold them: ``OPTIONS = {"CACHE": "alias"}``.

    The locks run on a lock engine of the cache's kind (see the module docstring); other caches
    raise ``ImproperlyConfigured`` naming the reason. ``OPTIONS``: :data:`DJANGO_CACHE_OPTIONS`.
    """

    OPTIONS = DJANGO_CACHE_OPTIONS
    #: The kind of cache a subclass takes (``None``: either).
    kind: ClassVar[str | None] = None
    engine: RedisLockBackend | MemcachedLockBackend

    @classmethod
    def capabilities_from(cls, settings: Mapping[str, Any]) -> frozenset[str]:
        """Those of the lock engine of the cache's kind."""
        return _ENGINES[cls._kind_of(settings["CACHE"])].capabilities

    @classmethod
    def _kind_of(cls, alias: str) -> str:
        kind = cache_kind(alias)
        if cls.kind not in (None, kind):
            raise ImproperlyConfigured(
                f"CACHES[{alias!r}] is a {kind} cache: {cls.__name__} takes {cls.kind} caches "
                "(DjangoCacheLockBackend takes either)"
            )
        return kind

    def __init__(
        self, alias: str = "default", location: str | None = None, options: Mapping[str, Any] | None = None
    ) -> None:
        if location is not None:
            raise ImproperlyConfigured("a Django cache lock backend takes no LOCATION: the cache alias has it")
        if options and "cache" in options:
            # The lower-case spelling was documented before the options of every backend were
            # spelled alike: still taken, with a warning.
            warnings.warn(
                "OPTIONS['cache'] of the Django cache lock backends is spelled OPTIONS['CACHE'] now",
                DeprecationWarning,
                stacklevel=2,  # the code that built the backend
            )
        super().__init__(alias, None, options)
        from django.core.cache import caches

        self.cache_alias: str = self.settings["CACHE"]
        self.cache: Any = caches[self.cache_alias]
        self.engine = self._engine(type(self)._kind_of(self.cache_alias))
        self.key_spec = self.engine.key_spec  # type: ignore[misc]
        self.default_ttl = self.engine.default_ttl
        self.watchdog_interval = self.engine.watchdog_interval  # type: ignore[misc]
        self.namespace = self.engine.namespace

    def _engine(self, kind: str) -> RedisLockBackend | MemcachedLockBackend:
        """The lock engine on the cache's client; the given OPTIONS go to it, checked by it."""
        given = {key: value for key, value in self._settings.items() if key.upper() not in _OWN}
        prefix = getattr(self.cache, "key_prefix", "")
        given.setdefault("NAMESPACE", f"{prefix}:locks:" if prefix else "locks:")
        servers = cache_servers(self.cache_alias)
        if kind == REDIS:
            client, owned = redis_client_of(self.cache)
            # The first server is the one Django (and django-redis) writes to.
            location = servers[0] if servers else "redis://"
            return RedisLockBackend(self.alias, location, given, client=client, owns_client=owned)
        if len(servers) > 1 and not self.settings["SEVERAL_SERVERS"]:
            raise ImproperlyConfigured(
                f"CACHES[{self.cache_alias!r}] has {len(servers)} servers: a lock key hashed to a server that "
                "drops out moves to another, and two clients can hold it. Give locks one server, or set "
                "OPTIONS['SEVERAL_SERVERS'] = True to accept that"
            )
        route = memcached_clients_of(self.cache_alias)
        return MemcachedLockBackend(self.alias, ",".join(servers), given, route=route)

    @property
    def client(self) -> Any:
        """The engine's client (a redis-py client; ``None`` on Memcached, whose calls take the
        calling thread's cache client)."""
        return self.engine.client

    def spec(self) -> BackendSpec:
        cls = type(self)
        options = {k: v for k, v in self._settings.items() if k.upper() != "CACHE"}
        return BackendSpec(f"{cls.__module__}.{cls.__qualname__}", None, {**options, "CACHE": self.cache_alias})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} alias={self.alias!r} cache={self.cache_alias!r}>"

    # -- the primitives, on the engine --------------------------------------------------
    def try_acquire(self, request: LockRequest) -> Hold | None:
        return self.engine.try_acquire(request)

    def acquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        return self.engine.acquire(request, timeout)

    def wait_for_release(self, request: LockRequest, timeout: float) -> None:
        self.engine.wait_for_release(request, timeout)

    def release(self, hold: Hold) -> None:
        self.engine.release(hold)

    def extend(self, hold: Hold, ttl: float) -> None:
        self.engine.extend(hold, ttl)

    def check(self, hold: Hold) -> bool:
        return self.engine.check(hold)

    def is_locked(self, key: Key) -> bool:
        return self.engine.is_locked(key)

    def holders(self, prefix: str | None = None) -> list[HolderInfo]:
        return self.engine.holders(prefix)

    def force_release(self, name: LockName) -> int:
        return self.engine.force_release(name)

    async def aacquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        return await self.engine.aacquire(request, timeout)

    async def arelease(self, hold: Hold) -> None:
        await self.engine.arelease(hold)

    async def aextend(self, hold: Hold, ttl: float) -> None:
        await self.engine.aextend(hold, ttl)

    async def ais_locked(self, key: Key) -> bool:
        return await self.engine.ais_locked(key)

    def close(self) -> None:
        engine = getattr(self, "engine", None)  # not set when building it failed
        if engine is not None:
            engine.close()


class DjangoRedisCacheLockBackend(DjangoCacheLockBackend):
    """:class:`DjangoCacheLockBackend` on a Django ``RedisCache`` (or django-redis) alias only."""

    kind = REDIS


class DjangoMemcachedCacheLockBackend(DjangoCacheLockBackend):
    """:class:`DjangoCacheLockBackend` on a Django ``PyMemcacheCache`` alias only.

    Django keeps one cache object (and client) per thread; each call uses the calling thread's.
    A cache over several servers is refused unless ``OPTIONS["SEVERAL_SERVERS"]`` is True: when a
    server drops out, its keys move to another and two clients can hold one lock.
    """

    kind = MEMCACHED


__all__ = [
    "DJANGO_CACHE_OPTIONS",
    "REFUSED",
    "DjangoCacheLockBackend",
    "DjangoMemcachedCacheLockBackend",
    "DjangoRedisCacheLockBackend",
]
