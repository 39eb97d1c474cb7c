"""Bounded waits end on time: the Deadline class, the default polling loop and the thread-backed
async wait (on the in-memory backend; server backends run the same contract case)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import pytest

from locks.backends.memory import MemoryLockBackend
from locks.deadline import MARGIN, Deadline
from locks_contract import AbstractDeadlineTests, BackendSpec


def test_a_deadline_counts_down_and_caps_pauses() -> None:
    deadline = Deadline(0.05)
    assert deadline.bounded and not deadline.expired()
    left = deadline.remaining()
    assert left is not None and 0.04 < left <= 0.05
    assert deadline.cap(10.0) <= 0.05
    assert deadline.cap(0.001) == 0.001
    deadline.sleep(10.0)
    assert deadline.expired()
    assert deadline.remaining() == 0.0
    assert deadline.cap(1.0) == 0.0


def test_a_wait_without_timeout_has_no_deadline() -> None:
    deadline = Deadline(None)
    assert not deadline.bounded and not deadline.expired()
    assert deadline.remaining() is None
    assert deadline.cap(3.0) == 3.0
    assert Deadline.at_time(time.monotonic() - 1).expired()


def test_the_contract_margin_is_the_documented_one() -> None:
    assert AbstractDeadlineTests.deadline_margin == MARGIN == 0.010


class TestMemoryBackendDeadlines(AbstractDeadlineTests):
    @pytest.fixture
    def backend_spec(self) -> BackendSpec:
        return BackendSpec("locks.backends.memory.MemoryLockBackend", location="memory://deadline-contract")


class _BusyWorkers(MemoryLockBackend):
    """Async waits run on one worker thread that the test keeps busy for a while."""

    pool: ClassVar[ThreadPoolExecutor | None] = None

    @classmethod
    def executor(cls) -> ThreadPoolExecutor:
        if cls.pool is None:
            cls.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="busy")
        return cls.pool


def test_a_thread_backed_async_wait_ends_at_its_deadline_when_the_worker_starts_late() -> None:
    holder, waiter = _BusyWorkers(location="memory://busy"), _BusyWorkers(location="memory://busy")
    name = f"late-worker-{time.monotonic_ns()}"
    with holder.lock(name, timeout=0):

        async def main() -> float:
            waiter.executor().submit(time.sleep, 0.06)  # the worker is busy when the wait starts
            started = time.monotonic()
            assert await waiter.alock(name).acquire(timeout=0.1) is False
            return time.monotonic() - started

        elapsed = asyncio.run(main())
    # One wait, so a loose bound (the worker started 60 ms late: that much late before)
    assert 0.1 <= elapsed < 0.1 + 3 * MARGIN, f"a 0.1 s wait took {elapsed:.3f} s"


def test_a_thread_backed_async_wait_longer_than_a_slice_ends_on_time() -> None:
    holder, waiter = MemoryLockBackend(location="memory://sliced"), MemoryLockBackend(location="memory://sliced")
    waiter.async_wait_slice = 0.03  # type: ignore[misc]
    name = f"sliced-{time.monotonic_ns()}"
    with holder.lock(name, timeout=0):

        async def main() -> float:
            started = time.monotonic()
            assert await waiter.alock(name).acquire(timeout=0.1) is False
            return time.monotonic() - started

        elapsed = asyncio.run(main())
    assert 0.1 <= elapsed < 0.1 + 3 * MARGIN, f"a 0.1 s wait took {elapsed:.3f} s"
