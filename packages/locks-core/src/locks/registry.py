"""The registry of holds: which thread or asyncio task holds what, on one backend.

Every backend has one (:attr:`BaseLockBackend.holds <locks.backends.BaseLockBackend.holds>`).
Lock handles, the keeper and backends read and change holds through this module only.

A *holder* is the running asyncio task, else the :class:`threading.Thread` object, never a
thread ident: idents are reused as soon as a thread ends, and a new thread must not inherit the
holds of a dead one. When a holder ends with holds left (a thread that returned, a task that
finished without releasing), its holds are *abandoned*: they leave the registry, the keeper stops
renewing them, they are marked lost and released on the server, so the lock comes back as if
the holder's process had died.

A nested acquisition is granted locally (counted, no server work) only while the outer hold is
provably alive: see :func:`confirm`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from locks import events
from locks.exceptions import LockLost

if TYPE_CHECKING:
    from locks.backends.base import BaseLockBackend, Hold
    from locks.handle import LockBase
    from locks.keys import Key

logger = logging.getLogger("locks.registry")

#: A lease is trusted without asking the server while more than this part of its ttl is left
#: (by the monotonic clock, counted from before the request was sent)...
LEASE_MARGIN_FRACTION = 0.2
#: ... and at least this many seconds: room for a round trip and a short pause of the process.
LEASE_MARGIN_MIN = 0.1

_get_running_loop = asyncio._get_running_loop  # None outside a loop, without raising
_current_thread = threading.current_thread


def current_holder() -> object:
    """Who holds for reentrancy: the running asyncio task, else the current thread object."""
    if _get_running_loop() is not None:
        task = asyncio.current_task()
        if task is not None:
            return task
    return _current_thread()


class Entry:
    """One server hold and the nested acquisitions that share it in one holder.

    Only its own holder changes it, except the keeper (under ``guard``) and the abandonment of a
    holder that ended; registry keys include the holder, so the hot path takes no lock.

    Attributes:
        backend, hold: where and what is held.
        holder: the thread or task (see :func:`current_holder`).
        count: nested acquisitions sharing the hold.
        handles: the handles that acquired it, innermost last.
        lease_until: monotonic time by which the lease surely still runs (0: no lease).
        lost, lost_reason: set once the hold is known to be gone.
        renew_ttl, keep_every: the keeper's work (renew with that ttl / check, how often).
    """

    __slots__ = (
        "__weakref__",
        "backend",
        "count",
        "guard",
        "handles",
        "hold",
        "holder",
        "keep_every",
        "lease_until",
        "lost",
        "lost_reason",
        "pid",
        "renew_ttl",
        "shared",
        "stopped",
    )

    def __init__(
        self, backend: BaseLockBackend, hold: Hold, holder: object, shared: bool, handle: LockBase, pid: int
    ) -> None:
        self.backend = backend
        self.hold = hold
        self.holder = holder
        self.shared = shared
        self.count = 1
        self.pid = pid  # a forked child inherits the handle, not the hold
        self.handles: list[LockBase] = [handle]
        self.lost = False
        self.lost_reason = ""
        self.lease_until = 0.0
        # keeping (auto_renew / watchdog); a real guard only exists for kept entries
        self.renew_ttl: float | None = None
        self.keep_every = 0.0
        self.stopped = False
        self.guard: threading.Lock = NO_GUARD

    @property
    def key(self) -> Key:
        return self.hold.request.key

    def lease_left(self, now: float | None = None) -> float | None:
        """Seconds the lease surely still runs, or ``None`` for a hold without a lease."""
        if not self.lease_until:
            return None
        return self.lease_until - (time.monotonic() if now is None else now)

    def mark_lost(self, reason: str) -> bool:
        """Record the loss once; ``True`` the first time (then tell :func:`report_lost`)."""
        if self.lost:
            return False
        self.lost, self.lost_reason = True, reason or "lost"
        return True


class _NoGuard:
    """Stands in for the guard of an entry the keeper never sees."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


NO_GUARD: Any = _NoGuard()


class HoldRegistry:
    """The holds of one backend, by ``(key, holder)``."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[tuple[Key, object], Entry] = {}

    def get(self, key: Key, holder: object) -> Entry | None:
        return self._entries.get((key, holder))

    def __contains__(self, registry_key: tuple[Key, object]) -> bool:
        return registry_key in self._entries

    def add(self, entry: Entry) -> None:
        """Register a new outermost hold of its holder (arranging for the holder's end)."""
        self._entries[(entry.hold.request.key, entry.holder)] = entry
        _watch_holder_end(entry.holder)

    def discard(self, entry: Entry) -> None:
        """Forget ``entry`` if it is the one registered for its key and holder."""
        registry_key = (entry.hold.request.key, entry.holder)
        if self._entries.get(registry_key) is entry:
            del self._entries[registry_key]

    def entries(self) -> list[Entry]:
        """A snapshot of every hold (safe to iterate while others change the registry)."""
        return list(self._entries.values())

    def values(self) -> list[Entry]:
        return self.entries()

    def of_holder(self, holder: object) -> list[Entry]:
        return [entry for entry in list(self._entries.values()) if entry.holder is holder]

    def clear(self) -> None:
        self._entries = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries())


def report_lost(entry: Entry) -> None:
    """Send ``lock_lost`` and run the ``on_lost`` callbacks of a hold just marked lost."""
    hold = entry.hold
    events.lost(entry.backend, hold.name, time.monotonic() - hold.acquired_at, entry.lost_reason)
    for handle in list(entry.handles):
        handle.notify_lost()


def margin(ttl: float) -> float:
    """How much of a lease must be left for a nested acquisition to trust it unasked."""
    return max(LEASE_MARGIN_MIN, ttl * LEASE_MARGIN_FRACTION)


def trusted(entry: Entry) -> bool:
    """Whether a nested acquisition may count on ``entry`` without asking the server: a lease
    with more than :func:`margin` left by the monotonic clock, or a hold without a lease on a
    backend that has no means to check it (``watchdog``)."""
    if entry.lost:
        return False
    ttl = entry.hold.request.ttl
    if entry.lease_until:
        return ttl is not None and entry.lease_until - time.monotonic() > margin(ttl)
    return not entry.backend.supports("watchdog")


def confirm(entry: Entry) -> bool:
    """Whether ``entry`` is provably alive, asking the server when :func:`trusted` cannot tell.

    * A lease closer to its end than :func:`margin` (or past it) is renewed on the server: one
      owner-checked ``extend``, which also gives the nested acquisition a full lease, as a fresh
      acquisition would have.
    * A hold without a lease (a server session, an open file) is confirmed by the backend's
      ``check``: its session may have been cut since.

    A hold found gone is marked lost (``on_lost`` runs, ``lock_lost`` is sent) and ``False`` is
    returned; the caller forgets it and raises :class:`~locks.exceptions.LockLost`. Blocking: the
    asyncio handle runs it in a worker thread.
    """
    if trusted(entry):
        return True
    if entry.lost:
        return False
    backend, hold = entry.backend, entry.hold
    if entry.lease_until:
        return _renew_now(entry)
    with entry.guard:
        if entry.lost:
            return False
        try:
            alive = backend.check(hold)
            reason = "" if alive else "the server no longer has the lock"
        except LockLost as exc:
            alive, reason = False, str(exc)
        if alive:
            return True
        first = entry.mark_lost(reason)
    if first:
        report_lost(entry)
    return False


def _renew_now(entry: Entry) -> bool:
    backend, hold = entry.backend, entry.hold
    ttl = entry.renew_ttl or hold.request.ttl or 0.0
    with entry.guard:
        if entry.lost:
            return False
        started = time.monotonic()
        try:
            backend.extend(hold, ttl)
        except LockLost as exc:
            first = entry.mark_lost(str(exc) or "the lease ran out")
        else:
            entry.lease_until = started + ttl
            return True
    if first:
        report_lost(entry)
    return False


# -- holders that end with holds left -------------------------------------------------------
class _ThreadEndSentinel:
    """Lives in a thread's local storage: CPython drops it when the thread ends."""

    __slots__ = ("__weakref__", "thread")

    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread

    def __del__(self) -> None:
        thread = self.thread
        try:
            _abandon_later(thread)
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing left to release for
            pass


_thread_local = threading.local()
_watched_tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


def _watch_holder_end(holder: object) -> None:
    if isinstance(holder, threading.Thread):
        if getattr(_thread_local, "sentinel", None) is None and holder is _current_thread():
            _thread_local.sentinel = _ThreadEndSentinel(holder)
    elif isinstance(holder, asyncio.Task) and holder not in _watched_tasks:
        _watched_tasks.add(holder)
        holder.add_done_callback(_task_ended)


def _task_ended(task: asyncio.Task[Any]) -> None:
    _abandon(task)


def _abandon_later(thread: threading.Thread) -> None:
    # Runs in the ending thread, while CPython tears it down: leave the work to the keeper.
    from locks import keeper as keeper_module

    if any(backend.holds.of_holder(thread) for backend in _backends()):
        keeper_module.keeper.call_soon(_abandon, thread)


def _backends() -> list[BaseLockBackend]:
    from locks.backends.base import all_backends

    return all_backends()


def _abandon(holder: object) -> None:
    """Give back the holds of a thread or task that ended without releasing them."""
    for backend in _backends():
        for entry in backend.holds.of_holder(holder):
            backend.holds.discard(entry)
            abandon(entry, f"its holder {_describe(holder)} ended without releasing it")


def abandon(entry: Entry, reason: str) -> None:
    """Stop keeping ``entry``, mark it lost and release its server hold quietly (the caller has
    taken it out of the registry). An asyncio hold is released on its event loop when one runs."""
    from locks import keeper as keeper_module

    keeper_module.Keeper.unwatch(entry)
    for handle in list(entry.handles):
        handle.forget_holder(entry.holder)
    first = entry.mark_lost(reason)
    logger.warning("lock %r released: %s", entry.hold.name, reason)
    backend = entry.backend
    loop = None
    if isinstance(entry.holder, asyncio.Task):
        loop = entry.holder.get_loop()
    if loop is not None and loop.is_running() and not loop.is_closed():
        _pending.add(loop.create_task(_arelease_quietly(backend, entry.hold)))
    else:
        backend.release_quietly(entry.hold)
    if first:
        report_lost(entry)


_pending: set[asyncio.Task[None]] = set()


async def _arelease_quietly(backend: BaseLockBackend, hold: Hold) -> None:
    try:
        await backend.arelease(hold)
    except Exception:  # noqa: BLE001 - nobody is left to tell
        pass
    finally:
        task = asyncio.current_task()
        if task is not None:
            _pending.discard(task)


def _describe(holder: object) -> str:
    if isinstance(holder, threading.Thread):
        return f"thread {holder.name!r}"
    if isinstance(holder, asyncio.Task):
        return f"task {holder.get_name()!r}"
    return repr(holder)


__all__ = [
    "LEASE_MARGIN_FRACTION",
    "LEASE_MARGIN_MIN",
    "NO_GUARD",
    "Entry",
    "HoldRegistry",
    "abandon",
    "confirm",
    "current_holder",
    "margin",
    "report_lost",
    "trusted",
]
