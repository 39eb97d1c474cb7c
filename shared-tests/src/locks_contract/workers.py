"""Code run in spawned worker processes (importable, so the ``spawn`` start method finds it)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from locks.backends.base import FENCING
from locks.backends.spec import BackendSpec


def exclusion_worker(
    spec: BackendSpec, name: str, counter_path: str, iterations: int, who: str, start_at: float
) -> list[tuple[float, float, int | None]]:
    """Take the lock ``iterations`` times; under it, read-modify-write a counter file slowly
    enough that overlapping holders would lose updates. Returns (start, end, token) intervals."""
    spec.run_setup()
    backend = spec.build(alias=f"worker-{who}")
    fencing = FENCING in backend.capabilities
    handle = backend.lock(name, timeout=60)
    while time.time() < start_at:  # start together: maximum contention
        time.sleep(0.001)
    intervals = []
    try:
        for _ in range(iterations):
            with handle:
                start = time.monotonic()
                with open(counter_path, "r+") as counter:
                    value = int(counter.read() or 0)
                    time.sleep(0.0005)
                    counter.seek(0)
                    counter.write(str(value + 1))
                    counter.truncate()
                token = handle.token if fencing else None
                end = time.monotonic()
            intervals.append((start, end, token))
    finally:
        backend.close()
    return intervals


def hold_until_killed(spec: BackendSpec, name: str, ttl: float | None, ready: Any) -> None:
    """Take the lock, say so, and hold it until the parent kills this process."""
    spec.run_setup()
    backend = spec.build(alias="doomed")
    handle = backend.lock(name, ttl=ttl, timeout=30)
    handle.acquire()
    ready.set()
    while True:
        time.sleep(60)


def hold_until_killed_async(spec: BackendSpec, name: str, ready: Any) -> None:
    """:func:`hold_until_killed` through the asyncio API (``alock``)."""
    import asyncio

    async def main() -> None:
        backend = spec.build(alias="doomed-async")
        assert await backend.alock(name, timeout=30).acquire()
        ready.set()
        while True:
            await asyncio.sleep(60)

    spec.run_setup()
    asyncio.run(main())


def pid() -> int:
    return os.getpid()


def hold_until_told(spec: BackendSpec, name: str, timeout: float, got: Any, done: Any) -> None:
    """Wait up to ``timeout`` for the lock; once held, set ``got`` and hold it until ``done``."""
    spec.run_setup()
    backend = spec.build(alias="other-process")
    try:
        handle = backend.lock(name, timeout=timeout)
        if handle.acquire():
            got.set()
            done.wait(120)
            handle.release()
    finally:
        backend.close()


@contextmanager
def killed_at_exit(target: Callable[..., None], *args: Any) -> Iterator[None]:
    """Runs ``target(*args, ready)`` in a spawned process and, once it has set ``ready`` (within a
    minute: it holds its lock), the block; then kills the process with SIGKILL, whatever the
    block did."""
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Event()
    process = spawn.Process(target=target, args=(*args, ready), daemon=True)
    process.start()
    try:
        assert ready.wait(60), "the holder process never took the lock"
        yield
    finally:
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        process.join(10)
