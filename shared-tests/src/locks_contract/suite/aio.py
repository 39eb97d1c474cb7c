"""The asyncio API: never blocks the loop, per-task ownership, cancellation leaks nothing, and
with ``async_native`` no worker thread at all."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from locks.backends.base import ASYNC_NATIVE, BaseLockBackend
from locks_contract.base import ContractBase, requires
from locks_contract.suite.basic import _held_elsewhere


class _CountingExecutor(ThreadPoolExecutor):
    """A pool that records what is submitted to it (it runs it all the same)."""

    def __init__(self, calls: list[str]) -> None:
        super().__init__(max_workers=2, thread_name_prefix="contract-counted")
        self.calls = calls

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.calls.append(getattr(fn, "__qualname__", repr(fn)))
        return super().submit(fn, *args, **kwargs)


async def _busy_then_free(backend: BaseLockBackend, other: BaseLockBackend, name: str) -> None:
    """What the asyncio API does: try once and wait on a busy lock, get it when the holder's task
    releases it, ask whether it is locked, release."""
    held, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:  # a task of its own: a hold belongs to the task that took it
        async with other.alock(name, timeout=5):
            held.set()
            await release.wait()
            await asyncio.sleep(0.05)

    holder = asyncio.create_task(hold())
    await held.wait()
    waiter = backend.alock(name)
    assert await waiter.acquire(timeout=0) is False
    assert await waiter.acquire(timeout=0.05) is False
    release.set()
    assert await waiter.acquire(timeout=5)
    await holder
    assert await waiter.locked()
    await waiter.release()
    async with backend.alock(name, timeout=5):
        pass


class AbstractAsyncTests(ContractBase):
    def test_async_with_holds_and_releases(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        async def main() -> bool:
            async with backend.alock(lock_name, timeout=5) as held:
                return bool(held) and _held_elsewhere(other_backend, lock_name)

        assert asyncio.run(main())
        assert not _held_elsewhere(other_backend, lock_name)

    def test_waiting_does_not_block_the_event_loop(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        async def main() -> tuple[bool, int]:
            ticks = 0
            stop = asyncio.Event()

            async def ticker() -> None:
                nonlocal ticks
                while not stop.is_set():
                    ticks += 1
                    await asyncio.sleep(0.01)

            task = asyncio.create_task(ticker())
            got = await backend.alock(lock_name).acquire(timeout=0.6)
            stop.set()
            await task
            return got, ticks

        with other_backend.lock(lock_name, timeout=5):
            got, ticks = asyncio.run(main())
        assert got is False
        assert ticks >= 20, f"the loop ticked only {ticks} times in 0.6s: something blocked it"

    def test_tasks_exclude_each_other(self, backend: BaseLockBackend, lock_name: str) -> None:
        async def main() -> int:
            inside = 0
            overlaps = 0

            async def worker() -> None:
                nonlocal inside, overlaps
                for _ in range(5):
                    async with backend.alock(lock_name, timeout=30):
                        inside += 1
                        overlaps += inside > 1
                        await asyncio.sleep(0.002)
                        inside -= 1

            await asyncio.gather(*(worker() for _ in range(4)))
            return overlaps

        assert asyncio.run(main()) == 0

    def test_cancelled_waiter_leaves_no_lock_behind(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        holder = other_backend.lock(lock_name)
        holder.acquire(timeout=5)

        async def main() -> None:
            waiter = asyncio.create_task(backend.alock(lock_name).acquire(timeout=30))
            await asyncio.sleep(0.2)
            waiter.cancel()
            try:
                await waiter
            except asyncio.CancelledError:
                pass

        asyncio.run(main())
        holder.release()
        # A worker thread still waiting for the cancelled task may get the lock now: give it
        # the rest of its wait slice, then the lock must be free for anyone else.
        time.sleep(getattr(backend, "async_wait_slice", 0.5) + 0.5)
        assert not _held_elsewhere(other_backend, lock_name), "a cancelled waiter kept the lock"
        again = other_backend.lock(lock_name)
        assert again.acquire(timeout=0), "a cancelled waiter kept the lock"
        again.release()

    def test_async_decorator_and_skip(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        @backend.alock(lock_name, timeout=0, on_busy="skip")
        async def job() -> str:
            return "ran"

        with other_backend.lock(lock_name, timeout=5):
            assert asyncio.run(job()) is None
        assert asyncio.run(job()) == "ran"

    @requires(ASYNC_NATIVE)
    def test_the_asyncio_api_uses_no_worker_thread(
        self,
        backend: BaseLockBackend,
        other_backend: BaseLockBackend,
        lock_name: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        submitted: list[str] = []
        started: list[str] = []
        executor = _CountingExecutor(submitted)
        start = threading.Thread.start

        def counted_start(thread: threading.Thread) -> None:
            started.append(thread.name)
            start(thread)

        async def main() -> None:
            # A first round opens connections and starts what runs once per process (the keeper
            # thread renewing leases); the second must run on the loop alone.
            await _busy_then_free(backend, other_backend, f"{lock_name}-warm")
            asyncio.get_running_loop().set_default_executor(executor)
            for client in (backend, other_backend):
                monkeypatch.setattr(client, "executor", lambda: executor)
            monkeypatch.setattr(threading.Thread, "start", counted_start)
            try:
                await _busy_then_free(backend, other_backend, lock_name)
            finally:
                monkeypatch.undo()

        try:
            asyncio.run(main())
        finally:
            executor.shutdown(wait=True)
        assert submitted == [], f"the asyncio API ran {submitted} in worker threads"
        assert started == [], f"the asyncio API started threads {started}"
