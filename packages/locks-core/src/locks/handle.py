"""Lock handles: :class:`Lock` (context manager, decorator, ``threading.Lock``-style object).

State lives per thread (or asyncio task), never in the handle alone, so one handle may be shared
like a module-level ``threading.Lock``: two threads using it exclude each other.

Reentrancy: the backend keeps a registry ``(key, context) → Entry``. Acquiring a name that the
current thread or task already holds on the same backend only counts (no server round trip), on
every backend alike; the server sees one acquire and one release per outermost hold.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import threading
import time
from _thread import get_ident
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from locks import events, options
from locks import keeper as keeper_module
from locks.backends.base import FENCING, SHARED, TTL, WATCHDOG, BaseLockBackend, Hold, LockRequest, Owner
from locks.exceptions import LockError, LockLost, LockNotHeld, LockTimeout
from locks.keys import Key, LockName
from locks.naming import NameBuilder

if TYPE_CHECKING:
    from typing_extensions import Self

F = TypeVar("F", bound=Callable[..., Any])

_get_running_loop = asyncio._get_running_loop  # None outside a loop, without raising


def current_context() -> object:
    """What "the same holder" means for reentrancy: the running asyncio task, else the thread
    (its ident: a thread that dies holding a lock leaks it, as it would a ``threading.RLock``)."""
    if _get_running_loop() is not None:
        task = asyncio.current_task()
        if task is not None:
            return task
    return get_ident()


_owners = threading.local()


_pid = os.getpid()


def _new_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_new_pid)


def _owner(context: object) -> Owner:
    # One Owner per thread (and process): building one costs a uuid4, too slow for every acquire.
    if context.__class__ is not int:
        return Owner.current()
    owner: Owner | None = getattr(_owners, "owner", None)
    if owner is None or owner.pid != _pid:
        owner = _owners.owner = Owner.current()
    return owner


class Entry:
    """One server hold and the nested acquisitions that share it in one thread or task.

    Only its own thread or task changes it (and the keeper, under ``guard``), so the hot path
    takes no lock: registry keys include the context.
    """

    __slots__ = (
        "backend",
        "context",
        "count",
        "guard",
        "handles",
        "hold",
        "keep_every",
        "lease_until",
        "lost",
        "lost_reason",
        "pid",
        "renew_ttl",
        "shared",
        "stopped",
    )

    def __init__(self, backend: BaseLockBackend, hold: Hold, context: object, shared: bool, handle: LockBase) -> None:
        self.backend = backend
        self.hold = hold
        self.context = context
        self.shared = shared
        self.count = 1
        self.pid = _pid  # a forked child inherits the handle, not the hold
        self.handles: list[LockBase] = [handle]
        self.lost = False
        self.lost_reason = ""
        # keeping (auto_renew / watchdog); guard only exists for kept entries
        self.renew_ttl: float | None = None
        self.keep_every = 0.0
        self.lease_until = 0.0
        self.stopped = False
        self.guard: threading.Lock = _NO_GUARD


class _NoGuard:
    """Stands in for the guard of an entry the keeper never sees."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_GUARD: Any = _NoGuard()


_UNSET: Any = object()


class LockBase:
    """What the sync and async handles share: options, name, key, reentrancy bookkeeping."""

    def __init__(
        self,
        name: Any = None,
        *,
        using: str | None = None,
        backend: BaseLockBackend | None = None,
        timeout: float | timedelta | None = None,
        on_busy: str = "raise",
        ttl: float | timedelta | None = None,
        auto_renew: bool = False,
        on_lost: Callable[[Lock], Any] | None = None,
        shared: bool = False,
    ) -> None:
        if using is not None and backend is not None:
            raise TypeError("pass either using= or backend=, not both")
        if using is not None and not isinstance(using, str):
            raise TypeError(f"using must be a LOCKS alias (str), not {type(using).__name__}")
        if backend is not None and not isinstance(backend, BaseLockBackend):
            raise TypeError(f"backend must be a BaseLockBackend, not {type(backend).__name__}")
        self.timeout = options.timeout(timeout)
        self.on_busy = options.on_busy(on_busy)
        self.ttl = options.ttl(ttl)
        self.auto_renew = options.flag(auto_renew, "auto_renew")
        self.on_lost = options.callback(on_lost, "on_lost")
        self.shared = options.flag(shared, "shared")
        self.using = using
        self._backend = backend
        self._name_spec = name
        self.name: LockName | None = None
        if name is not None and not callable(name):
            if backend is not None:
                self.name = backend.validate_name(name)
            else:
                if isinstance(name, bool) or not isinstance(name, (str, int)):
                    raise TypeError(f"a lock name must be a str, not {type(name).__name__}")
                if name == "":
                    raise ValueError("a lock name must not be empty")
                self.name = name
        self._key: Key | None = None
        self._prepared: tuple[BaseLockBackend, Key, float | None] | None = None
        self._stacks: dict[object, list[Entry]] = {}
        self._last: Entry | None = None
        self._cached_request: tuple[object, LockRequest] | None = None

    # -- configuration ----------------------------------------------------------------------
    def _options(self) -> dict[str, Any]:
        return {
            "timeout": self.timeout,
            "on_busy": self.on_busy,
            "ttl": self.ttl,
            "auto_renew": self.auto_renew,
            "on_lost": self.on_lost,
            "shared": self.shared,
        }

    def _derive(self, name: Any) -> Self:
        """A fresh handle with this one's options and another name (decorators use it per call)."""
        return type(self)(name, using=self.using, backend=self._backend, **self._options())

    @property
    def backend(self) -> BaseLockBackend:
        """The backend (resolved from ``using`` on first use, so decorating never touches settings)."""
        if self._backend is None:
            from locks.config import get_backend

            self._backend = get_backend(self.using)
        return self._backend

    def _require_name(self) -> LockName:
        if self.name is None:
            raise TypeError(
                f"this lock's name ({self._name_spec!r}) is built from a function's arguments: "
                "use it as a decorator, or give a str name"
            )
        return self.name

    def _prepare(self) -> tuple[BaseLockBackend, Key, float | None]:
        """Backend, key and effective ttl, checked once per handle before any server work."""
        prepared = self._prepared
        if prepared is None:
            name = self._require_name()
            backend = self.backend
            name = self.name = backend.validate_name(name)
            if self.shared:
                backend.require(SHARED, name)
            if self.ttl is not None or self.auto_renew:
                backend.require(TTL, name)
            if self.auto_renew and self.ttl is None and backend.default_ttl is None:
                raise ValueError("auto_renew needs a ttl")
            self._key = backend.make_key(name)
            ttl = self.ttl if self.ttl is not None else backend.default_ttl
            prepared = self._prepared = (backend, self._key, ttl)
        return prepared

    # -- acquisition (shared by the sync and async handles) ---------------------------------
    def _reenter(self, backend: BaseLockBackend, key: Key, context: object) -> bool:
        entry: Entry | None = backend._entries.get((key, context))
        if entry is None:
            return False
        if not entry.lost:
            reason = backend.reentry_lost(entry.hold)
            if reason is not None:
                # Gone without a word from the server: forget it and take the lock anew.
                backend._entries.pop((key, context), None)
                entry.lost = True
                entry.lost_reason = reason
                return False
        if entry.lost:
            raise LockLost(f"{self.name!r} was lost: {entry.lost_reason}", self.name)
        if entry.shared and not self.shared:
            raise LockError(f"{self.name!r} is held shared here: it cannot be upgraded to exclusive", self.name)
        entry.count += 1
        entry.handles.append(self)
        self._push(context, entry)
        return True

    def _request(self, key: Key, ttl: float | None, context: object) -> LockRequest:
        # Requests are immutable: the same thread or task asking again reuses its last one.
        cached = self._cached_request
        if cached is not None and cached[0] == context and cached[1].owner.pid == _pid:
            return cached[1]
        request = LockRequest(self.name, key, self.shared, ttl, _owner(context))  # type: ignore[arg-type]
        self._cached_request = (context, request)
        return request

    def _acquired(
        self, backend: BaseLockBackend, hold: Hold | None, context: object, started: float, timeout: float | None
    ) -> bool:
        if hold is None:
            events.timed_out(backend, self.name, time.monotonic() - started, timeout)
            return False
        entry = Entry(backend, hold, context, self.shared, self)
        backend._entries[(hold.request.key, context)] = entry
        stack = self._stacks.get(context)  # _push, inlined: this is the hot path
        if stack is None:
            self._stacks[context] = [entry]
        else:
            stack.append(entry)
        self._last = entry
        if self.auto_renew or (backend.watchdog and WATCHDOG in backend.capabilities):
            entry.guard = threading.Lock()
            if self.auto_renew:
                entry.renew_ttl = hold.request.ttl
                entry.keep_every = (hold.request.ttl or 0) * keeper_module.RENEW_FRACTION
                entry.lease_until = hold.acquired_at + (hold.request.ttl or 0)
            else:
                entry.keep_every = backend.watchdog_interval
            keeper_module.keeper.watch(entry)
        events.acquired(backend, self.name, hold.acquired_at - started, hold.token, self.shared)
        return True

    def _push(self, context: object, entry: Entry) -> None:
        # Each context touches only its own stack: dict and list operations need no lock.
        stack = self._stacks.get(context)
        if stack is None:
            self._stacks[context] = [entry]
        else:
            stack.append(entry)
        self._last = entry

    def _pop(self) -> tuple[Entry, bool]:
        """Take this handle's innermost hold in this context; whether it was the last nesting."""
        context = current_context()
        stack = self._stacks.get(context)
        if stack and stack[-1].pid != _pid:
            self._stacks.clear()  # holds of the parent process: not this process's to release
            stack = None
        if not stack:
            elsewhere = bool(self._stacks)
            raise LockNotHeld(
                f"{self.name!r} is not held by this handle in this "
                + ("thread or task (another one holds it)" if elsewhere else "thread or task"),
                self.name,
            )
        entry = stack.pop()
        if not stack:
            del self._stacks[context]
        entry.count -= 1
        entry.handles.remove(self)
        last = entry.count == 0
        if last:
            entries = entry.backend._entries
            registry_key = (entry.hold.request.key, context)
            if entries.get(registry_key) is entry:
                del entries[registry_key]
        return entry, last

    def _lost_error(self, entry: Entry) -> LockLost:
        return LockLost(f"{self.name!r} was lost while held: {entry.lost_reason}", self.name)

    def _released(self, entry: Entry, error: LockLost | None) -> None:
        if error is None:
            events.released(entry.backend, self.name, entry.hold.acquired_at)
        elif not entry.lost:
            entry.lost, entry.lost_reason = True, str(error)
            events.lost(entry.backend, self.name, time.monotonic() - entry.hold.acquired_at, entry.lost_reason)

    def _notify_lost(self) -> None:
        if self.on_lost is not None:
            try:
                self.on_lost(self)
            except Exception:  # noqa: BLE001 - a failing callback must not kill the keeper
                keeper_module.logger.exception("on_lost callback of %r raised", self.name)

    def _current_entry(self) -> Entry:
        stack = self._stacks.get(current_context())
        if not stack:
            raise LockNotHeld(f"{self.name!r} is not held by this handle in this thread or task", self.name)
        return stack[-1]

    @property
    def owned(self) -> bool:
        """Whether this handle holds the lock in the current thread or task (and has not lost it)."""
        stack = self._stacks.get(current_context())
        return stack is not None and bool(stack) and not stack[-1].lost

    @property
    def lost(self) -> bool:
        """Whether this handle's latest hold was lost (lease expired, connection dropped...)."""
        last = self._last
        return last is not None and last.lost

    @property
    def token(self) -> int | None:
        """The fencing token of the current hold (``None`` when not held). It grows with every
        acquisition of the name; pass it to the resource you protect so it can refuse a
        stale holder. Requires the ``fencing`` capability."""
        self.backend.require(FENCING, self.name)
        stack = self._stacks.get(current_context())
        return stack[-1].hold.token if stack else None

    def __bool__(self) -> bool:
        """Truthy while held here: ``with locks.lock(..., on_busy="skip") as held: if held: ...``."""
        return self.owned

    def __repr__(self) -> str:
        name = self._name_spec if self.name is None else self.name
        return f"<{type(self).__name__} {name!r} using={self.using or 'default'}>"

    def _holds_lost_here(self) -> bool:
        return bool(self._stacks.get(current_context()))

    def _timeout_error(self) -> LockTimeout:
        if self.timeout == 0:
            return LockTimeout(f"{self.name!r} is held by another holder", self.name)
        return LockTimeout(f"{self.name!r} could not be acquired within {self.timeout}s", self.name)


class Lock(LockBase):
    """A named lock on one backend. Build it with :func:`locks.lock`.

    Use it as a context manager (``on_busy`` decides what a busy lock does), as a decorator (a
    fresh handle per call) or like ``threading.Lock`` (``acquire()`` returns a bool).
    """

    # -- the threading.Lock-style API -------------------------------------------------------
    def acquire(self, timeout: float | timedelta | None = _UNSET, *, blocking: bool = True) -> bool:
        """Acquire the lock; ``True`` when acquired, ``False`` when the timeout ran out.

        Args:
            timeout: overrides the handle's timeout: ``None`` waits forever, ``0`` tries once.
            blocking: ``False`` is the same as ``timeout=0``.
        """
        wait = self.timeout if timeout is _UNSET else options.timeout(timeout)
        if not blocking:
            wait = 0.0
        backend, key, ttl = self._prepared or self._prepare()
        context = current_context()
        if (key, context) in backend._entries and self._reenter(backend, key, context):
            return True
        started = time.monotonic()
        request = self._request(key, ttl, context)
        hold = backend.try_acquire(request) if wait == 0 else backend.acquire(request, wait)
        return self._acquired(backend, hold, context, started, wait)

    def release(self) -> None:
        """Release the innermost hold of this handle in this thread or task.

        Raises:
            LockNotHeld: this handle does not hold the lock here.
            LockLost: the lock was lost while held (it is released all the same).
        """
        entry, last = self._pop()
        if not last:
            if entry.lost:
                raise self._lost_error(entry)
            return
        if entry.keep_every:
            keeper_module.Keeper.unwatch(entry)
        if entry.lost:
            entry.backend._quiet_release(entry.hold)
            raise self._lost_error(entry)
        try:
            entry.backend.release(entry.hold)
        except LockLost as exc:
            self._released(entry, exc)
            raise
        events.released(entry.backend, self.name, entry.hold.acquired_at)

    def extend(self, ttl: float | timedelta | None = None) -> None:
        """Renew the lease of the lock this thread or task holds: ``ttl`` seconds from now
        (default: the handle's ttl). Requires the ``ttl`` capability."""
        backend, _, default_ttl = self._prepare()
        backend.require(TTL, self.name)
        seconds = options.ttl(ttl) or default_ttl
        if seconds is None:
            raise ValueError("extend() needs a ttl: pass one, or give the lock a ttl")
        entry = self._current_entry()
        with entry.guard:
            if entry.lost:
                raise self._lost_error(entry)
            try:
                backend.extend(entry.hold, seconds)
            except LockLost as exc:
                entry.lost, entry.lost_reason = True, str(exc)
                raise
            entry.lease_until = time.monotonic() + seconds

    def locked(self) -> bool:
        """Whether anyone holds the lock now (a snapshot, like ``threading.Lock.locked()``)."""
        backend, key, _ = self._prepare()
        return backend.is_locked(key)

    # -- context manager --------------------------------------------------------------------
    def __enter__(self) -> Self:
        if not self.acquire() and self.on_busy == "raise":
            raise self._timeout_error()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._holds_lost_here():
            self.release()

    # -- decorator --------------------------------------------------------------------------
    def __call__(self, target: F) -> F:
        if isinstance(target, type):
            return self._decorate_class(target)  # type: ignore[return-value]
        if not callable(target):
            raise TypeError(f"a lock decorates a function or a management command class, not {type(target).__name__}")
        names = NameBuilder(self._name_spec, target)
        if inspect.iscoroutinefunction(target):
            return self._decorate_coroutine(target, names)  # type: ignore[return-value]

        @functools.wraps(target)
        def locked_call(*args: Any, **kwargs: Any) -> Any:
            handle = self._derive(names(args, kwargs))
            with handle as held:
                if not held:
                    return None
                return target(*args, **kwargs)

        return locked_call  # type: ignore[return-value]

    def _decorate_coroutine(self, target: Callable[..., Any], names: NameBuilder) -> Callable[..., Any]:
        from locks.aio import AsyncLock

        opts = self._options()

        @functools.wraps(target)
        async def locked_call(*args: Any, **kwargs: Any) -> Any:
            handle = AsyncLock(names(args, kwargs), using=self.using, backend=self._backend, **opts)
            async with handle as held:
                if not held:
                    return None
                return await target(*args, **kwargs)

        return locked_call

    def _decorate_class(self, cls: type) -> type:
        handle = getattr(cls, "handle", None)
        if handle is None or not callable(handle):
            raise TypeError(
                f"{cls.__qualname__} has no handle() method: only management commands can be decorated as classes"
            )
        spec = self._name_spec
        if spec is None:
            spec = f"{cls.__module__}.{cls.__qualname__}"
        cls.handle = self._derive_spec(spec)(handle)  # type: ignore[attr-defined]
        return cls

    def _derive_spec(self, spec: Any) -> Lock:
        fresh = type(self).__new__(type(self))
        fresh.__dict__.update(self.__dict__)
        fresh._name_spec = spec
        fresh.name = None
        fresh._key = None
        fresh._prepared = None
        fresh._stacks = {}
        fresh._last = None
        fresh._cached_request = None
        return fresh
