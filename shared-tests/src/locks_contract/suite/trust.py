"""Holds you can trust: a hold is never counted on past its lease or its holder.

* a nested acquisition after the outer lease ran out asks the server, and another process's
  hold is never mistaken for ours;
* a thread or task that ends holding a lock gives it back, and a new thread (which may reuse
  the dead one's ident) inherits nothing;
* ``on_lost`` fires while held on every backend (the watchdog is on for holds that ask for it);
* the default lease is short and renewed while held, so a crashed holder frees the lock soon and
  a live one keeps it; ``locks run`` keeps its lease for as long as its command runs.

Each case runs on the sync and the asyncio API, against a second, real process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest

from locks import LockLost, NotSupported
from locks.backends.base import FENCING, FORCE_RELEASE, TTL, WATCHDOG, BaseLockBackend
from locks.backends.spec import BackendSpec
from locks.keeper import RENEW_FRACTION
from locks_contract import workers
from locks_contract.base import ContractBase, across_processes, requires
from locks_contract.suite.basic import _held_elsewhere

_spawn = multiprocessing.get_context("spawn")


@contextmanager
def _other_process(spec: BackendSpec, name: str, timeout: float) -> Iterator[tuple[Any, Any]]:
    """A second process that waits up to ``timeout`` for ``name`` and holds it until told."""
    got, done = _spawn.Event(), _spawn.Event()
    process = _spawn.Process(target=workers.hold_until_told, args=(spec, name, timeout, got, done), daemon=True)
    process.start()
    try:
        yield got, done
    finally:
        done.set()
        process.join(30)
        if process.is_alive():
            process.kill()
            process.join(5)


def _with_default_ttl(spec: BackendSpec, seconds: float) -> BackendSpec:
    # Lease backends take their default lease as OPTIONS["DEFAULT_TTL"].
    return replace(spec, options={**spec.options, "DEFAULT_TTL": seconds})


def _has_ttl(spec: BackendSpec) -> bool:
    from django.utils.module_loading import import_string

    return TTL in import_string(spec.backend).capabilities


class AbstractHoldTrustTests(ContractBase):
    #: How long the other process may take to start, connect and take a lock it waits for.
    other_process_wait: float = 30.0

    # -- a nested acquisition never trusts a lease that ran out -------------------------------
    @across_processes
    @requires(TTL)
    def test_nested_acquisition_after_the_lease_ran_out_asks_the_server(
        self, backend_spec: BackendSpec, backend: BaseLockBackend, lock_name: str
    ) -> None:
        outer = backend.lock(lock_name, ttl=self.lease_ttl, auto_renew=False, timeout=5)
        assert outer.acquire()
        with _other_process(backend_spec, lock_name, self.other_process_wait) as (got, _):
            assert got.wait(self.other_process_wait), "the other process never took the expired lock"
            with pytest.raises(LockLost):
                backend.lock(lock_name).acquire(timeout=0)  # the outer hold is gone: said so
            assert backend.lock(lock_name).acquire(timeout=0) is False  # and the server is asked now
            assert outer.lost
            with pytest.raises(LockLost):
                outer.release()

    @across_processes
    @requires(TTL)
    def test_async_nested_acquisition_after_the_lease_ran_out_asks_the_server(
        self, backend_spec: BackendSpec, backend: BaseLockBackend, lock_name: str
    ) -> None:
        async def main(got: Any) -> None:
            outer = backend.alock(lock_name, ttl=self.lease_ttl, auto_renew=False, timeout=5)
            assert await outer.acquire()
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, got.wait, self.other_process_wait)
            with pytest.raises(LockLost):
                await backend.alock(lock_name).acquire(timeout=0)
            assert await backend.alock(lock_name).acquire(timeout=0) is False
            assert outer.lost
            with pytest.raises(LockLost):
                await outer.release()

        with _other_process(backend_spec, lock_name, self.other_process_wait) as (got, _):
            asyncio.run(main(got))

    def test_nested_acquisition_within_the_lease_is_counted_without_the_server(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        with backend.lock(lock_name, timeout=5) as outer:
            inner = backend.lock(lock_name, timeout=0)
            assert inner.acquire()
            assert inner.token == outer.token if FENCING in backend.capabilities else True
            inner.release()
            assert outer.owned and _held_elsewhere(other_backend, lock_name)

    # -- a holder that ends gives its holds back; nobody inherits them ---------------------
    @across_processes
    def test_a_thread_that_ends_holding_a_lock_gives_it_back_and_a_new_thread_inherits_nothing(
        self, backend_spec: BackendSpec, backend: BaseLockBackend, lock_name: str
    ) -> None:
        idents: list[int] = []

        def take_and_leave() -> None:
            idents.append(threading.get_ident())
            assert backend.lock(lock_name, timeout=5).acquire()  # never released

        first = threading.Thread(target=take_and_leave)
        first.start()
        first.join()
        assert idents, "the first thread failed to take the lock"
        with _other_process(backend_spec, lock_name, self.other_process_wait) as (got, _):
            assert got.wait(self.other_process_wait), "the dead thread's lock never came back"
            answers: list[object] = []

            def ask_again() -> None:
                idents.append(threading.get_ident())  # often the dead thread's ident, reused
                try:
                    answers.append(backend.lock(lock_name).acquire(timeout=0))
                except BaseException as exc:  # noqa: BLE001
                    answers.append(exc)

            second = threading.Thread(target=ask_again)
            second.start()
            second.join()
            assert answers == [False], f"a new thread (idents {idents}) was granted another process's lock"

    @across_processes
    def test_a_task_that_ends_holding_a_lock_gives_it_back_and_a_new_task_inherits_nothing(
        self, backend_spec: BackendSpec, backend: BaseLockBackend, lock_name: str
    ) -> None:
        async def main() -> object:
            async def take_and_leave() -> bool:
                return await backend.alock(lock_name, timeout=5).acquire()  # never released

            assert await asyncio.create_task(take_and_leave())
            loop = asyncio.get_running_loop()
            with _other_process(backend_spec, lock_name, self.other_process_wait) as (got, _):
                assert await loop.run_in_executor(None, got.wait, self.other_process_wait), (
                    "the ended task's lock never came back"
                )

                async def ask_again() -> bool:
                    return await backend.alock(lock_name).acquire(timeout=0)

                return await asyncio.create_task(ask_again())

        assert asyncio.run(main()) is False

    # -- on_lost is honoured on every backend ---------------------------------------------
    def _lost_within(self, backend: BaseLockBackend) -> float:
        renew_every = (backend.default_ttl or 0.0) * RENEW_FRACTION if TTL in backend.capabilities else 0.0
        return max(backend.watchdog_interval, renew_every) + 5.0

    def _quick_to_notice(self, spec: BackendSpec) -> BackendSpec:
        # a short default lease is renewed (and its loss noticed) every third of a second
        return _with_default_ttl(spec, self.lease_ttl) if _has_ttl(spec) else spec

    @requires(FORCE_RELEASE)
    @pytest.mark.parametrize("api", ["lock", "alock"])
    def test_on_lost_is_called_when_the_lock_is_taken_away(
        self, backend_spec: BackendSpec, other_backend: BaseLockBackend, lock_name: str, api: str
    ) -> None:
        lost = threading.Event()
        with self._quick_to_notice(backend_spec).build(alias="watched") as backend:
            if api == "alock":
                asyncio.run(self._async_on_lost_is_called(backend, other_backend, lock_name, lost))
                return
            handle = backend.lock(lock_name, timeout=5, on_lost=lambda h: lost.set())
            assert handle.acquire()
            try:
                assert other_backend.force_release(lock_name) >= 1
                assert lost.wait(self._lost_within(backend)), "on_lost was never called"
                assert handle.lost
            finally:
                with pytest.raises(LockLost):
                    handle.release()

    async def _async_on_lost_is_called(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str, lost: threading.Event
    ) -> None:
        handle = backend.alock(lock_name, timeout=5, on_lost=lambda h: lost.set())
        assert await handle.acquire()
        try:
            assert other_backend.force_release(lock_name) >= 1
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, lost.wait, self._lost_within(backend))
            assert handle.lost
        finally:
            with pytest.raises(LockLost):
                await handle.release()

    def test_on_lost_is_refused_where_nothing_could_call_it(self, backend: BaseLockBackend, lock_name: str) -> None:
        if WATCHDOG in backend.capabilities or TTL in backend.capabilities:
            handle = backend.lock(lock_name, timeout=5, on_lost=lambda h: None)
            assert handle.acquire()
            handle.release()
        else:
            with pytest.raises(NotSupported):
                backend.lock(lock_name, on_lost=lambda h: None).acquire(timeout=0)
            assert not backend.holds

    # -- the default lease: short, renewed while held --------------------------------------
    @requires(TTL)
    @pytest.mark.parametrize("api", ["lock", "alock"])
    def test_the_default_lease_is_renewed_for_as_long_as_the_lock_is_held(
        self, backend_spec: BackendSpec, lock_name: str, api: str
    ) -> None:
        spec = _with_default_ttl(backend_spec, self.lease_ttl)
        with spec.build(alias="short-default") as backend, spec.build(alias="other") as other:
            if api == "alock":
                asyncio.run(self._async_default_lease_is_renewed(backend, other, lock_name))
                return
            with backend.lock(lock_name, timeout=5) as held:
                time.sleep(self.lease_ttl * 2)
                assert _held_elsewhere(other, lock_name), "a live holder lost its default lease"
                assert not held.lost

    async def _async_default_lease_is_renewed(
        self, backend: BaseLockBackend, other: BaseLockBackend, lock_name: str
    ) -> None:
        async with backend.alock(lock_name, timeout=5) as held:
            await asyncio.sleep(self.lease_ttl * 2)
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, _held_elsewhere, other, lock_name)
            assert not held.lost

    @across_processes
    @requires(TTL)
    def test_a_killed_holder_of_a_default_lease_frees_the_lock_within_that_lease(
        self, backend_spec: BackendSpec, backend: BaseLockBackend, lock_name: str
    ) -> None:
        lease = self.lease_ttl * 2
        spec = _with_default_ttl(backend_spec, lease)
        with workers.killed_at_exit(workers.hold_until_killed, spec, lock_name, None):
            time.sleep(lease * 1.25)  # renewed meanwhile: still held past its first lease
            assert _held_elsewhere(backend, lock_name), "the live holder lost its renewed default lease"
        killed = time.monotonic()
        handle = backend.lock(lock_name)
        limit = lease + self.recovery_slack
        assert handle.acquire(timeout=limit), f"the lock did not come back within {limit}s of the holder's death"
        handle.release()
        assert time.monotonic() - killed <= limit

    # -- locks run keeps its lock for as long as its command runs ---------------------------
    def _run_under_lock(
        self, backend: BaseLockBackend, other: BaseLockBackend, lock_name: str, *options: str
    ) -> tuple[int, list[bool]]:
        from locks.cli import build_parser, cmd_run

        seconds = self.lease_ttl * 2
        args = build_parser().parse_args(
            ["run", *options, lock_name, "--", sys.executable, "-c", f"import time; time.sleep({seconds})"]
        )
        probes: list[bool] = []

        def probe() -> None:
            time.sleep(self.lease_ttl * 1.5)  # past the first lease
            probes.append(_held_elsewhere(other, lock_name))

        prober = threading.Thread(target=probe)
        prober.start()
        code = cmd_run(backend, args)  # in the main thread: it forwards signals to the command
        prober.join()
        return code, probes

    def test_locks_run_keeps_the_lock_while_the_command_runs(self, backend_spec: BackendSpec, lock_name: str) -> None:
        spec = _with_default_ttl(backend_spec, self.lease_ttl) if _has_ttl(backend_spec) else backend_spec
        with spec.build(alias="cli") as backend, spec.build(alias="other") as other:
            code, probes = self._run_under_lock(backend, other, lock_name)
            assert code == 0
            assert probes == [True], "a second run could have started while the first one ran"
            assert not _held_elsewhere(other, lock_name)

    @requires(TTL)
    def test_locks_run_with_a_ttl_renews_it_while_the_command_runs(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        code, probes = self._run_under_lock(backend, other_backend, lock_name, "--ttl", str(self.lease_ttl))
        assert code == 0
        assert probes == [True], "the lease ran out while the command ran"
