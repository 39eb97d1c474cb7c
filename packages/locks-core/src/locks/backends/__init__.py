"""Backends: the server work behind every lock. See :class:`BaseLockBackend`."""

from locks.backends import capabilities, holds
from locks.backends.base import DEFAULT_LEASE, BaseLockBackend
from locks.backends.capabilities import *  # noqa: F403 - the capability names
from locks.backends.holds import *  # noqa: F403 - LockRequest, Hold, HolderInfo, Owner
from locks.backends.options import Option, Seconds
from locks.backends.spec import BackendSpec, BenchSubject

__all__ = ["DEFAULT_LEASE", "BackendSpec", "BaseLockBackend", "BenchSubject", "Option", "Seconds"]
__all__ += capabilities.__all__
__all__ += holds.__all__
