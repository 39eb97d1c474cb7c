"""The errors every backend raises. All subclass :class:`LockError` and carry the lock name.

They are small and picklable, so they cross process boundaries (multiprocessing, Celery) intact.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendUnavailable",
    "LockError",
    "LockLost",
    "LockNotHeld",
    "LockTimeout",
    "NotSupported",
]


class LockError(Exception):
    """Base class of every error raised by ``locks``.

    Attributes:
        name: the lock name the error is about, or ``None`` when it concerns no single lock.
    """

    def __init__(self, message: str = "", name: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.name = name

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.name))

    def __str__(self) -> str:
        return self.message


class LockTimeout(LockError, TimeoutError):
    """The lock could not be acquired within the timeout (or at once, with ``timeout=0``)."""


class LockNotHeld(LockError):
    """``release()`` or ``extend()`` of a lock this handle does not hold in this thread or task."""


class LockLost(LockError):
    """The lock was held but is no longer: the lease expired, the connection holding it dropped,
    or an administrator forced it. Work done under it may have overlapped with another holder."""


class BackendUnavailable(LockError):
    """The lock server could not be reached within the connect timeout."""


class NotSupported(LockError):
    """An option or operation the backend cannot honour (a capability it does not declare)."""
