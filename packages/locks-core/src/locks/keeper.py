"""The keeper: one background thread per process that renews leases (``auto_renew``) and checks
held locks (the watchdog), for every lock at once.

A lock it can no longer keep is marked lost: ``on_lost(lock)`` callbacks run in this thread, the
``lock_lost`` signal is sent, and the holder's ``release()`` raises ``LockLost``. Nothing is
raised into the holder's thread and no signal is sent to the process.

Release first *unwatches* a hold, waiting for a renewal in flight to finish, so a renewal can never
run after release returns (and never re-takes a lock released or lost meanwhile).
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from locks.exceptions import LockLost
from locks.forking import KEEPER, on_fork_in_child

if TYPE_CHECKING:
    from locks.registry import Entry

logger = logging.getLogger("locks.keeper")

#: A lease is renewed when this fraction of its ttl has passed.
RENEW_FRACTION = 1 / 3


class Keeper:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, weakref.ref[Entry]]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._prune_at = 1024
        self._chores: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = collections.deque()
        self._timers: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []

    def watch(self, entry: Entry) -> None:
        """Start renewing and/or checking ``entry`` (it says which, and how often)."""
        with self._cond:
            heap = self._heap
            # weakly: a released hold must not keep its backend (and connections) alive until due
            heapq.heappush(heap, (time.monotonic() + entry.keep_every, next(self._seq), weakref.ref(entry)))
            if len(heap) > self._prune_at:
                self._prune()
            self._wake()

    def _prune(self) -> None:
        # Released holds stay in the heap until due; with every lease renewed by default, a busy
        # process would pile up thousands of them. Dropping them when the heap has doubled since
        # the last time costs O(1) per watch, amortised.
        self._heap = [item for item in self._heap if _kept(item[2]) is not None]
        heapq.heapify(self._heap)
        self._prune_at = max(1024, 2 * len(self._heap))

    def call_soon(self, func: Callable[..., Any], *args: Any) -> None:
        """Run ``func(*args)`` in the keeper's thread (work that must not run where it is found,
        such as giving back the holds of a thread that is ending)."""
        with self._cond:
            self._chores.append((func, args))
            self._wake()

    def call_later(self, delay: float, func: Callable[..., Any], *args: Any) -> None:
        """Run ``func(*args)`` in the keeper's thread in ``delay`` seconds: housekeeping that may
        wait and is cheaper done once for many events (say, renaming sessions that went idle).
        Pass what must not be kept alive meanwhile as a weak reference."""
        with self._cond:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), func, args))
            self._wake()

    def _wake(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="locks-keeper", daemon=True)
            self._thread.start()
        self._cond.notify()

    @staticmethod
    def unwatch(entry: Entry) -> None:
        """Stop keeping ``entry``; returns once no renewal of it is running."""
        with entry.guard:
            entry.stopped = True

    @staticmethod
    async def aunwatch(entry: Entry) -> None:
        """:meth:`unwatch` for the event loop: waits for a renewal in flight (one round trip of
        the keeper thread) without blocking the loop or taking a worker thread."""
        while not entry.guard.acquire(blocking=False):
            await asyncio.sleep(0.001)
        try:
            entry.stopped = True
        finally:
            entry.guard.release()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap and not self._chores and not self._timers:
                    self._cond.wait()
                chore = self._chores.popleft() if self._chores else None
                if chore is None and self._timers and self._timers[0][0] <= time.monotonic():
                    chore = heapq.heappop(self._timers)[2:]
            if chore is not None:
                try:
                    chore[0](*chore[1])
                except Exception:
                    logger.exception("a keeper task failed")
                chore = None  # nothing of it stays referenced while the keeper sleeps
                continue
            with self._cond:
                now = time.monotonic()
                timer_due = self._timers[0][0] if self._timers else None
                if not self._heap:
                    if timer_due is not None:
                        self._cond.wait(max(0.0, timer_due - now))
                    continue
                due, _, ref = self._heap[0]
                if timer_due is not None and timer_due < due:
                    due = timer_due
                delay = due - now
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                if timer_due is not None and timer_due <= self._heap[0][0]:
                    continue  # the timer is due first: run it as a chore above
                heapq.heappop(self._heap)
            entry = _kept(ref)
            if entry is None:
                continue
            again = self._service(entry)
            entry = None  # the keeper sleeps holding no hold, backend or connection
            if again is not None:
                with self._cond:
                    heapq.heappush(self._heap, (time.monotonic() + again, next(self._seq), ref))

    def _service(self, entry: Entry) -> float | None:
        """Renew or check one hold; the delay until the next visit, or None to drop it."""
        reason = None
        with entry.guard:
            if entry.stopped or entry.lost:
                return None
            backend, hold = entry.backend, entry.hold
            try:
                if entry.renew_ttl is not None:
                    started = time.monotonic()  # the new lease surely runs from here
                    backend.extend(hold, entry.renew_ttl)
                    entry.lease_until = started + entry.renew_ttl
                elif not backend.check(hold):
                    raise LockLost("the server no longer has the lock", hold.name)
            except LockLost as exc:
                reason = str(exc) or "lost"
            except Exception as exc:  # noqa: BLE001 - a transient failure is retried while the lease lasts
                left = entry.lease_until - time.monotonic()
                if entry.renew_ttl is not None and left > 0.2:
                    logger.warning("renewing %r failed (%s); retrying", hold.name, exc)
                    return min(max(left / 4, 0.05), entry.keep_every)
                reason = f"{type(exc).__name__}: {exc}"
            if reason is None:
                return entry.keep_every
            first = entry.mark_lost(reason)
        if first:
            from locks.registry import report_lost

            report_lost(entry)
        return None


def _kept(ref: weakref.ref[Entry]) -> Entry | None:
    """The entry behind a heap item, unless it is gone or no longer kept."""
    entry = ref()
    return None if entry is None or entry.stopped else entry


keeper = Keeper()


@on_fork_in_child(KEEPER)
def _reset_after_fork() -> None:
    # The child has no keeper thread, and none of the parent's holds are the child's to keep.
    global keeper
    keeper = Keeper()
