"""Redis locks: ``SET NX PX`` with a random token, Lua compare-and-act, and a wake-up list.

The race the token prevents: a holder stalls past its lease, the key expires, another client
takes the lock, and the first one, waking up, deletes the key, freeing the lock it no longer
owns. Every release and extend is a script that acts only when the key still holds this hold's
random token. The scripts, and the keys of one lock they act on (one hash tag, so one slot of a
Redis Cluster), are in :mod:`locks_cache.redis_scripts`.

Each uncontended acquire and each release is one round trip (``EVALSHA``), sent on connections of
the backend's own (:mod:`locks_cache.redis_connections`) rather than through redis-py's client.
"""

from __future__ import annotations

import functools
import inspect
import os
import random
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from django.core.exceptions import ImproperlyConfigured

from locks.backends import (
    ASYNC_NATIVE,
    DEFAULT_LEASE,
    FENCING,
    FORCE_RELEASE,
    LISTING,
    NOTIFY,
    SHARED,
    TTL,
    WATCHDOG,
    BaseLockBackend,
    Hold,
    HolderInfo,
    LockRequest,
)
from locks.backends.options import COMMON_OPTIONS, Option, Seconds
from locks.deadline import Deadline
from locks.exceptions import BackendUnavailable, LockLost
from locks.keys import Key, KeySpec, LockName
from locks_cache.options import LEASE_OPTIONS, default_ttl, namespace_option, positive, split_location
from locks_cache.redis_async import AsyncRedisPrimitives, AsyncState, AsyncStates
from locks_cache.redis_connections import DirectScripts, node_pops
from locks_cache.redis_listing import scan_holders
from locks_cache.redis_scripts import NAME_RECORDED, SCRIPTS, TOKEN_CHARS, KeySet

#: The longest single ``BLPOP`` of a waiter (Redis, and Django caches on Redis).
WAIT_SLICE = Option(
    "WAIT_SLICE",
    Seconds,
    2.0,
    "longest single `BLPOP` of a waiter (kept below half the socket timeout)",
    check=positive,
)
#: The options of :class:`RedisLockBackend`, besides ``KEY_PREFIX`` and ``WATCHDOG``.
REDIS_OPTIONS: tuple[Option, ...] = (
    *LEASE_OPTIONS,
    namespace_option(64),
    Option("CLUSTER", bool, False, "connect with `RedisCluster`"),
    WAIT_SLICE,
)
# Query parameters of a redis:// URL that are lock options (the others stay for redis-py).
_URL_OPTIONS = frozenset(option.name.lower() for option in COMMON_OPTIONS + REDIS_OPTIONS)
# Never a hang: an unreachable or frozen server raises within these (the URL's query wins).
_CLIENT_DEFAULTS = {"socket_connect_timeout": 5.0, "socket_timeout": 5.0}


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImproperlyConfigured("the Redis lock backend needs redis-py: pip install 'locks-cache[redis]'") from exc
    return redis


@functools.cache
def redis_keywords() -> frozenset[str]:
    """The keyword arguments redis-py takes for a client built from a URL: those of its client,
    pool and connection classes, and the query parameters its URL parser knows."""
    redis = _import_redis()
    connection = redis.connection
    names = set(getattr(connection, "URL_QUERY_ARGUMENT_PARSERS", {}))
    names.add("single_connection_client")  # taken by Redis.from_url itself
    classes = [redis.Redis, redis.ConnectionPool, redis.cluster.RedisCluster]
    for name in ("AbstractConnection", "Connection", "SSLConnection", "UnixDomainSocketConnection"):
        if hasattr(connection, name):
            classes.append(getattr(connection, name))
    for cls in classes:
        for parameter in inspect.signature(cls.__init__).parameters.values():
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                names.add(parameter.name.lower())
    names.discard("self")
    return frozenset(names)


class RedisLockBackend(AsyncRedisPrimitives, BaseLockBackend):
    """Locks on Redis (or Valkey, KeyDB, a Redis Cluster): leases with fencing tokens, shared
    locks, waiters woken by the release, and a native asyncio path.

    ``LOCATION``: a redis-py URL (``redis://``, ``rediss://`` for TLS, ``unix://``), with user and
    password in it when the server needs them; redis-py's own query parameters (``ssl_cert_reqs``,
    ``socket_timeout``...) are passed on.

    ``OPTIONS`` (keys in any case, also as URL query parameters): :data:`REDIS_OPTIONS`, and the
    keyword arguments of redis-py's client, pool and connections (``socket_timeout``,
    ``ssl_ca_certs``, ``password``...), passed through; any other key is refused.

    ``client``: a redis-py client to lock through instead of one built from ``LOCATION`` (a
    Django cache's); it is closed by :meth:`close` only when ``owns_client``.
    """

    OPTIONS = REDIS_OPTIONS
    driver_name = "redis-py"

    capabilities = frozenset({TTL, SHARED, FENCING, LISTING, FORCE_RELEASE, NOTIFY, WATCHDOG, ASYNC_NATIVE})
    key_spec = KeySpec(kind="text", max_length=200)
    watchdog_interval = 2.0
    #: Back-off of a waiter that was woken but lost the race (the releaser took the lock again):
    #: doubles from ``backoff_min`` up to ``backoff_max`` (seconds), with jitter, before it queues
    #: again. Measured with 4 processes looping on one lock: 10 ms / 200 ms keeps the waiters from
    #: slowing the process that holds the lock (about 1.8x the throughput of 1 ms / 50 ms).
    backoff_min = 0.01
    backoff_max = 0.2

    @classmethod
    def driver_options(cls) -> frozenset[str]:
        return redis_keywords()

    def __init__(
        self,
        alias: str = "default",
        location: str | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        client: Any = None,
        owns_client: bool = False,
    ) -> None:
        # The lock options of the URL's query are options (OPTIONS win); redis-py's stay in it.
        self._url, given, query = split_location(location, "redis://127.0.0.1:6379/0", _URL_OPTIONS, options)
        super().__init__(alias, location, given)
        type(self).parse_options(query, alias)  # redis-py's parameters, checked
        settings = self.settings
        self.namespace: str = settings["NAMESPACE"]
        self.default_ttl = default_ttl(settings, type(self).default_ttl)
        self.cluster: bool = settings["CLUSTER"]
        wait_slice: float = settings["WAIT_SLICE"]
        self.client_kwargs: dict[str, Any] = {key.lower(): value for key, value in self.options.items()}
        self._keysets: dict[Key, KeySet] = {}
        self._async = AsyncStates()
        self._infos: dict[object, bytes] = {}
        self._redis = _import_redis()
        self._errors: tuple[type[BaseException], ...] = (
            self._redis.exceptions.ConnectionError,
            self._redis.exceptions.TimeoutError,
            self._redis.exceptions.ReadOnlyError,
            self._redis.exceptions.RedisClusterException,
            self._redis.exceptions.ClusterError,
            OSError,
        )
        self._client: Any = client
        self._owns_client = client is None or owns_client
        self._client_lock = threading.Lock()
        self._scripts_by_name: dict[str, Any] | None = None
        self._direct: DirectScripts | None = None
        self._node_pops: dict[str, DirectScripts] = {}  # cluster: blocking pops per node
        if not self.cluster:
            if self._client is None:
                self._client = self._make_client()  # cheap: redis-py connects on first use
            self._direct = DirectScripts(self._client.connection_pool, SCRIPTS, self._redis.exceptions)
        socket_timeout = self._socket_timeout()
        # A blocking wait must end well before the socket read times out.
        self.wait_slice = min(wait_slice, socket_timeout / 2) if socket_timeout else wait_slice
        self._wait_ms = int((self.wait_slice + 1) * 1000)  # the wait flag outlives one blocking slice

    @property
    def client(self) -> Any:
        """The redis-py client (a ``RedisCluster`` one connects at once, so it is built on first use)."""
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    try:
                        self._client = self._make_client()
                    except self._errors as exc:
                        raise self._unavailable(exc) from exc
                client = self._client
        return client

    @property
    def _scripts(self) -> dict[str, Any]:
        scripts = self._scripts_by_name
        if scripts is None:
            client = self.client
            scripts = self._scripts_by_name = {name: client.register_script(src) for name, src in SCRIPTS.items()}
        return scripts

    def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Runs one of the lock scripts: over connections of its own (see
        :mod:`locks_cache.redis_connections`), or through redis-py's client on a cluster."""
        if self._direct is None:
            return self._scripts[script](keys, args)
        return self._direct(script, keys, args)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_url(cls, url: str, alias: str = "default", **options: Any) -> RedisLockBackend:
        """``redis://[user:password@]host:port/db?ttl=30&namespace=app:`` (``rediss://``: TLS)."""
        return cls(alias=alias, location=url, options=options)

    def _make_client(self) -> Any:
        url = self._url
        kwargs = {**_CLIENT_DEFAULTS, **self.client_kwargs}
        try:
            if self.cluster:
                return self._redis.cluster.RedisCluster.from_url(url, **kwargs)
            return self._redis.Redis.from_url(url, **kwargs)
        except ValueError as exc:
            raise ImproperlyConfigured(f"bad Redis LOCATION {url!r}: {exc}") from exc

    def _socket_timeout(self) -> float | None:
        pool = getattr(self._client, "connection_pool", None)
        if pool is not None:
            value = pool.connection_kwargs.get("socket_timeout")
        else:
            query = dict(parse_qsl(urlsplit(self._url).query))
            value = self.client_kwargs.get("socket_timeout", query.get("socket_timeout", 5))
        return float(value) if value else None

    def _async_client(self) -> Any:
        url = self._url
        kwargs = {**_CLIENT_DEFAULTS, **self.client_kwargs}
        if self.cluster:
            return self._redis.asyncio.cluster.RedisCluster.from_url(url, **kwargs)
        return self._redis.asyncio.Redis.from_url(url, **kwargs)

    def _astate(self) -> AsyncState:
        return self._async.get(self._new_astate)

    def _new_astate(self) -> AsyncState:
        return AsyncState(self._async_client(), SCRIPTS, self._redis.exceptions, self.cluster)

    # -- keys ---------------------------------------------------------------------------------
    def keys_of(self, key: Key) -> KeySet:
        keyset = self._keysets.get(key)
        if keyset is None:
            if len(self._keysets) > 4096:
                self._keysets.clear()
            keyset = self._keysets[key] = KeySet(self.namespace, key)
        return keyset

    def _info(self, request: LockRequest) -> bytes:
        owner = request.owner
        prefix = self._infos.get(owner)
        if prefix is None:
            if len(self._infos) > 1024:
                self._infos.clear()
            text = str(owner).replace("\n", " ")
            prefix = self._infos[owner] = b"\n" + text.encode("utf-8", "replace")
        name = str(request.name)[:NAME_RECORDED].encode("utf-8", "surrogatepass")
        return b"\n%.3f%s\n%s" % (time.time(), prefix, name)

    def _unavailable(self, exc: BaseException, name: LockName | None = None) -> BackendUnavailable:
        return BackendUnavailable(f"Redis at {self._where()} is unavailable: {type(exc).__name__}: {exc}", name)

    def _where(self) -> str:
        # never show a password
        parts = urlsplit(self._url)
        return f"{parts.scheme}://{parts.hostname or parts.path}{':' + str(parts.port) if parts.port else ''}"

    # -- primitives -------------------------------------------------------------------------
    def _acquire_args(self, request: LockRequest, wait_ms: int) -> tuple[Any, list[str], list[Any], bytes]:
        keys = self.keys_of(request.key)
        token = os.urandom(TOKEN_CHARS // 2).hex().encode()
        ttl_ms = max(1, int((request.ttl or self.default_ttl or DEFAULT_LEASE) * 1000))
        if request.shared:
            script, first = "acquire_shared", token
        else:
            script, first = "acquire", token + self._info(request)
        return script, [keys.lock, keys.fence, keys.wait, keys.wake], [first, ttl_ms, wait_ms], token

    def _attempt(self, request: LockRequest, wait_ms: int) -> Hold | int:
        script, keys, args, token = self._acquire_args(request, wait_ms)
        try:
            got, value = self._run(script, keys, args)
        except self._errors as exc:
            raise self._unavailable(exc, request.name) from exc
        if got:
            return Hold(request, data=token, token=int(value))
        return int(value)

    def try_acquire(self, request: LockRequest) -> Hold | None:
        result = self._attempt(request, 0)
        return result if isinstance(result, Hold) else None

    def _block_for(self, left_ms: int, remaining: float | None) -> float:
        block = self.wait_slice if remaining is None else min(remaining, self.wait_slice)
        if left_ms > 0:
            block = min(block, left_ms / 1000 + 0.005)  # the lease ends: no signal will come
        elif left_ms == -2:
            block = 0.0  # freed between the checks: try again at once
        return block

    def acquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        """Try; on failure block on the wake-up list until a release signals (or the holder's
        lease ends, or the timeout), and try again.

        A waiter that was woken but lost the race (the releaser or another waiter took the lock
        first) backs off before it registers again, more each time: under a lock taken over and
        over, waiters then cost the holder little, while a waiter that blocks on a quiet lock is
        still woken by the release at once.
        """
        deadline = Deadline(timeout)
        wake = self.keys_of(request.key).wake
        woken = False
        lost = 0
        while True:
            waiting = not deadline.expired()
            result = self._attempt(request, self._wait_ms if waiting and not woken else 0)
            if isinstance(result, Hold):
                return result
            if not waiting:
                return None
            if woken:
                woken = False
                lost += 1
                deadline.sleep(self._backoff(lost))
                continue
            block = self._block_for(result, deadline.remaining())
            if block >= 0.001:
                woken = self._pop(wake, block, deadline, request.name)
            else:
                deadline.sleep(block)

    def _pop(self, wake: str, block: float, deadline: Deadline, name: LockName) -> bool:
        """Blocks on the wake-up list for ``block`` seconds: whether a release signalled.

        The server's reply may come up to 1/hz late (see :mod:`locks_cache.redis_connections`), so it
        is waited for no later than the deadline, nor past ``block`` when that is shorter than a
        slice (the holder's lease ends), nor past a further slice (a frozen server is then
        detected within the socket timeout)."""
        until = self._reply_until(block, deadline)
        try:
            pops = self._direct
            if pops is None:
                client = self.client
                node = client.get_node_from_key(wake)
                client.get_redis_connection(node)  # the node's pool, whose connections ours copy
                pops = node_pops(self._node_pops, node, DirectScripts, self._redis.exceptions)
            return pops.pop(wake, block, until)
        except self._errors as exc:
            raise self._unavailable(exc, name) from exc

    def _reply_until(self, block: float, deadline: Deadline) -> float:
        """When to give up on the reply of a ``BLPOP`` of ``block`` seconds (see :meth:`_pop`)."""
        until = time.monotonic() + block + (self.wait_slice if block >= self.wait_slice else 0.0)
        return until if deadline.at is None else min(until, deadline.at)

    def _backoff(self, lost: int) -> float:
        return float(min(self.backoff_max, self.backoff_min * 2 ** min(lost, 16))) * random.uniform(0.5, 1.0)

    def wait_for_release(self, request: LockRequest, timeout: float) -> None:
        if timeout >= 0.001:
            try:
                self.client.blpop([self.keys_of(request.key).wake], timeout=timeout)
            except self._errors as exc:
                raise self._unavailable(exc, request.name) from exc

    def _release_args(self, hold: Hold) -> tuple[str, list[str], list[Any]]:
        keys = self.keys_of(hold.key)
        script = "release_shared" if hold.request.shared else "release"
        return script, [keys.lock, keys.wake, keys.wait], [hold.data]

    def release(self, hold: Hold) -> None:
        script, keys, args = self._release_args(hold)
        try:
            released = self._run(script, keys, args)
        except self._errors as exc:
            raise self._unavailable(exc, hold.name) from exc
        if not released:
            raise LockLost(f"{hold.name!r} was no longer held (lease expired or forced)", hold.name)

    def _extend_args(self, hold: Hold, ttl: float) -> tuple[list[str], list[Any]]:
        keys = self.keys_of(hold.key)
        shared = b"1" if hold.request.shared else b"0"
        return [keys.lock], [hold.data, max(1, int(ttl * 1000)), shared]

    def extend(self, hold: Hold, ttl: float) -> None:
        keys, args = self._extend_args(hold, ttl)
        try:
            extended = self._run("extend", keys, args)
        except self._errors as exc:
            raise self._unavailable(exc, hold.name) from exc
        if not extended:
            raise LockLost(f"{hold.name!r} was no longer held (lease expired or forced)", hold.name)

    def check(self, hold: Hold) -> bool:
        key = self.keys_of(hold.key).lock
        try:
            if hold.request.shared:
                return self.client.zscore(key, hold.data) is not None
            value = self.client.get(key)
        except self._redis.exceptions.ResponseError as exc:
            if "WRONGTYPE" in str(exc):  # the lock changed hands (readers or a writer now)
                return False
            raise
        except self._errors as exc:
            raise self._unavailable(exc, hold.name) from exc
        return value is not None and value[: len(hold.data)] == hold.data

    def is_locked(self, key: Key) -> bool:
        try:
            return bool(self.client.exists(self.keys_of(key).lock))
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    def holders(self, prefix: str | None = None) -> list[HolderInfo]:
        """Held locks from a ``SCAN`` of the namespace (every node of a cluster). Readers record
        no name: shared holds are listed only when no ``prefix`` is given."""
        try:
            return scan_holders(self.client, self.namespace, prefix)
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    def force_release(self, name: LockName) -> int:
        keys = self.keys_of(self.make_key(self.validate_name(name)))
        try:
            return int(self._run("force", [keys.lock, keys.wake], []))
        except self._errors as exc:
            raise self._unavailable(exc, name) from exc

    def close(self) -> None:
        """Closes the connections the scripts run on, then the client (:meth:`_close_client`),
        then the asyncio ones of every event loop (:mod:`locks_cache.redis_async`)."""
        if self._direct is not None:
            self._direct.close()
        for pops in list(getattr(self, "_node_pops", {}).values()):
            pops.close()
        self._close_client()
        self._async.close()

    def _close_client(self) -> None:
        """Closes the client, unless it was given (see the class) and is not the backend's."""
        if self._client is None or not self._owns_client:
            return
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass

    def after_fork(self) -> None:
        # The child must not use its parent's sockets: the script connections are dropped (the
        # client's pool notices the new pid by itself).
        super().after_fork()
        if self._direct is not None:
            self._direct.forget()
        for pops in self._node_pops.values():
            pops.forget()
        self._node_pops = {}
        self._async.forget()

    # -- bench --------------------------------------------------------------------------------
    _bench_label: ClassVar[str] = "locks-cache Redis"
