"""The asyncio handle: :class:`AsyncLock`, built by :func:`locks.alock`.

It never blocks the event loop: backends with a native asyncio client (``async_native``) run on
the loop; the others wait in a worker thread, in short slices, so a cancelled task frees its
thread soon after and a lock obtained after cancellation is released at once. The hold records its
server session, so release happens on the session that acquired, whichever thread runs it.
Reentrancy is per task.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from locks import keeper as keeper_module
from locks import options
from locks.exceptions import LockLost
from locks.handle import LockBase
from locks.naming import NameBuilder
from locks.registry import confirm, current_holder, trusted

if TYPE_CHECKING:
    from typing_extensions import Self

F = TypeVar("F", bound=Callable[..., Any])
_UNSET: Any = object()


class AsyncLock(LockBase):
    """A named lock for asyncio code: ``async with``, ``await lk.acquire()``, async decorator."""

    async def acquire(self, timeout: float | timedelta | None = _UNSET, *, blocking: bool = True) -> bool:
        """Acquire the lock; ``True`` when acquired, ``False`` when the timeout ran out."""
        wait = self.timeout if timeout is _UNSET else options.timeout(timeout)
        if not blocking:
            wait = 0.0
        backend, key, ttl = self._prepared or self._prepare()
        context = current_holder()
        if (key, context) in backend.holds:
            entry = self._reentry(backend, key, context)
            if entry is not None:
                alive = trusted(entry) or await backend._in_thread(confirm, entry)
                return self._nest(backend, entry, context, alive)
        started = time.monotonic()
        hold = await backend.aacquire(self._request(key, ttl, context), wait)
        return self._acquired(backend, hold, context, started, wait)

    async def release(self) -> None:
        """Release the innermost hold of this handle in this task (see :meth:`Lock.release`)."""
        entry, last = self._pop()
        if not last:
            if entry.lost:
                raise self._lost_error(entry)
            return
        if entry.keep_every:
            await keeper_module.Keeper.aunwatch(entry)
        if entry.lost:
            await entry.backend._in_thread(entry.backend.release_quietly, entry.hold)
            raise self._lost_error(entry)
        try:
            await entry.backend.arelease(entry.hold)
        except LockLost as exc:
            self._released(entry, exc)
            raise
        self._released(entry, None)

    async def extend(self, ttl: float | timedelta | None = None) -> None:
        """Renew the lease of the lock this task holds (see :meth:`Lock.extend`)."""
        backend, entry, seconds = self._extend_plan(ttl)
        started = time.monotonic()
        try:
            await backend.aextend(entry.hold, seconds)
        except LockLost as exc:
            self._extend_failed(entry, exc)
            raise
        self._extended(entry, started, seconds)

    async def locked(self) -> bool:
        """Whether anyone holds the lock now (a snapshot)."""
        backend, key, _ = self._prepare()
        return await backend.ais_locked(key)

    async def __aenter__(self) -> Self:
        if not await self.acquire() and self.on_busy == "raise":
            raise self._timeout_error()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._holds_lost_here():
            await self.release()

    def __call__(self, target: F) -> F:
        if not inspect.iscoroutinefunction(target):
            raise TypeError("locks.alock() decorates coroutine functions; use locks.lock() for plain functions")
        names = NameBuilder(self._name_spec, target)

        @functools.wraps(target)
        async def locked_call(*args: Any, **kwargs: Any) -> Any:
            async with self._derive(names(args, kwargs)) as held:
                if not held:
                    return None
                return await target(*args, **kwargs)

        return locked_call  # type: ignore[return-value]


__all__ = ["AsyncLock"]
