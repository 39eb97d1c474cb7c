"""The Redis backend's asyncio connections belong to one event loop each: closing the backend, or
the loop ending, must not leave them open until the cyclic garbage collector runs."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from conftest import NAMESPACE, REDIS_URL, redis_clients_of_this_process

from locks_cache import RedisLockBackend
from locks_contract import alock_once


@pytest.fixture
def backend() -> Iterator[RedisLockBackend]:
    backend = RedisLockBackend(location=REDIS_URL, options={"NAMESPACE": NAMESPACE})
    yield backend
    backend.close()


def _settled(expected: int, within: float = 3.0) -> int:
    deadline = time.monotonic() + within
    while (now := redis_clients_of_this_process(REDIS_URL)) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return now


def test_a_backend_living_across_many_event_loops_keeps_one_loops_connections(backend: RedisLockBackend) -> None:
    name = f"loops-{uuid.uuid4().hex[:8]}"
    alock_once(backend, name)
    one_loop = redis_clients_of_this_process(REDIS_URL)
    for _ in range(20):
        alock_once(backend, name)
    # Each new loop closes the connections of the loops that have ended.
    assert redis_clients_of_this_process(REDIS_URL) == one_loop


def test_close_closes_the_connections_of_an_ended_event_loop(backend: RedisLockBackend) -> None:
    before = redis_clients_of_this_process(REDIS_URL)
    alock_once(backend, f"ended-{uuid.uuid4().hex[:8]}")
    assert redis_clients_of_this_process(REDIS_URL) > before
    backend.close()
    assert _settled(before) == before


def test_close_inside_the_event_loop_closes_its_connections_and_they_reconnect(backend: RedisLockBackend) -> None:
    name = f"inside-{uuid.uuid4().hex[:8]}"
    before = redis_clients_of_this_process(REDIS_URL)

    async def main() -> tuple[int, int]:
        async with backend.alock(name, timeout=5):
            pass
        backend.close()
        await asyncio.sleep(0.05)  # the loop closes the transports at its next steps
        closed = await asyncio.to_thread(redis_clients_of_this_process, REDIS_URL)
        async with backend.alock(name, timeout=5) as held:  # connects again
            assert held
        return closed, await asyncio.to_thread(redis_clients_of_this_process, REDIS_URL)

    closed, again = asyncio.run(main())
    assert closed == before
    assert again > before


def test_close_from_another_thread_leaves_a_running_loop_to_close_its_connections(backend: RedisLockBackend) -> None:
    name = f"thread-{uuid.uuid4().hex[:8]}"
    before = redis_clients_of_this_process(REDIS_URL)
    used, closed = threading.Event(), threading.Event()

    async def main() -> None:
        async with backend.alock(name, timeout=5):
            pass
        used.set()
        while not closed.is_set():
            await asyncio.sleep(0.01)  # the loop runs while another thread closes the backend
        await asyncio.sleep(0.05)

    thread = threading.Thread(target=asyncio.run, args=(main(),))
    thread.start()
    assert used.wait(10)
    backend.close()
    closed.set()
    thread.join(10)
    assert _settled(before) == before
