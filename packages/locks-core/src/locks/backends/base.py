"""The base class every backend subclasses, in the manner of Django's ``BaseCache``.

A backend does only the server work, through a handful of primitives:

* :meth:`BaseLockBackend.try_acquire`: one attempt that never waits (required);
* :meth:`BaseLockBackend.acquire`: wait up to a timeout; the default polls ``try_acquire`` with
  backoff and jitter, sleeping in :meth:`BaseLockBackend.wait_for_release`, which backends with a
  release notification override; backends that can wait on the server override ``acquire`` itself;
* :meth:`BaseLockBackend.release` (required), :meth:`extend` and :meth:`check` (leases, watchdog);
* :meth:`is_locked`, :meth:`holders`, :meth:`force_release` (listing and administration).

Everything shared lives in ``locks`` once: option validation, name → key mapping (the backend
declares its :class:`~locks.keys.KeySpec`), reentrancy counting (the registry below), auto-renew
and the watchdog (:mod:`locks.keeper`), async wrapping, signals and logging (:mod:`locks.events`).

A backend declares what it can do in :attr:`BaseLockBackend.capabilities`; asking for anything
else raises :class:`~locks.exceptions.NotSupported`.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import weakref
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from locks.backends.capabilities import *  # noqa: F403 - backends have always imported them from here
from locks.backends.capabilities import CAPABILITIES, FORCE_RELEASE, LISTING, TTL
from locks.backends.holds import *  # noqa: F403 - as above
from locks.backends.holds import Hold, HolderInfo, LockRequest
from locks.backends.options import COMMON_OPTIONS, Option, parse_options
from locks.backends.spec import BackendSpec
from locks.deadline import Deadline
from locks.exceptions import NotSupported
from locks.forking import BACKENDS, on_fork_in_child
from locks.keys import TEXT, Key, KeySpec, LockName, make_key, validate_name
from locks.registry import HoldRegistry

if TYPE_CHECKING:
    from typing_extensions import Self

    from locks.aio import AsyncLock
    from locks.handle import Lock

#: How many name → key mappings a backend remembers (:meth:`BaseLockBackend.key_of`).
_KEYS_REMEMBERED = 4096
_Lock: type[Lock] | None = None
_all_backends: weakref.WeakSet[BaseLockBackend] = weakref.WeakSet()

#: The lease of a lock that gives no ``ttl``, on backends whose locks expire (seconds). Such a
#: lease is renewed in the background (every third of it) for as long as the lock is held, so a
#: live holder keeps its lock however long it works, and a crashed one frees it within 10 s.
DEFAULT_LEASE = 10.0


def all_backends() -> list[BaseLockBackend]:
    """Every backend object alive in this process (a snapshot)."""
    return list(_all_backends)


def _default_executor() -> ThreadPoolExecutor:
    # Waiting for a lock ties up a thread: the loop's default pool (cpu + 4 threads) would run dry.
    return ThreadPoolExecutor(max_workers=64, thread_name_prefix="locks-async")


class BaseLockBackend:
    """Base class of lock backends.

    Subclasses set :attr:`capabilities` and :attr:`key_spec`, and implement at least
    :meth:`try_acquire` and :meth:`release` (URL schemes are registered through the
    ``locks.url_schemes`` entry points, not here). One instance serves every thread of a
    process: primitives must be thread-safe. Server sessions should scale with the threads and
    tasks that hold or wait, not with the number of locks held; a hold records the session it
    was taken on, and is released there.

    Args:
        alias: the name of this backend in ``LOCKS`` (for logging and signals).
        location: the ``LOCATION`` setting (a URL, a directory...), meaning is the backend's.
        options: the ``OPTIONS`` setting. ``KEY_PREFIX`` (any backend) namespaces every key.
    """

    capabilities: ClassVar[frozenset[str]] = frozenset()
    key_spec: ClassVar[KeySpec] = TEXT
    #: The OPTIONS this backend takes besides :data:`~locks.backends.options.COMMON_OPTIONS`,
    #: parsed once by the base class (see :mod:`locks.backends.options`); their values are in
    #: :attr:`settings`. ``None``: the backend parses :attr:`options` itself.
    OPTIONS: ClassVar[tuple[Option, ...] | None] = None
    #: What :meth:`driver_options` are the parameters of, for error messages.
    driver_name: ClassVar[str] = "the driver"
    #: Lease length for backends with ``ttl``, when a lock gives none; such leases are renewed
    #: in the background unless the lock says ``auto_renew=False`` (see :data:`DEFAULT_LEASE`).
    default_ttl: float | None = DEFAULT_LEASE
    #: Whether other processes see this backend's locks (``False`` for an in-process table: the
    #: contract then skips its cross-process cases, saying why).
    cross_process: ClassVar[bool] = True
    #: How often the keeper checks a held lock when ``watchdog`` is on (seconds).
    watchdog_interval: ClassVar[float] = 2.0
    #: Polling bounds of the default :meth:`acquire` (seconds).
    poll_min: ClassVar[float] = 0.001
    poll_max: ClassVar[float] = 0.05

    _executor: ClassVar[ThreadPoolExecutor | None] = None
    _executor_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self, alias: str = "default", location: str | None = None, options: Mapping[str, Any] | None = None
    ) -> None:
        self.alias = alias
        self.location = location
        self._settings = dict(options or {})
        if type(self).OPTIONS is None:
            opts = dict(self._settings)
            prefix = opts.pop("KEY_PREFIX", "")
            if not isinstance(prefix, str):
                raise TypeError("OPTIONS['KEY_PREFIX'] must be a str")
            self.settings: Mapping[str, Any] = {"KEY_PREFIX": prefix, "WATCHDOG": bool(opts.pop("WATCHDOG", False))}
        else:
            self.settings, opts = type(self).parse_options(self._settings, alias)
            capabilities = type(self).capabilities_from(self.settings)
            if capabilities != type(self).capabilities:
                self.capabilities = capabilities  # type: ignore[misc]
        self.key_prefix: str = self.settings["KEY_PREFIX"]
        self.watchdog: bool = self.settings["WATCHDOG"]
        #: What passes through to the driver (with declared :attr:`OPTIONS`), or every option but
        #: the common ones (without).
        self.options = opts
        #: The holds taken through this backend, by key and holder (:mod:`locks.registry`).
        self.holds = HoldRegistry()
        self._keys: dict[LockName, Key] = {}  # see key_of
        _all_backends.add(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} alias={self.alias!r} location={self.location!r}>"

    # -- options and capabilities, known without connecting ---------------------------------
    @classmethod
    def driver_options(cls) -> Collection[str] | None:
        """The lower-case keys that pass through to the driver (libpq's, redis-py's), or ``None``
        when every key must be one of :attr:`OPTIONS`."""
        return None

    @classmethod
    def parse_options(
        cls, options: Mapping[str, Any] | None, alias: str = "default"
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``options`` checked against the declaration: the value of every option (defaults
        filled in), and what passes through to the driver.

        Raises:
            ImproperlyConfigured: naming the alias and the option.
        """
        return parse_options(
            COMMON_OPTIONS + (cls.OPTIONS or ()),
            options,
            where=f"{cls.__name__} (alias {alias!r})",
            driver=cls.driver_options(),
            driver_name=cls.driver_name,
        )

    @classmethod
    def capabilities_with(cls, options: Mapping[str, Any] | None = None) -> frozenset[str]:
        """What a backend of this class built with ``options`` can do, without building it."""
        if cls.OPTIONS is None:
            return cls.capabilities
        return cls.capabilities_from(cls.parse_options(options)[0])

    @classmethod
    def capabilities_from(cls, settings: Mapping[str, Any]) -> frozenset[str]:
        """The capabilities given parsed option values: :attr:`capabilities`, unless an option
        changes them (override, say, to drop ``fencing`` when ``FENCING`` is off)."""
        return cls.capabilities

    # -- construction from a URL -----------------------------------------------------------
    @classmethod
    def from_url(cls, url: str, alias: str = "default", **options: Any) -> BaseLockBackend:
        """Build a backend from a URL; query parameters become ``OPTIONS`` (strings)."""
        query = dict(parse_qsl(urlsplit(url).query))
        return cls(alias=alias, location=url, options={**query, **options})

    def spec(self) -> BackendSpec:
        """A picklable recipe that builds an equivalent backend (in another process, say)."""
        cls = type(self)
        return BackendSpec(f"{cls.__module__}.{cls.__qualname__}", self.location, dict(self._settings))

    # -- capabilities and keys --------------------------------------------------------------
    def supports(self, capability: str) -> bool:
        return capability in self.capabilities

    def require(self, capability: str, name: LockName | None = None) -> None:
        """Raise :class:`NotSupported` unless the backend declares ``capability``."""
        if capability not in self.capabilities:
            what = CAPABILITIES.get(capability, capability)
            raise NotSupported(f"{type(self).__name__} does not support {capability} ({what})", name)

    def validate_name(self, name: object) -> LockName:
        return validate_name(name, self.key_spec)

    def make_key(self, name: LockName) -> Key:
        """The server key of a validated name. Override to add a namespace (keep it stable)."""
        return make_key(name, self.key_spec, self.key_prefix)

    def key_of(self, name: LockName) -> Key:
        """:meth:`make_key`, remembered for the names used most recently (a key is a hash of the
        name: handles are often built for one acquisition of a name used again and again)."""
        keys = self._keys
        key = keys.get(name)
        if key is None:
            key = self.make_key(name)
            if len(keys) >= _KEYS_REMEMBERED:
                keys.clear()
            keys[name] = key
        return key

    # -- the primitives ---------------------------------------------------------------------
    def try_acquire(self, request: LockRequest) -> Hold | None:
        """One attempt: a :class:`Hold` when acquired, ``None`` when busy. Never waits."""
        raise NotImplementedError

    def acquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        """Wait up to ``timeout`` seconds (``None``: forever) for the lock.

        The default polls :meth:`try_acquire` with exponential backoff and jitter between
        :attr:`poll_min` and :attr:`poll_max`, sleeping in :meth:`wait_for_release`. The last
        pause ends at the deadline and is followed by one last attempt (see :mod:`locks.deadline`).
        """
        started = time.monotonic()
        deadline = Deadline(timeout)
        delay = self.poll_min
        while True:
            hold = self.try_acquire(request)
            if hold is not None:
                return hold
            if deadline.expired():
                return None
            # jitter: waiters do not retry in step; the last pause ends at the deadline, and the
            # attempt after it is the last one
            pause = deadline.cap(delay * random.uniform(0.5, 1.0))
            self.wait_for_release(request, pause)
            delay = self.next_poll_delay(delay, time.monotonic() - started)

    def next_poll_delay(self, delay: float, waited: float) -> float:
        """The pause before the next attempt of the default :meth:`acquire`, given the last one
        and how long the caller has waited: doubling up to :attr:`poll_max`. Override for
        another backoff (say, a cap that grows with the wait)."""
        return min(delay * 2, self.poll_max)

    def wait_for_release(self, request: LockRequest, timeout: float) -> None:
        """Sleep until the lock may be free, at most ``timeout`` seconds. Backends with a
        release notification return as soon as it comes; spurious returns are harmless."""
        time.sleep(timeout)

    def release(self, hold: Hold) -> None:
        """Release a hold. Raise :class:`~locks.exceptions.LockLost` when it was no longer held."""
        raise NotImplementedError

    def extend(self, hold: Hold, ttl: float) -> None:
        """Set the lease of a held lock to ``ttl`` seconds from now (``ttl`` capability)."""
        self.require(TTL, hold.name)

    def check(self, hold: Hold) -> bool:
        """Whether the hold is still held (``watchdog`` capability). Must not block for long."""
        return True

    def reentry_lost(self, hold: Hold) -> str | None:
        """Asked when the thread or task that holds ``hold`` takes the same lock again: the reason
        the hold is already gone, without the server having told anyone (say, a lock scoped to a
        transaction that has ended), or ``None``. A gone hold is marked lost and the lock taken
        anew, instead of counting a nesting of a lock nobody holds. Called on that path only, so
        it must not query the server."""
        return None

    def is_locked(self, key: Key) -> bool:
        """Whether anyone holds the lock (a snapshot: it may change at once)."""
        raise NotImplementedError

    def holders(self, prefix: str | None = None) -> list[HolderInfo]:
        """The held locks, those whose name starts with ``prefix`` when given (``listing``)."""
        self.require(LISTING)
        return []

    def force_release(self, name: LockName) -> int:
        """Release a lock whoever holds it; the number of holds broken (``force_release``)."""
        self.require(FORCE_RELEASE, name)
        return 0

    def close(self) -> None:
        """Close connections the backend owns that no hold uses. Holds stay valid.

        Safe to call more than once, and from :meth:`__del__`: a backend that nobody references
        any more closes its connections at once (backends keep no reference cycles to
        themselves, so CPython frees them without waiting for the cyclic collector)."""

    def __enter__(self) -> Self:
        """``with locks.connect(url) as backend:`` closes the backend on exit."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A dropped backend gives its server connections back now, not when the cyclic garbage
        # collector happens to run (four workers dropping backends exhausted PostgreSQL).
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing can be reported from a finalizer
            pass

    # -- async twins: thread-backed by default, overridden by native async backends ---------
    @classmethod
    def executor(cls) -> ThreadPoolExecutor:
        with BaseLockBackend._executor_lock:
            if BaseLockBackend._executor is None:
                BaseLockBackend._executor = _default_executor()
            return BaseLockBackend._executor

    async def _in_thread(self, func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor(), func, *args)

    #: The longest a thread-backed async wait blocks in one go, so a cancelled task frees its
    #: thread soon after.
    async_wait_slice: ClassVar[float] = 0.5

    async def aacquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        """Async :meth:`acquire`. The default waits in a worker thread (:meth:`acquire_in_thread`),
        in slices; when the awaiting task is cancelled, a hold that the thread still obtains is
        released."""
        deadline = Deadline(timeout)
        while True:
            # Each slice ends at a point of the monotonic clock, not after a length counted from
            # when a worker thread picks it up: the last one ends at the deadline.
            end = time.monotonic() + self.async_wait_slice
            last = deadline.at is not None and deadline.at <= end
            if deadline.at is not None and last:
                end = deadline.at
            work = self.executor().submit(self._acquire_until, request, end)
            try:
                hold = await asyncio.shield(asyncio.wrap_future(work))
            except asyncio.CancelledError:
                # On the executor's own future, not the asyncio one: its callback runs even once
                # the event loop is closed, so a late hold is never leaked.
                work.add_done_callback(_OrphanReleaser(self))
                raise
            if hold is not None:
                return hold
            if last:
                return None

    def _acquire_until(self, request: LockRequest, end: float) -> Hold | None:
        return self.acquire_in_thread(request, max(0.0, end - time.monotonic()))

    def acquire_in_thread(self, request: LockRequest, timeout: float) -> Hold | None:
        """One slice of a thread-backed async wait (``timeout`` 0: a single attempt). Backends
        whose holds depend on the calling thread override it."""
        if timeout > 0:
            return self.acquire(request, timeout)
        return self.try_acquire(request)

    def _release_orphan(self, future: Any) -> None:
        # Runs in the worker thread that completed the future (or at once, if it is done).
        if future.cancelled() or future.exception() is not None or future.result() is None:
            return
        self.release_quietly(future.result())

    def release_quietly(self, hold: Hold) -> None:
        """Release a hold nobody waits on (lost, orphaned, abandoned), ignoring any error."""
        try:
            self.release(hold)
        except Exception:  # noqa: BLE001 - nobody is left to tell
            pass

    async def arelease(self, hold: Hold) -> None:
        await self._in_thread(self.release, hold)

    async def aextend(self, hold: Hold, ttl: float) -> None:
        await self._in_thread(self.extend, hold, ttl)

    async def ais_locked(self, key: Key) -> bool:
        return await self._in_thread(self.is_locked, key)  # type: ignore[no-any-return]

    # -- the public entry point for backends built by hand ----------------------------------
    def lock(self, name: Any = None, **options: Any) -> Lock:
        """A lock handle on this backend: the same as :func:`locks.lock` with ``using``."""
        global _Lock
        cls = _Lock
        if cls is None:  # imported once: locks.handle imports this module
            from locks.handle import Lock

            cls = _Lock = Lock
        return cls(name, backend=self, **options)

    def alock(self, name: Any = None, **options: Any) -> AsyncLock:
        """An asyncio lock handle on this backend: the same as :func:`locks.alock`."""
        from locks.aio import AsyncLock

        return AsyncLock(name, backend=self, **options)

    # -- fork safety ------------------------------------------------------------------------
    def after_fork(self) -> None:
        """Called in a forked child (by :mod:`locks.forking`, after the keeper was reset): the
        child holds none of its parent's locks through this object. Backends extend it to drop
        connections shared with the parent (without closing them: they are the parent's), and
        call ``super().after_fork()``."""
        self.holds = HoldRegistry()


class _OrphanReleaser:
    """The done-callback that gives back a hold a cancelled task's worker thread still obtained.

    It refers to the backend weakly: a finished executor future stays in a reference cycle with
    the asyncio future that wrapped it, and a strong reference from there would keep a dropped
    backend (and its connections) alive until the cyclic collector runs. While the callback can
    fire the backend is alive anyway: the worker thread running ``acquire_in_thread`` holds it.
    """

    __slots__ = ("backend",)

    def __init__(self, backend: BaseLockBackend) -> None:
        self.backend = weakref.ref(backend)

    def __call__(self, future: Any) -> None:
        backend = self.backend()
        if backend is not None:
            backend._release_orphan(future)


@on_fork_in_child(BACKENDS)
def _forget_holds_after_fork() -> None:
    for backend in list(_all_backends):
        backend.after_fork()
