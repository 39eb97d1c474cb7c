"""Backends that break the contract on purpose: the suite must catch each of them.

They are the in-process reference backend (``memory://``) with one thing broken, so the
contract's own tests need no server and no backend package besides locks-core."""

from __future__ import annotations

import os
import time
from typing import ClassVar

from locks.backends import ASYNC_NATIVE, BaseLockBackend, Hold, LockRequest
from locks.backends.memory import MemoryLockBackend
from locks.keys import Key


class NoExclusionBackend(MemoryLockBackend):
    """Says yes to everyone: no mutual exclusion at all."""

    #: It excludes nobody, in this process or any other, so the cross-process cases apply to it
    #: as well (and must fail it).
    cross_process = True

    def try_acquire(self, request: LockRequest) -> Hold | None:
        return Hold(request, data=None, token=1)

    def acquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        return self.try_acquire(request)

    def release(self, hold: Hold) -> None:
        pass

    def is_locked(self, key: Key) -> bool:
        return False


class CollidingNamesBackend(MemoryLockBackend):
    """Maps names with a 16-bit hash, as some libraries do: unrelated names block each other."""

    def make_key(self, name: object) -> Key:
        import zlib

        return f"k{zlib.crc32(str(name).encode('utf-8', 'surrogatepass')) & 0xF}"


class LateWaitsBackend(MemoryLockBackend):
    """Gives up on time only to a server's coarse clock: every bounded wait ends 30 ms late."""

    def acquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        hold = super().acquire(request, timeout)
        if hold is None:
            time.sleep(0.03)
        return hold


class EarlyWaitsBackend(MemoryLockBackend):
    """Gives up 5 ms before the deadline."""

    def acquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        return super().acquire(request, None if timeout is None else max(0.0, timeout - 0.005))


class CyclicBackend(MemoryLockBackend):
    """Keeps a bound method of itself, as a thread target or a pool's callback would: dropped, it
    waits for the cyclic garbage collector, its connections open meanwhile."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.on_fork = self.close


class NeverClosingBackend(MemoryLockBackend):
    """Opens a descriptor (its "connection") on first use; close() forgets it instead of closing it."""

    def _connect(self) -> None:
        if getattr(self, "_connection", None) is None:
            self._connection = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def try_acquire(self, request: LockRequest) -> Hold | None:
        self._connect()
        return super().try_acquire(request)

    def acquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        self._connect()
        return super().acquire(request, timeout)

    def close(self) -> None:
        self._connection = None


class PollingNotifyBackend(MemoryLockBackend):
    """Declares ``notify`` but drops the wake-up: its waiters poll (the base class's loop)."""

    acquire = BaseLockBackend.acquire


class BlindWatchdogBackend(MemoryLockBackend):
    """Declares ``watchdog`` but ``check()`` never sees a loss."""

    def check(self, hold: Hold) -> bool:
        return True


class ThreadedAsyncBackend(MemoryLockBackend):
    """Declares ``async_native`` but keeps the base class's asyncio API, run in worker threads."""

    capabilities: ClassVar[frozenset[str]] = MemoryLockBackend.capabilities | {ASYNC_NATIVE}
