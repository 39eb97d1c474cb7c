"""Backends that break the contract on purpose: the suite must catch each of them."""

from __future__ import annotations

from locks.backends import Hold, LockRequest
from locks.keys import Key
from locks_file import FileLockBackend


class NoExclusionBackend(FileLockBackend):
    """Says yes to everyone: no mutual exclusion at all."""

    def try_acquire(self, request: LockRequest) -> Hold | None:
        return Hold(request, data=None, token=1)

    def acquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        return self.try_acquire(request)

    def release(self, hold: Hold) -> None:
        pass

    def is_locked(self, key: Key) -> bool:
        return False


class CollidingNamesBackend(FileLockBackend):
    """Maps names with a 16-bit hash, as some libraries do: unrelated names block each other."""

    def make_key(self, name: object) -> Key:
        import zlib

        return f"k{zlib.crc32(str(name).encode('utf-8', 'surrogatepass')) & 0xF}"


class CyclicBackend(FileLockBackend):
    """Keeps a bound method of itself, as a thread target or a pool's callback would: dropped, it
    waits for the cyclic garbage collector, its descriptors open meanwhile."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.on_fork = self.close


class NeverClosingBackend(FileLockBackend):
    """close() forgets the idle descriptors instead of closing them."""

    def close(self) -> None:
        self._idle = {}
