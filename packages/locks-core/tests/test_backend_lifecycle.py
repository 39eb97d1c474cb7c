"""A backend is a context manager, and one dropped without close() is closed at once: CPython
frees it by reference counting, so nothing of core's may keep it in a reference cycle."""

from __future__ import annotations

import asyncio
import sys
import time
import weakref
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from locks.backends.memory import MemoryLockBackend
from locks_contract.connections import cyclic_gc_off


class ClosingBackend(MemoryLockBackend):
    """Counts its close() calls; ``fail_close`` makes close() raise. Every instance shares one
    table (``memory://lifecycle``)."""

    def __init__(self, alias: str = "default", location: str | None = None, **kwargs: Any) -> None:
        super().__init__(alias, location or "memory://lifecycle", **kwargs)

    closes: ClassVar[int] = 0
    fail_close: ClassVar[bool] = False

    def close(self) -> None:
        type(self).closes += 1
        if self.fail_close:
            raise RuntimeError("close failed")


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    ClosingBackend.closes = 0
    ClosingBackend.fail_close = False
    yield
    ClosingBackend.fail_close = False


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """Only reference counting frees objects meanwhile, as in a process whose collector has not
    run yet."""
    with cyclic_gc_off():
        yield


def freed(ref: weakref.ref[Any], within: float = 2.0) -> bool:
    """Whether the object is gone, allowing a worker thread a moment to drop its reference."""
    deadline = time.monotonic() + within
    while ref() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    return ref() is None


def test_with_returns_the_backend_and_closes_it_on_exit() -> None:
    backend = ClosingBackend()
    with backend as entered:
        assert entered is backend
        with backend.lock("inside", timeout=0):
            pass
        assert ClosingBackend.closes == 0
    assert ClosingBackend.closes == 1


def test_with_closes_when_the_body_raises() -> None:
    backend = ClosingBackend()
    with pytest.raises(KeyError), backend:
        raise KeyError("body")
    assert ClosingBackend.closes == 1


def test_a_dropped_backend_is_closed_at_once(no_cyclic_gc: None) -> None:
    backend = ClosingBackend()
    with backend.lock("used", timeout=0):
        pass
    ref = weakref.ref(backend)
    del backend
    assert ref() is None
    assert ClosingBackend.closes == 1


def test_a_backend_closed_by_with_is_closed_again_harmlessly_when_dropped(no_cyclic_gc: None) -> None:
    with ClosingBackend() as backend:
        pass
    del backend
    assert ClosingBackend.closes == 2  # close() is idempotent: the second call finds nothing to do


def test_a_failing_close_does_not_escape_the_finalizer(no_cyclic_gc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    ClosingBackend.fail_close = True
    backend = ClosingBackend()
    del backend
    assert ClosingBackend.closes == 1
    assert unraisable == []


def test_a_held_lock_keeps_its_backend_alive(no_cyclic_gc: None) -> None:
    backend = ClosingBackend()
    ref = weakref.ref(backend)
    handle = backend.lock("kept", timeout=0)
    assert handle.acquire()
    del backend
    assert ref() is not None and ClosingBackend.closes == 0
    handle.release()
    assert ref() is not None  # the handle still names its backend
    del handle
    assert ref() is None and ClosingBackend.closes == 1


def test_a_dropped_backend_used_through_asyncio_is_freed(no_cyclic_gc: None) -> None:
    backend = ClosingBackend()

    async def main(backend: ClosingBackend) -> None:
        async with backend.alock("async-used", timeout=1):
            pass

    asyncio.run(main(backend))
    ref = weakref.ref(backend)
    del backend
    assert freed(ref)
    assert ClosingBackend.closes == 1


def test_a_cancelled_async_wait_does_not_keep_a_dropped_backend_alive(no_cyclic_gc: None) -> None:
    # The cancelled wait's executor future keeps its done-callback (it releases a hold that the
    # worker thread still obtains) in a reference cycle with the asyncio future that wrapped it.
    holder = MemoryLockBackend(location="memory://lifecycle")
    backend = ClosingBackend()
    backend.async_wait_slice = 0.05  # type: ignore[misc]

    async def main(backend: ClosingBackend) -> None:
        with holder.lock("contended", timeout=0):
            waiter = asyncio.create_task(backend.alock("contended").acquire(timeout=5))
            await asyncio.sleep(0.1)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter

    asyncio.run(main(backend))
    time.sleep(0.2)  # the worker thread finishes its slice
    ref = weakref.ref(backend)
    del backend
    assert freed(ref), "a cancelled wait kept the dropped backend alive"
    assert ClosingBackend.closes == 1
    assert not holder.is_locked(holder.make_key("contended"))


def test_a_dropped_backend_whose_lock_was_auto_renewed_is_freed(no_cyclic_gc: None) -> None:
    backend = ClosingBackend()
    with backend.lock("renewed", ttl=0.3, auto_renew=True):
        time.sleep(0.5)
    ref = weakref.ref(backend)
    del backend
    assert freed(ref, within=1.0)
