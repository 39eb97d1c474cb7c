"""A lease backend kept in this process's memory, to test core's own machinery (reentrancy,
the keeper, signals) in isolation. Every server backend is tested against its real server."""

from __future__ import annotations

import threading
import time
from typing import ClassVar

from locks.backends import FENCING, FORCE_RELEASE, TTL, BaseLockBackend, Hold, LockRequest
from locks.exceptions import LockLost
from locks.keys import Key, LockName


class MemoryLeaseBackend(BaseLockBackend):
    capabilities = frozenset({TTL, FENCING, FORCE_RELEASE})
    default_ttl = 30.0
    _table: ClassVar[dict[Key, tuple[object, float]]] = {}
    _tokens: ClassVar[dict[Key, int]] = {}
    _mutex: ClassVar[threading.Lock] = threading.Lock()
    extend_calls: ClassVar[int] = 0
    fail_extend: ClassVar[bool] = False

    def try_acquire(self, request: LockRequest) -> Hold | None:
        with self._mutex:
            now = time.monotonic()
            current = self._table.get(request.key)
            if current is not None and current[1] > now:
                return None
            marker = object()
            self._table[request.key] = (marker, now + (request.ttl or 30.0))
            token = self._tokens[request.key] = self._tokens.get(request.key, 0) + 1
            return Hold(request, data=marker, token=token)

    def _owned(self, hold: Hold) -> bool:
        current = self._table.get(hold.key)
        return current is not None and current[0] is hold.data and current[1] > time.monotonic()

    def release(self, hold: Hold) -> None:
        with self._mutex:
            if not self._owned(hold):
                raise LockLost("lease expired", hold.name)
            del self._table[hold.key]

    def extend(self, hold: Hold, ttl: float) -> None:
        with self._mutex:
            type(self).extend_calls += 1
            if self.fail_extend or not self._owned(hold):
                raise LockLost("lease expired", hold.name)
            self._table[hold.key] = (hold.data, time.monotonic() + ttl)

    def is_locked(self, key: Key) -> bool:
        current = self._table.get(key)
        return current is not None and current[1] > time.monotonic()

    def force_release(self, name: LockName) -> int:
        with self._mutex:
            return 1 if self._table.pop(self.make_key(name), None) else 0
