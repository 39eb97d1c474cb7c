"""The in-process backend with knobs that core's own tests turn (reentrancy, the keeper,
signals), and a stand-in for a server that does not answer. Every server backend is tested
against its real server."""

from __future__ import annotations

import uuid
from typing import Any

from locks.backends import Hold, LockRequest
from locks.backends.memory import MemoryLockBackend
from locks.exceptions import BackendUnavailable, LockLost
from locks.keys import Key, LockName


class CountingMemoryBackend(MemoryLockBackend):
    """Counts ``extend`` calls and fails them on demand (``fail_extend``). Each instance has a
    table of its own unless given a ``location``."""

    def __init__(self, alias: str = "default", location: str | None = None, **kwargs: Any) -> None:
        super().__init__(alias, location or f"memory://core-tests-{uuid.uuid4().hex}", **kwargs)
        self.extend_calls = 0
        self.fail_extend = False

    def extend(self, hold: Hold, ttl: float) -> None:
        self.extend_calls += 1
        if self.fail_extend:
            raise LockLost("the lease could not be renewed (fail_extend)", hold.name)
        super().extend(hold, ttl)


class UnreachableMemoryBackend(MemoryLockBackend):
    """The memory backend as if its server had gone: every primitive raises
    :class:`BackendUnavailable` at once. The contract's argument cases use it to prove that bad
    arguments are refused before any server work."""

    def _down(self) -> BackendUnavailable:
        return BackendUnavailable(f"memory table {self.table_name!r} is unreachable (a stand-in)")

    def try_acquire(self, request: LockRequest) -> Hold | None:
        raise self._down()

    def acquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        raise self._down()

    def release(self, hold: Hold) -> None:
        raise self._down()

    def is_locked(self, key: Key) -> bool:
        raise self._down()

    def force_release(self, name: LockName) -> int:
        raise self._down()
