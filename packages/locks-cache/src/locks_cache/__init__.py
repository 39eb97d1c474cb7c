"""locks-cache: locks on Redis, Memcached and any Django cache, for ``locks``.

Drivers are optional extras (``locks-cache[redis]``, ``locks-cache[memcached]``), imported only
by the backend that needs them.
"""

from locks_cache.django_cache import (
    DjangoCacheLockBackend,
    DjangoMemcachedCacheLockBackend,
    DjangoRedisCacheLockBackend,
)
from locks_cache.memcached_lock import MemcachedLockBackend
from locks_cache.redis_lock import RedisLockBackend

__all__ = [
    "DjangoCacheLockBackend",
    "DjangoMemcachedCacheLockBackend",
    "DjangoRedisCacheLockBackend",
    "MemcachedLockBackend",
    "RedisLockBackend",
]
