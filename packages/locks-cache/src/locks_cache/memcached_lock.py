"""Memcached locks: ``add`` with an expiry to acquire, ``gets`` + ``cas`` to release and extend.

Memcached has no compare-and-delete in its classic protocol, and ``delete`` would free a lock
another client took after our lease ran out. Release therefore reads the value and its CAS id
(``gets``), checks that the value is this hold's random token, and stores it back with that CAS id
and a negative expiry: memcached expires the item at once, and the ``cas`` fails (``EXISTS`` /
``NOT_FOUND``) if anyone changed or removed it meanwhile. Extend is the same ``cas`` with the new
expiry. ``touch`` is never used: it is not owner-checked.

Expiry: memcached counts whole seconds on a clock that ticks once a second, so ``expire=1`` can end
after 0.2 s (measured). A lease is stored as ``ceil(ttl) + 1`` seconds: never shorter than asked,
at most two seconds longer. Leases over 30 days are sent as an absolute Unix time, as the protocol
requires (the client's clock then matters).

Memcached locks are *efficiency* locks unless the instance is dedicated to them: LRU eviction
under memory pressure, a restart, or client-side hashing over several servers can let two clients
hold one lock. That is why one server is required (``LOCATION`` with a single address).
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from locks.backends import DEFAULT_LEASE, FORCE_RELEASE, TTL, WATCHDOG, BaseLockBackend, Hold, LockRequest
from locks.backends.options import COMMON_OPTIONS, Option, Seconds, parse_options
from locks.exceptions import BackendUnavailable, LockLost
from locks.keys import SAFE_CHARS, Key, KeySpec, LockName
from locks_cache.options import LEASE_OPTIONS, default_ttl, namespace_option, positive, split_location

#: memcached reads an expiry above this as an absolute Unix time.
RELATIVE_EXPIRY_MAX = 30 * 24 * 3600
#: memcached's key limit, and the most a NAMESPACE may take of it.
KEY_MAX = 250
NAMESPACE_MAX = 32
NAME_RECORDED = 1000

#: The options of :class:`MemcachedLockBackend`, besides ``KEY_PREFIX`` and ``WATCHDOG``.
MEMCACHED_OPTIONS: tuple[Option, ...] = (
    *LEASE_OPTIONS,
    namespace_option(NAMESPACE_MAX, "prefix of every key (at most 32 bytes)"),
    Option("TIMEOUT", Seconds, 5.0, "connect and socket timeout (seconds)", check=positive),
)
_URL_OPTIONS = frozenset(option.name.lower() for option in COMMON_OPTIONS + MEMCACHED_OPTIONS)


def memcached_expiry(ttl: float, now: float | None = None) -> int:
    """The ``exptime`` that keeps an item at least ``ttl`` seconds (see the module docstring)."""
    seconds = math.ceil(ttl) + 1
    if seconds > RELATIVE_EXPIRY_MAX:
        return int(now if now is not None else time.time()) + seconds
    return seconds


def _import_pymemcache() -> Any:
    try:
        import pymemcache
        from pymemcache.client.base import PooledClient  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImproperlyConfigured(
            "the Memcached lock backend needs pymemcache: pip install 'locks-cache[memcached]'"
        ) from exc
    return pymemcache


@functools.cache
def pymemcache_keywords() -> frozenset[str]:
    """The keyword arguments of pymemcache's ``PooledClient`` (but the server)."""
    _import_pymemcache()
    from pymemcache.client.base import PooledClient

    parameters = inspect.signature(PooledClient.__init__).parameters.values()
    return frozenset(p.name.lower() for p in parameters if p.name not in ("self", "server") and p.kind != p.VAR_KEYWORD)


def parse_server(location: str) -> tuple[str, int] | str:
    """``memcached://host:port`` (or ``host:port``, or ``memcached:///path/to/socket``) → the
    server address pymemcache takes. Several servers are refused (see the module docstring)."""
    if "://" not in location:
        location = "memcached://" + location
    parts = urlsplit(location)
    if parts.scheme not in ("memcached", "memcache"):
        raise ImproperlyConfigured(f"a Memcached LOCATION is memcached://host:port, not {location!r}")
    if "," in parts.netloc or ";" in parts.netloc:
        raise ImproperlyConfigured(
            "the Memcached lock backend takes one server: client-side hashing over several servers "
            "lets two clients hold one lock when a server drops out"
        )
    if not parts.netloc:
        if not parts.path:
            raise ImproperlyConfigured(f"Memcached LOCATION {location!r} names no server")
        return unquote(parts.path)
    try:
        port = parts.port or 11211
    except ValueError as exc:
        raise ImproperlyConfigured(f"bad port in Memcached LOCATION {location!r}") from exc
    return (parts.hostname or "127.0.0.1", port)


class MemcachedLockBackend(BaseLockBackend):
    """Locks on one Memcached server: leases (``ttl``), owner-checked release and extend.

    ``LOCATION``: ``memcached://host:port`` (one server). ``OPTIONS`` (keys in any case, also as
    URL query parameters): :data:`MEMCACHED_OPTIONS`, and the keyword arguments of pymemcache's
    ``PooledClient``, passed through; any other key is refused.

    ``route``: the client for a key, in place of one built from ``LOCATION`` (a Django cache's
    per-server clients); ``LOCATION`` then only names the servers in errors.

    Waiting polls, with fast first retries, exponential backoff and jitter (memcached has no
    notification).
    """

    capabilities = frozenset({TTL, FORCE_RELEASE, WATCHDOG})
    key_spec = KeySpec(kind="text", max_length=KEY_MAX - NAMESPACE_MAX, safe_chars=SAFE_CHARS)
    watchdog_interval = 2.0
    #: Polling: first retry after ``poll_min``, then times 1.5 up to a cap that grows with the time
    #: already waited (``poll_cap_base`` + ``poll_cap_growth`` * waited, at most ``poll_max``).
    poll_min = 0.0005
    poll_max = 0.05
    poll_cap_base = 0.004
    poll_cap_growth = 0.01
    OPTIONS = MEMCACHED_OPTIONS
    driver_name = "pymemcache's PooledClient"

    @classmethod
    def driver_options(cls) -> frozenset[str]:
        return pymemcache_keywords()

    def __init__(
        self,
        alias: str = "default",
        location: str | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        route: Callable[[bytes], Any] | None = None,
    ) -> None:
        url, given, query = split_location(location, "memcached://127.0.0.1:11211", _URL_OPTIONS, options)
        super().__init__(alias, location, given)
        # pymemcache reads no URL: any other query parameter is a mistake
        parse_options(COMMON_OPTIONS + MEMCACHED_OPTIONS, query, where=f"{type(self).__name__} (alias {alias!r})")
        settings = self.settings
        self.namespace: str = settings["NAMESPACE"]
        self.default_ttl = default_ttl(settings, type(self).default_ttl)
        self.io_timeout: float = settings["TIMEOUT"]
        self.client_kwargs: dict[str, Any] = {key.lower(): value for key, value in self.options.items()}
        self._server_url = url
        self._route = route
        self._infos: dict[object, bytes] = {}
        self._pymemcache = _import_pymemcache()
        exceptions = self._pymemcache.exceptions
        self._errors: tuple[type[BaseException], ...] = (
            OSError,
            exceptions.MemcacheUnexpectedCloseError,
            exceptions.MemcacheServerError,
        )
        self.client = None if route is not None else self._make_client()

    @classmethod
    def from_url(cls, url: str, alias: str = "default", **options: Any) -> MemcachedLockBackend:
        """``memcached://host:port?ttl=30&namespace=app:``."""
        return cls(alias=alias, location=url, options=options)

    def _make_client(self) -> Any:
        from pymemcache.client.base import PooledClient

        kwargs = {
            "connect_timeout": self.io_timeout,
            "timeout": self.io_timeout,
            "no_delay": True,
            **self.client_kwargs,
            # noreply makes add() report success whatever happened: never for locks.
            "default_noreply": False,
        }
        return PooledClient(parse_server(self._server_url), **kwargs)

    def _mc(self, key: bytes) -> Any:
        """The pymemcache client for ``key`` in the calling thread: the pooled client, or the
        one ``route`` gives."""
        route = self._route
        return self.client if route is None else route(key)

    # -- keys and values --------------------------------------------------------------------
    def server_key(self, key: Key) -> bytes:
        return f"{self.namespace}{key}".encode()

    def _value(self, request: LockRequest) -> bytes:
        owner = request.owner
        info = self._infos.get(owner)
        if info is None:
            if len(self._infos) > 1024:
                self._infos.clear()
            info = self._infos[owner] = str(owner).replace("\n", " ").encode("utf-8", "replace")
        name = str(request.name)[:NAME_RECORDED].encode("utf-8", "surrogatepass")
        return b"%s\n%.3f\n%s\n%s" % (os.urandom(16).hex().encode(), time.time(), info, name)

    def _unavailable(self, exc: BaseException, name: LockName | None = None) -> BackendUnavailable:
        return BackendUnavailable(f"Memcached at {self._server_url} is unavailable: {type(exc).__name__}: {exc}", name)

    # -- primitives -------------------------------------------------------------------------
    def try_acquire(self, request: LockRequest) -> Hold | None:
        value = self._value(request)
        ttl = request.ttl or self.default_ttl or DEFAULT_LEASE
        key = self.server_key(request.key)
        try:
            added = self._mc(key).add(key, value, expire=memcached_expiry(ttl), noreply=False)
        except self._errors as exc:
            raise self._unavailable(exc, request.name) from exc
        return Hold(request, data=value) if added else None

    def next_poll_delay(self, delay: float, waited: float) -> float:
        # Core's polling loop (memcached has no notification), with a gentler backoff whose
        # cap grows with the time already waited: fast retries for short holds.
        cap = min(self.poll_max, self.poll_cap_base + self.poll_cap_growth * waited)
        return min(delay * 1.5, cap)

    def _owned(self, hold: Hold) -> tuple[bytes, Any] | None:
        key = self.server_key(hold.key)
        try:
            value, cas = self._mc(key).gets(key)
        except self._errors as exc:
            raise self._unavailable(exc, hold.name) from exc
        if value is None or _as_bytes(value) != hold.data:
            return None
        return key, cas

    def release(self, hold: Hold) -> None:
        owned = self._owned(hold)
        if owned is not None:
            key, cas = owned
            try:
                # A negative expiry stores the item already expired: a compare-and-delete.
                if self._mc(key).cas(key, hold.data, cas, expire=-1, noreply=False):
                    return
            except self._errors as exc:
                raise self._unavailable(exc, hold.name) from exc
        raise LockLost(f"{hold.name!r} was no longer held (lease expired, evicted or forced)", hold.name)

    def extend(self, hold: Hold, ttl: float) -> None:
        owned = self._owned(hold)
        if owned is not None:
            key, cas = owned
            try:
                if self._mc(key).cas(key, hold.data, cas, expire=memcached_expiry(ttl), noreply=False):
                    return
            except self._errors as exc:
                raise self._unavailable(exc, hold.name) from exc
        raise LockLost(f"{hold.name!r} was no longer held (lease expired, evicted or forced)", hold.name)

    def check(self, hold: Hold) -> bool:
        try:
            key = self.server_key(hold.key)
            value = self._mc(key).get(key)
        except self._errors as exc:
            raise self._unavailable(exc, hold.name) from exc
        return value is not None and _as_bytes(value) == hold.data

    def is_locked(self, key: Key) -> bool:
        try:
            server_key = self.server_key(key)
            return self._mc(server_key).get(server_key) is not None
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    def force_release(self, name: LockName) -> int:
        key = self.server_key(self.make_key(self.validate_name(name)))
        try:
            return 1 if self._mc(key).delete(key, noreply=False) else 0
        except self._errors as exc:
            raise self._unavailable(exc, name) from exc

    def close(self) -> None:
        try:
            if self.client is not None:
                self.client.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass

    def after_fork(self) -> None:
        # A forked child must not talk on its parent's sockets (replies would interleave): it
        # gets its own pool; the parent's sockets are left alone, not closed.
        super().after_fork()
        if self.client is not None:
            self.client = self._make_client()


def _as_bytes(value: Any) -> bytes:
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(value)
