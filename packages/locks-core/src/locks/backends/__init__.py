"""Backends: the server work behind every lock. See :class:`BaseLockBackend`."""

from locks.backends.base import (
    ASYNC_NATIVE,
    CAPABILITIES,
    DEFAULT_LEASE,
    FENCING,
    FORCE_RELEASE,
    LISTING,
    NOTIFY,
    SESSION_BOUND,
    SHARED,
    TTL,
    WATCHDOG,
    BaseLockBackend,
    Hold,
    HolderInfo,
    LockRequest,
    Owner,
)
from locks.backends.options import Option, Seconds
from locks.backends.spec import (
    BackendSpec,
    BenchSubject,
)

__all__ = [
    "ASYNC_NATIVE",
    "CAPABILITIES",
    "DEFAULT_LEASE",
    "FENCING",
    "FORCE_RELEASE",
    "LISTING",
    "NOTIFY",
    "SESSION_BOUND",
    "SHARED",
    "TTL",
    "WATCHDOG",
    "BackendSpec",
    "BaseLockBackend",
    "BenchSubject",
    "Hold",
    "HolderInfo",
    "LockRequest",
    "Option",
    "Owner",
    "Seconds",
]
