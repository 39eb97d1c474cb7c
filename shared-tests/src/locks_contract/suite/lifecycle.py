"""A backend's life: built, used, then dropped or closed, it leaves no connection open.

A dropped backend must close its connections at once: CPython frees it by reference counting, so
it must not sit in a reference cycle (a bound method in a thread, a pool or a callback) that only
the cyclic garbage collector would break. Processes that build and drop backends (a worker per
task, ``locks.connect(url)`` in a script) otherwise pile up server sessions until the server
refuses more. The cases run with the collector off and count the server's connections from this
process before and after.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import time
import weakref
from collections.abc import Callable, Iterator

import pytest

from locks.backends.base import BaseLockBackend
from locks.backends.spec import BackendSpec
from locks_contract.base import ContractBase
from locks_contract.connections import cyclic_gc_off
from locks_contract.suite.basic import _held_elsewhere

Count = Callable[[], int]


class AbstractLifecycleTests(ContractBase):
    #: Build → acquire → release → drop cycles per case.
    lifecycle_cycles: int = 100
    #: How long the server may take to forget a closed connection (seconds).
    lifecycle_settle: float = 5.0

    # -- to provide ---------------------------------------------------------------------------
    @pytest.fixture
    def server_connection_count(self) -> Count:
        """A callable giving the number of connections the server has open *from this process*
        now (``pg_stat_activity``, ``information_schema.PROCESSLIST``, ``CLIENT LIST``... filtered
        by this process's client ports: see :mod:`locks_contract.connections`), or, for a
        backend without a server, the process's open descriptors. Without it the lifecycle
        cases are skipped, saying so."""
        pytest.skip("the backend's tests provide no server_connection_count fixture")

    # -- scenario -----------------------------------------------------------------------------
    @pytest.fixture
    def without_cyclic_gc(self) -> Iterator[None]:
        """Only reference counting frees objects during the case."""
        with cyclic_gc_off():
            yield

    # -- cases ----------------------------------------------------------------------------------
    @pytest.mark.parametrize("api", ["lock", "alock"])
    @pytest.mark.parametrize("closing", [False, True], ids=["dropped_backends", "with_block"])
    def test_backends_close_their_connections_at_once(
        self,
        backend_spec: BackendSpec,
        server_connection_count: Count,
        lock_name: str,
        without_cyclic_gc: None,
        api: str,
        closing: bool,
    ) -> None:
        """Dropped (``dropped_backends``) or used in a ``with`` block (``with_block``), through
        ``lock`` or ``alock``: a backend's connections close when it goes."""
        use = _USES[api]
        self._cycles(backend_spec, server_connection_count, lambda b: use(b, lock_name), closing=closing)

    def test_the_end_of_a_with_block_closes_the_connections(
        self, backend_spec: BackendSpec, server_connection_count: Count, lock_name: str, without_cyclic_gc: None
    ) -> None:
        spec_warm_up(backend_spec, lock_name)
        before = server_connection_count()
        with backend_spec.build(alias="contract-with") as backend:
            _sync_use(backend, lock_name)
            alock_once(backend, lock_name)
        # Still referenced here: only __exit__ can have closed them.
        after = _settled(server_connection_count, before, self.lifecycle_settle)
        assert after == before, f"{after - before} connection(s) still open after the with block closed the backend"
        del backend

    def test_close_is_idempotent_keeps_holds_valid_and_the_backend_usable(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        handle = backend.lock(lock_name, timeout=5)
        handle.acquire()
        backend.close()
        backend.close()
        assert _held_elsewhere(other_backend, lock_name), "close() dropped a lock still held"
        handle.release()
        assert not _held_elsewhere(other_backend, lock_name)
        backend.close()
        with backend.lock(lock_name, timeout=5) as held:  # a closed backend connects again
            assert held

    def test_close_keeps_async_holds_valid(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        async def main() -> bool:
            async with backend.alock(lock_name, timeout=5):
                backend.close()
                return _held_elsewhere(other_backend, lock_name)

        assert asyncio.run(main()), "close() dropped a lock still held by a task"
        assert not _held_elsewhere(other_backend, lock_name)

    def test_close_in_a_forked_child_leaves_the_parents_connections_alone(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        with backend.lock(f"{lock_name}-idle", timeout=5):
            pass  # the parent now has an idle connection, inherited by the child
        fork = multiprocessing.get_context("fork")
        with backend.lock(lock_name, timeout=5):
            child = fork.Process(target=_close_and_drop, args=(backend,))
            child.start()
            child.join(30)
            assert child.exitcode == 0, "close() in a forked child failed"
            assert _held_elsewhere(other_backend, lock_name), "the child's close() ended the parent's hold"
        assert not _held_elsewhere(other_backend, lock_name)
        with backend.lock(f"{lock_name}-idle", timeout=5) as held:  # the idle connection still works
            assert held

    # -- helpers --------------------------------------------------------------------------------
    def _cycles(self, spec: BackendSpec, count: Count, use: Callable[[BaseLockBackend], None], closing: bool) -> None:
        spec_warm_up(spec, "contract-warm-up")
        before = count()
        how = "closed by a with block, then dropped" if closing else "dropped without close()"
        for cycle in range(1, self.lifecycle_cycles + 1):
            ref = _one_cycle(spec, use, closing)
            assert _freed(ref), (
                f"backend {cycle} ({how}) was still alive without the cyclic garbage collector: a reference "
                "cycle (a bound method in a thread, a pool or a callback) keeps it"
            )
            if cycle % 10 == 0:
                # Stop early on a leak: the server is shared with other test runs.
                now = count()
                assert now - before <= 10, (
                    f"{now - before} server connection(s) left open after {cycle} backends were {how}"
                )
        after = _settled(count, before, self.lifecycle_settle)
        assert after == before, (
            f"{after - before} server connection(s) left open after {self.lifecycle_cycles} backends were "
            f"{how} (before: {before}, after: {after})"
        )


def _close_and_drop(backend: BaseLockBackend) -> None:
    backend.close()
    backend.close()
    del backend
    gc.collect()


def spec_warm_up(spec: BackendSpec, name: str) -> None:
    """One cycle first: drivers imported, and any deliberate process-wide pool opened, before
    the count that the others must come back to."""
    spec.run_setup()
    with spec.build(alias="contract-warm-up") as backend:
        _sync_use(backend, name)
        alock_once(backend, name)
    del backend


def _one_cycle(
    spec: BackendSpec, use: Callable[[BaseLockBackend], None], closing: bool
) -> weakref.ref[BaseLockBackend]:
    backend = spec.build(alias="contract-cycle")
    if closing:
        with backend:
            use(backend)
    else:
        use(backend)
    return weakref.ref(backend)


def _sync_use(backend: BaseLockBackend, name: str) -> None:
    with backend.lock(name, timeout=5) as held:
        assert held


def alock_once(backend: BaseLockBackend, name: str) -> None:
    """Holds ``name`` once through ``backend.alock``, in an event loop of its own."""

    async def main() -> None:
        async with backend.alock(name, timeout=5) as held:
            assert held

    asyncio.run(main())


#: How the cycle cases use each backend: through ``lock`` or ``alock``.
_USES: dict[str, Callable[[BaseLockBackend, str], None]] = {"lock": _sync_use, "alock": alock_once}


def _freed(ref: weakref.ref[BaseLockBackend], within: float = 2.0) -> bool:
    # A worker thread of the async API may drop its reference a moment after its result has
    # reached the event loop.
    deadline = time.monotonic() + within
    while ref() is not None and time.monotonic() < deadline:
        time.sleep(0.005)
    return ref() is None


def _settled(count: Count, expected: int, within: float) -> int:
    """The count once it equals ``expected``, or after ``within`` seconds (servers notice a closed
    connection a moment after the client closed it)."""
    deadline = time.monotonic() + within
    while True:
        now = count()
        if now == expected or time.monotonic() >= deadline:
            return now
        time.sleep(0.05)
