"""The worker processes of ``locks bench`` (module level: the spawn start method imports them)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from locks.backends.spec import BenchSubject


def uncontended_worker(subject: BenchSubject, name: str, conn: Any) -> None:
    """Takes and releases ``name`` in rounds the parent asks for (at least ``count`` times and for
    at least ``seconds``; a count of 0 stops), answering each with its samples in nanoseconds."""
    try:
        impl = subject.open()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    try:
        clock = time.perf_counter_ns
        conn.send(("ok", []))
        while True:
            count, seconds = conn.recv()
            if not count:
                break
            samples: list[int] = []
            until = clock() + int(seconds * 1e9)
            while len(samples) < count or (samples and clock() < until):
                start = clock()
                impl.acquire(name)
                impl.release(name)
                samples.append(clock() - start)
            conn.send(("ok", samples))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        close(impl)


def contended_worker(subject: BenchSubject, name: str, conn: Any) -> None:
    """One of the processes contending for ``name``: in each round the parent asks for, loops on
    acquire+release from ``start_at`` (wall clock, the same for every process) for ``seconds``, and
    answers with its count. ``seconds`` 0 stops."""
    try:
        impl = subject.open()
        impl.acquire(name)  # connect and warm up before any clock starts
        impl.release(name)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    try:
        conn.send(("ok", 0))
        while True:
            start_at, seconds = conn.recv()
            if not seconds:
                break
            while time.time() < start_at:
                time.sleep(0.0005)
            count = 0
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                impl.acquire(name)
                impl.release(name)
                count += 1
            conn.send(("ok", count))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        close(impl)


def handoff_holder(
    subject: BenchSubject, name: str, rounds: int, settle: float, barrier: Any, held: Any, out: Any
) -> None:
    def run(impl: Any) -> list[float]:
        released_at = []
        for _ in range(rounds):
            barrier.wait(timeout=120)
            impl.acquire(name)
            held.set()
            time.sleep(settle)  # the waiter is now blocked in acquire()
            stamp = time.monotonic()
            impl.release(name)
            released_at.append(stamp)
        return released_at

    _handoff_side(subject, run, barrier, out)


def handoff_waiter(subject: BenchSubject, name: str, rounds: int, barrier: Any, held: Any, out: Any) -> None:
    def run(impl: Any) -> list[float]:
        acquired_at = []
        for _ in range(rounds):
            barrier.wait(timeout=120)
            if not held.wait(timeout=120):
                raise TimeoutError("the holder never took the lock")
            held.clear()
            impl.acquire(name)
            acquired_at.append(time.monotonic())
            impl.release(name)
        return acquired_at

    _handoff_side(subject, run, barrier, out)


def _handoff_side(subject: BenchSubject, run: Callable[[Any], list[float]], barrier: Any, out: Any) -> None:
    """Runs ``run`` on the opened subject and puts ``("ok", its stamps)`` on ``out``, or on any
    error aborts the barrier (so the other side stops waiting) and puts ``("error", what)``."""
    try:
        impl = subject.open()
        try:
            stamps = run(impl)
        finally:
            close(impl)
        out.put(("ok", stamps))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        barrier.abort()
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def close(impl: Any) -> None:
    close = getattr(impl, "close", None)
    if close is not None:
        close()
