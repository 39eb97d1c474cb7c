"""Lock handles: :class:`Lock` (context manager, decorator, ``threading.Lock``-style object).

State lives per holder (thread or asyncio task), never in the handle alone, so one handle may be
shared like a module-level ``threading.Lock``: two threads using it exclude each other.

Reentrancy: each backend keeps a registry of holds (:mod:`locks.registry`). Acquiring a name that
the current thread or task already holds on the same backend only counts, on every backend alike,
while the outer hold is provably alive (see :func:`locks.registry.confirm`); the server sees one
acquire and one release per outermost hold.

Every state change of a handle is written here once, in :class:`LockBase`; :class:`Lock` and
:class:`locks.aio.AsyncLock` differ only in how they wait on the backend.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from locks import events, options
from locks import keeper as keeper_module
from locks.backends.base import FENCING, SHARED, TTL, WATCHDOG, BaseLockBackend, Hold, LockRequest, Owner
from locks.exceptions import LockError, LockLost, LockNotHeld, LockTimeout, NotSupported
from locks.forking import PID, on_fork_in_child
from locks.keys import Key, LockName
from locks.registry import Entry, confirm, current_holder, report_lost, trusted

if TYPE_CHECKING:
    from typing_extensions import Self

F = TypeVar("F", bound=Callable[..., Any])

#: The current holder (kept under its old name for backends and tests that import it).
current_context = current_holder

_owners = threading.local()


_pid = os.getpid()


@on_fork_in_child(PID)
def _new_pid() -> None:
    global _pid
    _pid = os.getpid()


def _owner(holder: object) -> Owner:
    # One Owner per thread (and process): building one costs a uuid4, too slow for every acquire.
    if not isinstance(holder, threading.Thread):
        return Owner.current()
    owner: Owner | None = getattr(_owners, "owner", None)
    if owner is None or owner.pid != _pid:
        owner = _owners.owner = Owner.current()
    return owner


_UNSET: Any = object()


class LockOptions(TypedDict, total=False):
    """The keyword arguments of :func:`locks.lock` and :func:`locks.alock` (see there)."""

    using: str | None
    backend: BaseLockBackend | None
    timeout: float | timedelta | None
    on_busy: str
    ttl: float | timedelta | None
    auto_renew: bool | None
    on_lost: Callable[[Lock], Any] | None
    shared: bool


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
        auto_renew: bool | None = None,
        on_lost: Callable[[Lock], Any] | None = None,
        shared: bool = False,
    ) -> None:
        if using is not None and backend is not None:
            raise TypeError("pass either using= or backend=, not both")
        if using is not None and not isinstance(using, str):
            raise TypeError(f"using must be a LOCKS alias (str), not {type(using).__name__}")
        if backend is not None and not isinstance(backend, BaseLockBackend):
            raise TypeError(f"backend must be a BaseLockBackend, not {type(backend).__name__}")
        # the defaults need no checking: a handle is often built for a single acquisition
        self.timeout = None if timeout is None else options.timeout(timeout)
        self.on_busy = "raise" if on_busy == "raise" else options.on_busy(on_busy)
        self.ttl = None if ttl is None else options.ttl(ttl)
        self.auto_renew = None if auto_renew is None else options.flag(auto_renew, "auto_renew")
        self.on_lost = None if on_lost is None else options.callback(on_lost, "on_lost")
        self.shared = False if shared is False else options.flag(shared, "shared")
        self.using = using
        self._backend = backend
        self._name_spec = name
        self.name: LockName | None = None
        self._validated_by: BaseLockBackend | None = None
        if name is not None and not callable(name):
            if backend is not None:
                self.name = backend.validate_name(name)
                self._validated_by = backend
            else:
                if isinstance(name, bool) or not isinstance(name, (str, int)):
                    raise TypeError(f"a lock name must be a str, not {type(name).__name__}")
                if name == "":
                    raise ValueError("a lock name must not be empty")
                self.name = name
        self._key: Key | None = None
        self._prepared: tuple[BaseLockBackend, Key, float | None] | None = None
        # how holds of this handle are kept: (renew with ttl, seconds between keeper visits)
        self._keeping: tuple[float | None, float] = (None, 0.0)
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
        """Backend, key and effective ttl, checked once per handle before any server work.

        On a backend whose locks expire, a lock that gives no ``ttl`` gets the backend's
        ``default_ttl``, renewed in the background unless ``auto_renew=False``; an explicit
        ``ttl`` is renewed only with ``auto_renew=True``. ``on_lost`` turns the watchdog on for
        this lock's holds where the backend has one, and is refused where nothing could ever
        call it.
        """
        prepared = self._prepared
        if prepared is None:
            name = self._require_name()
            backend = self.backend
            if self._validated_by is not backend:
                name = self.name = backend.validate_name(name)
            if self.shared:
                backend.require(SHARED, name)
            if self.ttl is not None or self.auto_renew:
                backend.require(TTL, name)
            lease = TTL in backend.capabilities
            ttl = self.ttl if self.ttl is not None else (backend.default_ttl if lease else None)
            if self.auto_renew and ttl is None:
                raise ValueError("auto_renew needs a ttl")
            renew = lease and ttl is not None and (self.auto_renew if self.auto_renew is not None else self.ttl is None)
            watchdog = WATCHDOG in backend.capabilities and (backend.watchdog or self.on_lost is not None)
            if self.on_lost is not None and not renew and not watchdog:
                raise NotSupported(
                    f"{type(backend).__name__} cannot tell that a held lock was lost (no watchdog capability): "
                    "on_lost would never be called; use auto_renew=True on a lease",
                    name,
                )
            if renew:
                self._keeping = (ttl, (ttl or 0.0) * keeper_module.RENEW_FRACTION)
            elif watchdog:
                self._keeping = (None, backend.watchdog_interval)
            self._key = backend.key_of(name)
            prepared = self._prepared = (backend, self._key, ttl)
        return prepared

    # -- acquisition (shared by the sync and async handles) ---------------------------------
    def _reentry(self, backend: BaseLockBackend, key: Key, holder: object) -> Entry | None:
        """The hold this holder already has of ``key``, if any. One that ended without a word
        from the server (``reentry_lost``: a transaction-scoped lock after its transaction) is
        forgotten, and the lock taken anew."""
        entry = backend.holds.get(key, holder)
        if entry is not None and not entry.lost:
            reason = backend.reentry_lost(entry.hold)
            if reason is not None:
                backend.holds.discard(entry)
                entry.mark_lost(reason)
                return None
        return entry

    def _nest(self, backend: BaseLockBackend, entry: Entry, holder: object, alive: bool) -> bool:
        """Count a nested acquisition on ``entry``, which :func:`locks.registry.confirm` judged.

        A hold found lost is forgotten (the next acquisition asks the server) and
        :class:`LockLost` raised: the caller believed it held the lock."""
        if not alive:
            backend.holds.discard(entry)
            raise LockLost(f"{self.name!r} was lost: {entry.lost_reason}", self.name)
        if entry.shared and not self.shared:
            raise LockError(f"{self.name!r} is held shared here: it cannot be upgraded to exclusive", self.name)
        entry.count += 1
        entry.handles.append(self)
        self._push(holder, entry)
        return True

    def _request(self, key: Key, ttl: float | None, context: object) -> LockRequest:
        # Requests are immutable: the same thread or task asking again reuses its last one.
        cached = self._cached_request
        if cached is not None and cached[0] is context and cached[1].owner.pid == _pid:
            return cached[1]
        request = LockRequest(self.name, key, self.shared, ttl, _owner(context))  # type: ignore[arg-type]
        self._cached_request = (context, request)
        return request

    def _acquired(
        self, backend: BaseLockBackend, hold: Hold | None, holder: object, started: float, timeout: float | None
    ) -> bool:
        if hold is None:
            events.timed_out(backend, self.name, time.monotonic() - started, timeout)
            return False
        entry = Entry(backend, hold, holder, self.shared, self, _pid)
        ttl = hold.request.ttl
        if ttl is not None:
            # A try-once lease surely runs from before the request was sent; a waited one from
            # its grant, which the reply follows by a round trip (the trust margin covers it).
            entry.lease_until = (started if timeout == 0 else hold.acquired_at) + ttl
        backend.holds.add(entry)
        stack = self._stacks.get(holder)  # _push, inlined: this is the hot path
        if stack is None:
            self._stacks[holder] = [entry]
        else:
            stack.append(entry)
        self._last = entry
        renew_ttl, keep_every = self._keeping
        if keep_every:
            entry.guard = threading.Lock()
            entry.renew_ttl = renew_ttl
            entry.keep_every = keep_every
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
        context = current_holder()
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
            entry.backend.holds.discard(entry)
        return entry, last

    def _lost_error(self, entry: Entry) -> LockLost:
        return LockLost(f"{self.name!r} was lost while held: {entry.lost_reason}", self.name)

    def _released(self, entry: Entry, error: LockLost | None) -> None:
        if error is None:
            events.released(entry.backend, self.name, entry.hold.acquired_at)
        elif entry.mark_lost(str(error)):
            events.lost(entry.backend, self.name, time.monotonic() - entry.hold.acquired_at, entry.lost_reason)

    def notify_lost(self) -> None:
        """Run ``on_lost(self)``: the keeper and the registry call it once a hold is lost."""
        if self.on_lost is not None:
            try:
                self.on_lost(self)
            except Exception:  # noqa: BLE001 - a failing callback must not kill the keeper
                keeper_module.logger.exception("on_lost callback of %r raised", self.name)

    def forget_holder(self, holder: object) -> None:
        """Drop what this handle recorded for a thread or task that has ended."""
        self._stacks.pop(holder, None)

    # -- extend (shared by the sync and async handles) --------------------------------------
    def _extend_plan(self, ttl: float | timedelta | None) -> tuple[BaseLockBackend, Entry, float]:
        backend, _, default_ttl = self._prepare()
        backend.require(TTL, self.name)
        seconds = options.ttl(ttl) or default_ttl
        if seconds is None:
            raise ValueError("extend() needs a ttl: pass one, or give the lock a ttl")
        entry = self._current_entry()
        if entry.lost:
            raise self._lost_error(entry)
        return backend, entry, seconds

    def _extended(self, entry: Entry, started: float, seconds: float) -> None:
        entry.lease_until = started + seconds  # the new lease surely runs from before the call

    def _extend_failed(self, entry: Entry, error: LockLost) -> None:
        if entry.mark_lost(str(error)):
            report_lost(entry)

    def _current_entry(self) -> Entry:
        stack = self._stacks.get(current_holder())
        if not stack:
            raise LockNotHeld(f"{self.name!r} is not held by this handle in this thread or task", self.name)
        return stack[-1]

    @property
    def owned(self) -> bool:
        """Whether this handle holds the lock in the current thread or task (and has not lost it)."""
        stack = self._stacks.get(current_holder())
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
        stack = self._stacks.get(current_holder())
        return stack[-1].hold.token if stack else None

    def __bool__(self) -> bool:
        """Truthy while held here: ``with locks.lock(..., on_busy="skip") as held: if held: ...``."""
        return self.owned

    def __repr__(self) -> str:
        name = self._name_spec if self.name is None else self.name
        return f"<{type(self).__name__} {name!r} using={self.using or 'default'}>"

    def _holds_lost_here(self) -> bool:
        return bool(self._stacks.get(current_holder()))

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
        context = current_holder()
        if (key, context) in backend.holds:
            entry = self._reentry(backend, key, context)
            if entry is not None:
                return self._nest(backend, entry, context, trusted(entry) or confirm(entry))
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
            entry.backend.release_quietly(entry.hold)
            raise self._lost_error(entry)
        try:
            entry.backend.release(entry.hold)
        except LockLost as exc:
            self._released(entry, exc)
            raise
        events.released(entry.backend, self.name, entry.hold.acquired_at)

    def extend(self, ttl: float | timedelta | None = None) -> None:
        """Renew the lease of the lock this thread or task holds: ``ttl`` seconds from now
        (default: the handle's ttl). Requires the ``ttl`` capability.

        Raises:
            LockLost: the lease had run out (the handle is then ``lost``).
        """
        backend, entry, seconds = self._extend_plan(ttl)
        with entry.guard:  # never beside a renewal of the keeper's
            if entry.lost:
                raise self._lost_error(entry)
            started = time.monotonic()
            try:
                backend.extend(entry.hold, seconds)
            except LockLost as exc:
                error = exc
            else:
                self._extended(entry, started, seconds)
                return
        self._extend_failed(entry, error)
        raise error

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
        """Decorate a function, a coroutine function or a management command class: each call
        takes a fresh handle (see :mod:`locks.decorating`)."""
        from locks.decorating import decorate

        return decorate(self, target)
