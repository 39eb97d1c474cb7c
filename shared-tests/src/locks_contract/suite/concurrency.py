"""Mutual exclusion across threads and processes, timeouts, handoff, reentrancy, crashes."""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from locks import LockError
from locks.backends.base import FENCING, NOTIFY, SESSION_BOUND, SHARED, TTL, BaseLockBackend
from locks.backends.spec import BackendSpec
from locks_contract import workers
from locks_contract.base import ContractBase, across_processes, requires
from locks_contract.history import Interval, assert_exclusive
from locks_contract.suite.basic import _held_elsewhere

_spawn = multiprocessing.get_context("spawn")


class AbstractExclusionTests(ContractBase):
    #: Sized to prove the point on 2 cores in a few seconds.
    processes: int = 4
    iterations_per_process: int = 25
    threads: int = 6
    iterations_per_thread: int = 20

    @across_processes
    def test_processes_exclude_each_other_under_load(
        self, backend_spec: BackendSpec, backend: BaseLockBackend, lock_name: str, tmp_path: Path
    ) -> None:
        counter = tmp_path / "counter"
        counter.write_text("0")
        start_at = time.time() + 3.0  # after every worker has imported and connected
        with _spawn.Pool(self.processes) as pool:
            results = pool.starmap(
                workers.exclusion_worker,
                [
                    (backend_spec, lock_name, str(counter), self.iterations_per_process, f"p{i}", start_at)
                    for i in range(self.processes)
                ],
            )
        intervals = [Interval(start, end, f"p{i}") for i, result in enumerate(results) for start, end, _ in result]
        assert len(intervals) == self.processes * self.iterations_per_process
        assert_exclusive(intervals)
        assert int(counter.read_text()) == self.processes * self.iterations_per_process, (
            "lost updates: exclusion failed"
        )
        if FENCING in backend.capabilities:
            ordered = sorted((start, token) for result in results for start, _, token in result)
            tokens = [token for _, token in ordered if isinstance(token, int)]
            assert len(tokens) == len(ordered), "every holder must see an int fencing token"
            assert all(a < b for a, b in zip(tokens, tokens[1:])), "fencing tokens must grow in acquisition order"

    def test_threads_with_their_own_handles_exclude_each_other(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        counter = {"value": 0}
        intervals: list[Interval] = []
        errors: list[BaseException] = []

        def worker(index: int) -> None:
            client = backend if index % 2 else other_backend
            try:
                for _ in range(self.iterations_per_thread):
                    with client.lock(lock_name, timeout=30):
                        start = time.monotonic()
                        value = counter["value"]
                        time.sleep(0.0002)
                        counter["value"] = value + 1
                        intervals.append(Interval(start, time.monotonic(), f"t{index}"))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(self.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert counter["value"] == self.threads * self.iterations_per_thread
        assert_exclusive(intervals)

    def test_decorated_function_called_from_many_threads_at_once(
        self, backend: BaseLockBackend, lock_name: str
    ) -> None:
        intervals: list[Interval] = []

        @backend.lock(lock_name, timeout=30)
        def critical(index: int) -> int:
            start = time.monotonic()
            time.sleep(0.001)
            intervals.append(Interval(start, time.monotonic(), str(index)))
            return index

        results: list[int] = []
        threads = [threading.Thread(target=lambda i=i: results.append(critical(i))) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == list(range(16))
        assert_exclusive(intervals)


async def _atake_and_give_back(backend: BaseLockBackend, name: str, timeout: float) -> bool:
    handle = backend.alock(name)
    if not await handle.acquire(timeout=timeout):
        return False
    await handle.release()
    return True


def take_and_give_back(backend: BaseLockBackend, name: str, timeout: float) -> bool:
    """Whether ``name`` could be acquired within ``timeout`` (then released at once)."""
    handle = backend.lock(name)
    if not handle.acquire(timeout=timeout):
        return False
    handle.release()
    return True


class AbstractTimeoutTests(ContractBase):
    #: The attributes of a backend that set how often its waiters look again (seconds): the
    #: ``notify`` cases set each one the waiting backend has to :attr:`slow_poll`, so that only a
    #: wake-up by the release can hand the lock over soon. Extend it with your backend's own.
    poll_attributes: tuple[str, ...] = ("poll_min", "poll_max", "notify_poll", "async_wait_slice")
    slow_poll: float = 3.0
    #: How soon after the release a woken waiter must hold the lock (seconds).
    notify_within: float = 0.25

    def test_timeout_is_neither_early_nor_much_late(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        with other_backend.lock(lock_name, timeout=5):
            for wait in (0.3, 1.0):
                started = time.monotonic()
                assert backend.lock(lock_name).acquire(timeout=wait) is False
                elapsed = time.monotonic() - started
                assert elapsed >= wait, f"gave up after {elapsed:.3f}s of a {wait}s timeout"
                assert elapsed < wait + 1.0, f"gave up after {elapsed:.3f}s of a {wait}s timeout"

    def test_blocked_waiter_gets_the_lock_promptly_after_release(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        holder = other_backend.lock(lock_name)
        holder.acquire(timeout=5)
        got: list[float] = []

        def waiter() -> None:
            handle = backend.lock(lock_name)
            if handle.acquire(timeout=15):
                got.append(time.monotonic())
                handle.release()

        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.3)  # the waiter is blocked by now
        released = time.monotonic()
        holder.release()
        thread.join(20)
        assert got, "the waiter never got the lock"
        # Generous: a functional bound. Handoff speed is measured by `locks bench`.
        assert got[0] - released < 1.0

    def _handoff_delay(self, holder: Any, wait: Callable[[], bool]) -> float:
        """Seconds from the start of the holder's release to the waiter (``wait``, in a thread)
        holding the lock."""
        got: list[float] = []
        started = threading.Event()

        def waiter() -> None:
            started.set()
            if wait():
                got.append(time.monotonic())

        thread = threading.Thread(target=waiter)
        thread.start()
        assert started.wait(5)
        time.sleep(0.3)  # the waiter's first attempt failed: it waits now, its next poll seconds away
        released = time.monotonic()
        holder.release()
        thread.join(self.slow_poll * 4 + 10)
        assert got, "the waiter never got the lock"
        return got[0] - released

    def _woken_after(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str, wait: Callable[[str], bool]
    ) -> None:
        # A first handoff, polling as configured, opens whatever the backend listens with (a
        # listening connection may wake every waiter once when it starts); the second one, with
        # every poll of the waiting backend slowed down to slow_poll, is measured.
        for name, measured in ((f"{lock_name}-warm", False), (lock_name, True)):
            if measured:
                for attribute in self.poll_attributes:
                    if hasattr(backend, attribute):
                        setattr(backend, attribute, self.slow_poll)
            holder = other_backend.lock(name)
            assert holder.acquire(timeout=5)
            delay = self._handoff_delay(holder, functools.partial(wait, name))
        assert delay < self.notify_within, (
            f"the waiter held the lock {delay:.3f}s after the release (polling every {self.slow_poll}s): "
            f"the release did not wake it (notify promises under {self.notify_within}s)"
        )

    @requires(NOTIFY)
    def test_a_waiter_is_woken_by_the_release_without_polling(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        self._woken_after(
            backend, other_backend, lock_name, lambda name: take_and_give_back(backend, name, self.slow_poll * 3)
        )

    @requires(NOTIFY)
    def test_async_waiter_is_woken_by_the_release_without_polling(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        self._woken_after(
            backend,
            other_backend,
            lock_name,
            lambda name: asyncio.run(_atake_and_give_back(backend, name, self.slow_poll * 3)),
        )

    def test_waiting_with_no_timeout_gets_the_lock_when_freed(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        holder = other_backend.lock(lock_name)
        holder.acquire(timeout=5)
        done = threading.Event()

        def waiter() -> None:
            with backend.lock(lock_name, timeout=None):
                done.set()

        thread = threading.Thread(target=waiter, daemon=True)
        thread.start()
        assert not done.wait(0.5)
        holder.release()
        assert done.wait(15)
        thread.join(5)


class AbstractReentrancyTests(ContractBase):
    def test_nested_acquisition_in_one_thread_is_counted(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        outer = backend.lock(lock_name, timeout=0)
        with outer:
            with backend.lock(lock_name, timeout=0):
                with outer:
                    assert _held_elsewhere(other_backend, lock_name)
                assert _held_elsewhere(other_backend, lock_name)
            assert outer.owned
            assert _held_elsewhere(other_backend, lock_name)
        assert not _held_elsewhere(other_backend, lock_name)

    def test_locked_function_may_call_another_locked_by_the_same_name(
        self, backend: BaseLockBackend, lock_name: str
    ) -> None:
        @backend.lock(lock_name, timeout=0)
        def inner() -> str:
            return "inner"

        @backend.lock(lock_name, timeout=0)
        def outer() -> str:
            return inner()

        assert outer() == "inner"

    def test_nesting_does_not_cross_threads(self, backend: BaseLockBackend, lock_name: str) -> None:
        with backend.lock(lock_name, timeout=5):
            result: list[bool] = []
            thread = threading.Thread(target=lambda: result.append(backend.lock(lock_name).acquire(timeout=0.2)))
            thread.start()
            thread.join()
            assert result == [False]

    @requires(SHARED)
    def test_shared_hold_cannot_be_upgraded_in_place(self, backend: BaseLockBackend, lock_name: str) -> None:
        with backend.lock(lock_name, shared=True, timeout=5), pytest.raises(LockError):
            backend.lock(lock_name, timeout=0).acquire()


class AbstractCrashTests(ContractBase):
    #: How soon a ``session_bound`` hold must be free once its holder's process died (seconds):
    #: the server ends the session at once, with no lease to run out.
    session_end_within: float = 2.0

    @across_processes
    @requires(SESSION_BOUND)
    @pytest.mark.parametrize("api", ["lock", "alock"])
    def test_a_session_bound_hold_ends_with_its_holders_session(
        self, backend_spec: BackendSpec, backend: BaseLockBackend, lock_name: str, api: str
    ) -> None:
        target = workers.hold_until_killed if api == "lock" else workers.hold_until_killed_async
        args = (backend_spec, lock_name, None) if api == "lock" else (backend_spec, lock_name)
        with workers.killed_at_exit(target, *args):
            assert _held_elsewhere(backend, lock_name)
        killed = time.monotonic()
        handle = backend.lock(lock_name)
        assert handle.acquire(timeout=self.session_end_within), (
            f"the lock was still held {self.session_end_within}s after its holder's process died: "
            "the hold outlived the holder's session"
        )
        handle.release()
        assert time.monotonic() - killed < self.session_end_within

    @across_processes
    def test_holder_killed_with_sigkill_gives_the_lock_back(
        self, backend_spec: BackendSpec, backend: BaseLockBackend, lock_name: str
    ) -> None:
        lease = TTL in backend.capabilities and SESSION_BOUND not in backend.capabilities
        ttl = self.lease_ttl * 2 if lease else None
        with workers.killed_at_exit(workers.hold_until_killed, backend_spec, lock_name, ttl):
            assert _held_elsewhere(backend, lock_name)
        killed = time.monotonic()
        limit = (ttl + self.recovery_slack) if ttl is not None else 10.0
        handle = backend.lock(lock_name)
        assert handle.acquire(timeout=limit), f"the lock did not come back within {limit}s of the holder's death"
        handle.release()
        if not lease:
            assert time.monotonic() - killed < 10.0
