"""locks: named locks for Django, one API over PostgreSQL, MySQL/MariaDB, database rows,
Redis, Memcached, Django caches and OS files.

```python
import locks

with locks.lock("invoices:close-month", timeout=30):
    ...
```
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from locks.aio import AsyncLock
from locks.backends.base import BaseLockBackend
from locks.config import DEFAULT_ALIAS, connect, get_backend, lock_backends
from locks.exceptions import BackendUnavailable, LockError, LockLost, LockNotHeld, LockTimeout, NotSupported
from locks.handle import Lock, LockOptions
from locks.model_locks import lock_model

if TYPE_CHECKING:
    from typing_extensions import Unpack

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ALIAS",
    "AsyncLock",
    "BackendUnavailable",
    "BaseLockBackend",
    "Lock",
    "LockError",
    "LockLost",
    "LockNotHeld",
    "LockTimeout",
    "NotSupported",
    "alock",
    "connect",
    "get_backend",
    "lock",
    "lock_backends",
    "lock_model",
]


def lock(name: str | int | Callable[..., Any] | None = None, **options: Unpack[LockOptions]) -> Lock:
    """A named lock: a context manager, a decorator, or a ``threading.Lock``-style object.

    Args:
        name: the lock's name. As a decorator it may be a format template over the decorated
            function's arguments (``"sync-user-{user_id}"``) or a callable of them; omitted, it is
            the function's ``module.qualname``.
        **options: keyword arguments, all optional (:class:`~locks.handle.LockOptions`).

    Keyword Args:
        using (str | None): the ``LOCKS`` alias (default ``"default"``).
        backend (BaseLockBackend | None): a backend object instead of an alias (from :func:`locks.connect`).
        timeout (float | timedelta | None): ``None`` waits forever, ``0`` tries once, otherwise
            seconds (float or timedelta).
        on_busy (str): what ``with`` and a decorated call do when the timeout runs out: ``"raise"``
            :class:`LockTimeout`, or ``"skip"`` (the handle is falsy; the function returns None).
        ttl (float | timedelta | None): lease length in seconds, for backends whose locks expire
            (``ttl`` capability). Without it such a lock gets the backend's default lease (10 s),
            renewed in the background while held: a live holder keeps it, a crashed one frees it
            within 10 s.
        auto_renew (bool | None): renew the lease in the background until released. Default:
            ``True`` for the default lease, ``False`` for an explicit ``ttl`` (which then bounds
            the hold).
        on_lost (Callable[[Lock], Any] | None): called with the handle, from the keeper
            thread, if the lock is lost while held. It turns the watchdog on for this lock's
            holds (``watchdog`` capability); a backend that can never tell raises
            :class:`NotSupported`.
        shared (bool): a shared (read) lock (``shared`` capability).

    Raises:
        TypeError, ValueError: bad arguments, before any server is touched.
    """
    return Lock(name, **options)


def alock(name: str | int | Callable[..., Any] | None = None, **options: Unpack[LockOptions]) -> AsyncLock:
    """The asyncio twin of :func:`lock`: ``async with locks.alock("x"):`` never blocks the loop."""
    return AsyncLock(name, **options)
