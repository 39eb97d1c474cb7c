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
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from locks.backends import BaseLockBackend
from locks.backends.spec import BackendSpec
from locks_cache.memcached_lock import MemcachedLockBackend
from locks_cache.redis_lock import RedisLockBackend

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


def _class_paths(cache: object) -> list[str]:
    return [f"{c.__module__}.{c.__qualname__}" for c in type(cache).__mro__]


def _cache_of(options: Mapping[str, Any] | None) -> tuple[str, Any]:
    opts = dict(options or {})
    alias = opts["CACHE"] if "CACHE" in opts else opts.get("cache", "default")
    if not isinstance(alias, str):
        raise ImproperlyConfigured(f"OPTIONS['CACHE'] must be a CACHES alias (str), not {type(alias).__name__}")
    from django.conf import settings
    from django.core.cache import caches

    if alias not in getattr(settings, "CACHES", {"default": {}}):
        raise ImproperlyConfigured(f"OPTIONS['CACHE'] = {alias!r} is not in CACHES")
    return alias, caches[alias]


def _kind(alias: str, cache: object) -> type[DjangoCacheLockBackend]:
    paths = _class_paths(cache)
    if any(p in _REDIS for p in paths):
        return DjangoRedisCacheLockBackend
    if any(p in _MEMCACHED for p in paths):
        return DjangoMemcachedCacheLockBackend
    for path in paths:
        if path in REFUSED:
            raise ImproperlyConfigured(f"CACHES[{alias!r}] cannot hold locks: {REFUSED[path]}.")
    raise ImproperlyConfigured(
        f"CACHES[{alias!r}] ({paths[0]}) cannot hold locks: Django's cache API has no atomic "
        "compare-and-delete, and only Redis and PyMemcache caches are known to have one natively"
    )


class DjangoCacheLockBackend(BaseLockBackend):
    """Locks on any Django cache alias that can hold them: ``OPTIONS = {"CACHE": "alias"}``.

    Building one returns the backend of the cache's kind (a :class:`DjangoRedisCacheLockBackend`
    or :class:`DjangoMemcachedCacheLockBackend`); other caches raise ``ImproperlyConfigured``
    naming the reason. The other OPTIONS are those of the Redis or Memcached backend.
    """

    cache_alias: str
    cache: Any

    def __new__(
        cls, alias: str = "default", location: str | None = None, options: Mapping[str, Any] | None = None
    ) -> DjangoCacheLockBackend:
        if cls is DjangoCacheLockBackend:
            cache_alias, cache = _cache_of(options)
            cls = _kind(cache_alias, cache)
        return super().__new__(cls)

    def _bind_cache(self, location: str | None, options: Mapping[str, Any] | None) -> dict[str, Any]:
        if location is not None:
            raise ImproperlyConfigured("a Django cache lock backend takes no LOCATION: the cache alias has it")
        if options and "cache" in options:
            # The lower-case spelling was documented before the options of every backend were
            # spelled alike: still taken, with a warning.
            warnings.warn(
                "OPTIONS['cache'] of the Django cache lock backends is spelled OPTIONS['CACHE'] now",
                DeprecationWarning,
                stacklevel=3,  # the code that built the backend
            )
        self.cache_alias, self.cache = _cache_of(options)
        opts = {k: v for k, v in (options or {}).items() if k not in ("cache", "CACHE")}
        prefix = getattr(self.cache, "key_prefix", "")
        opts.setdefault("NAMESPACE", f"{prefix}:locks:" if prefix else "locks:")
        return opts

    def spec(self) -> BackendSpec:
        cls = type(self)
        options = {k: v for k, v in self._settings.items() if k != "cache"}
        return BackendSpec(f"{cls.__module__}.{cls.__qualname__}", None, {**options, "CACHE": self.cache_alias})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} alias={self.alias!r} cache={self.cache_alias!r}>"


class DjangoRedisCacheLockBackend(DjangoCacheLockBackend, RedisLockBackend):
    """Redis locks on the connection pool of a Django ``RedisCache`` (or django-redis) alias."""

    def __init__(
        self, alias: str = "default", location: str | None = None, options: Mapping[str, Any] | None = None
    ) -> None:
        opts = self._bind_cache(location, options)
        self._owns_pool = False
        RedisLockBackend.__init__(self, alias, None, opts)

    def _driver_url(self) -> tuple[str, dict[str, str]]:
        servers = getattr(self.cache, "_servers", None) or getattr(self.cache, "_server", None) or []
        if isinstance(servers, str):
            servers = [servers]
        # The first server is the one Django (and django-redis) writes to.
        return (servers[0] if servers else "redis://"), {}

    def _make_client(self) -> Any:
        django_client = getattr(self.cache, "_cache", None)
        if django_client is not None and hasattr(django_client, "_get_connection_pool"):
            # Django's RedisCache builds a client object per call (~170 µs); one client on its pool.
            return self._redis.Redis(connection_pool=self._bounded(django_client._get_connection_pool(True)))
        client = getattr(self.cache, "client", None)  # django-redis
        if client is not None and hasattr(client, "get_client"):
            redis_client = client.get_client(write=True)
            pool = self._bounded(redis_client.connection_pool)
            if pool is redis_client.connection_pool:
                return redis_client
            return self._redis.Redis(connection_pool=pool)
        raise ImproperlyConfigured(f"CACHES[{self.cache_alias!r}]: cannot find its Redis client")

    def _bounded(self, pool: Any) -> Any:
        """The cache's pool, or, when its connections have no socket timeout (Django's default),
        a pool of the same connections with one: a frozen server must raise BackendUnavailable,
        not hang a lock call forever."""
        if pool.connection_kwargs.get("socket_timeout"):
            return pool
        kwargs = {**pool.connection_kwargs, "socket_timeout": 5.0}
        if not kwargs.get("socket_connect_timeout"):
            kwargs["socket_connect_timeout"] = 5.0
        self._owns_pool = True
        return type(pool)(connection_class=pool.connection_class, **kwargs)

    def _close_client(self) -> None:
        """The cache's own pool stays open; a pool made here (see ``_bounded``) is closed."""
        client = self._client
        if client is not None and self._owns_pool:
            client.close()


class DjangoMemcachedCacheLockBackend(DjangoCacheLockBackend, MemcachedLockBackend):
    """Memcached locks on the pymemcache client of a Django ``PyMemcacheCache`` alias.

    Django keeps one cache object (and client) per thread; each call uses the calling thread's.
    A cache over several servers is refused unless ``OPTIONS["SEVERAL_SERVERS"]`` is True: when a
    server drops out, its keys move to another and two clients can hold one lock.
    """

    def __init__(
        self, alias: str = "default", location: str | None = None, options: Mapping[str, Any] | None = None
    ) -> None:
        opts = self._bind_cache(location, options)
        several = bool(opts.pop("SEVERAL_SERVERS", False))
        servers = list(self.cache._servers)
        if len(servers) > 1 and not several:
            raise ImproperlyConfigured(
                f"CACHES[{self.cache_alias!r}] has {len(servers)} servers: a lock key hashed to a server that "
                "drops out moves to another, and two clients can hold it. Give locks one server, or set "
                "OPTIONS['SEVERAL_SERVERS'] = True to accept that"
            )
        MemcachedLockBackend.__init__(self, alias, None, opts)
        self._server_url = ",".join(servers)
        from pymemcache.client.rendezvous import RendezvousHash

        self._hasher = RendezvousHash(list(self.cache._cache.clients))

    def _make_client(self) -> Any:
        return None

    def _mc(self, key: bytes) -> Any:
        from django.core.cache import caches

        # The cache's HashClient answers "not stored" for a server it saw fail once, without
        # raising: a lock needs the error. Use its per-server client (one per thread, as Django
        # keeps one cache object per thread), routed by our own hash over every server.
        cache: Any = caches[self.cache_alias]
        clients = cache._cache.clients
        if len(clients) == 1:
            return next(iter(clients.values()))
        return clients[self._hasher.get_node(key.decode())]


__all__ = [
    "REFUSED",
    "DjangoCacheLockBackend",
    "DjangoMemcachedCacheLockBackend",
    "DjangoRedisCacheLockBackend",
]
