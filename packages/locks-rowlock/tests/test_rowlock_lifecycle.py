"""The release-notification listener (PostgreSQL) is a thread of the backend's own: it must not
keep a dropped backend alive, and it stops, closing its LISTEN connection, when the backend goes."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator

import pytest
from conftest import migrate, sessions_of_this_process

from locks_contract.connections import cyclic_gc_off
from locks_rowlock import RowLockBackend


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    with cyclic_gc_off():
        yield


def _listeners() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "locks-rowlock-listen")


def _eventually(check: Callable[[], bool], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)
    return check()


def _wait_sync(backend: RowLockBackend, name: str) -> None:
    assert not backend.lock(name).acquire(timeout=0.3)


def _wait_async(backend: RowLockBackend, name: str) -> None:
    async def main() -> bool:
        return await backend.alock(name).acquire(timeout=0.3)

    assert not asyncio.run(main())


@pytest.mark.parametrize("wait", [_wait_sync, _wait_async], ids=["sync", "asyncio"])
def test_a_dropped_backend_stops_its_listener_and_closes_its_connections(
    wait: Callable[[RowLockBackend, str], None], no_cyclic_gc: None
) -> None:
    migrate("pg")
    name = f"rowlock-{uuid.uuid4().hex[:12]}"
    holder = RowLockBackend("holder", options={"DATABASE": "pg"})
    try:
        with holder.lock(name, timeout=0):
            listeners = _listeners()
            before = sessions_of_this_process("pg")
            backend = RowLockBackend("dropped", options={"DATABASE": "pg"})
            wait(backend, name)  # a waiter subscribes: the listener thread starts and LISTENs
            assert backend._listener is not None and backend._listener.ready.is_set()
            assert _listeners() == listeners + 1
            ref = weakref.ref(backend)
            del backend
            assert _eventually(lambda: ref() is None), "the listener (or a worker thread) kept the backend alive"
            assert _eventually(lambda: _listeners() == listeners), "the listener thread outlived its backend"
            assert _eventually(lambda: sessions_of_this_process("pg") == before), "connections left open"
    finally:
        holder.close()
