"""Leases (ttl, extend, auto-renew, lost locks), the watchdog, fencing, shared locks, listing, force release."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import pytest

from locks import AsyncLock, LockError, LockLost, LockNotHeld, NotSupported
from locks.backends.base import (
    FENCING,
    FORCE_RELEASE,
    LISTING,
    SHARED,
    TTL,
    WATCHDOG,
    BaseLockBackend,
    HolderInfo,
    LockRequest,
    Owner,
)
from locks.backends.spec import BackendSpec
from locks_contract.base import ContractBase, requires
from locks_contract.suite.basic import _held_elsewhere


class AbstractLeaseTests(ContractBase):
    @requires(TTL)
    def test_lease_expires_and_the_old_holder_learns_it_lost(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        old = backend.lock(lock_name, ttl=self.lease_ttl)
        assert old.acquire(timeout=5)
        new = other_backend.lock(lock_name, ttl=30)
        started = time.monotonic()
        assert new.acquire(timeout=self.lease_ttl + self.recovery_slack)
        assert time.monotonic() - started >= self.lease_ttl * 0.5
        with pytest.raises(LockLost):
            old.release()
        # the old holder's release did not touch the new holder's lock
        assert _held_elsewhere(backend, lock_name)
        new.release()

    @requires(TTL)
    def test_extend_keeps_the_lock_past_its_first_ttl(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        handle = backend.lock(lock_name, ttl=self.lease_ttl)
        handle.acquire(timeout=5)
        time.sleep(self.lease_ttl * 0.6)
        handle.extend(self.lease_ttl * 3)
        time.sleep(self.lease_ttl * 0.8)
        assert _held_elsewhere(other_backend, lock_name)
        handle.release()

    @requires(TTL)
    def test_extend_of_an_unheld_lock_raises_lock_not_held(self, backend: BaseLockBackend, lock_name: str) -> None:
        with pytest.raises(LockNotHeld):
            backend.lock(lock_name, ttl=5).extend()

    @requires(TTL)
    def test_auto_renew_keeps_the_lock_for_several_ttls(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        with backend.lock(lock_name, ttl=self.lease_ttl, auto_renew=True, timeout=5) as held:
            time.sleep(self.lease_ttl * 2.5)
            assert _held_elsewhere(other_backend, lock_name)
            assert not held.lost
        assert not _held_elsewhere(other_backend, lock_name)

    @requires(TTL)
    def test_release_stops_renewal_at_once(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        with backend.lock(lock_name, ttl=self.lease_ttl, auto_renew=True, timeout=5):
            pass
        time.sleep(self.lease_ttl * 0.7)  # a renewer still running would re-take or extend it
        other = other_backend.lock(lock_name)
        assert other.acquire(timeout=0)
        time.sleep(self.lease_ttl * 0.7)
        other.release()

    @requires(FORCE_RELEASE)
    @requires(TTL, WATCHDOG, any_of=True)  # something must watch a held lock
    def test_lost_lock_calls_on_lost_and_release_raises(
        self, backend_spec: BackendSpec, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        caps = other_backend.capabilities
        watcher = BackendSpec(
            backend_spec.backend, backend_spec.location, {**backend_spec.options, "WATCHDOG": True}, backend_spec.setup
        ).build()
        watcher.watchdog_interval = 0.2  # type: ignore[misc]
        lost = threading.Event()
        options = {"ttl": self.lease_ttl, "auto_renew": True} if TTL in caps else {}
        handle = watcher.lock(lock_name, on_lost=lambda h: lost.set(), timeout=5, **options)
        try:
            handle.acquire()
            assert other_backend.force_release(lock_name) >= 1
            assert lost.wait(self.lease_ttl + self.recovery_slack), "on_lost was not called"
            assert handle.lost
            with pytest.raises(LockLost):
                handle.release()
        finally:
            watcher.close()


class AbstractWatchdogTests(ContractBase):
    """``watchdog``: :meth:`check() <locks.backends.BaseLockBackend.check>` tells that the server
    no longer has a hold, and the keeper's watchdog calls ``on_lost`` for it, with no lease
    renewal to notice it instead (a lease, where there is one, is long and not renewed)."""

    #: How often the keeper checks the watched holds of these cases (seconds).
    watchdog_every: float = 0.1
    #: How soon after the loss ``on_lost`` must have been called (seconds).
    lost_within: float = 2.0

    def take_lock_away(self, backend: BaseLockBackend, name: str) -> None:
        """Make the server lose the hold that another client has of ``name``, behind its back.
        The default force-releases it (``force_release``); a backend without that capability
        overrides this (the file backend deletes the lock file), or the cases are skipped."""
        if FORCE_RELEASE not in backend.capabilities:
            pytest.skip(
                "the backend lacks 'force_release' and its tests do not override take_lock_away(): "
                "nothing can take a held lock away"
            )
        assert backend.force_release(name) >= 1

    def _unrenewed(self, backend: BaseLockBackend) -> dict[str, Any]:
        return {"ttl": 60, "auto_renew": False} if TTL in backend.capabilities else {}

    @requires(WATCHDOG)
    def test_check_tells_that_the_server_lost_a_hold(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        name = backend.validate_name(lock_name)
        ttl = 60.0 if TTL in backend.capabilities else None
        request = LockRequest(name, backend.make_key(name), False, ttl, Owner.current())
        hold = backend.acquire(request, 5)
        assert hold is not None
        try:
            assert backend.check(hold) is True, "check() says a hold that the server has is lost"
            self.take_lock_away(other_backend, lock_name)
            assert backend.check(hold) is False, "check() says a hold is there after the server lost it"
        finally:
            backend.release_quietly(hold)

    @requires(WATCHDOG)
    @pytest.mark.parametrize("api", ["lock", "alock"])
    def test_the_watchdog_calls_on_lost_once_the_server_lost_a_hold(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str, api: str
    ) -> None:
        setattr(backend, "watchdog_interval", self.watchdog_every)  # noqa: B010 - a ClassVar, per instance
        lost = threading.Event()
        options = {"timeout": 5, "on_lost": lambda h: lost.set(), **self._unrenewed(backend)}
        if api == "alock":
            ahandle = backend.alock(lock_name, **options)
            asyncio.run(self._async_watchdog_calls_on_lost(ahandle, other_backend, lock_name, lost))
            return
        handle = backend.lock(lock_name, **options)
        assert handle.acquire()
        try:
            time.sleep(self.watchdog_every * 3)
            assert not lost.is_set() and not handle.lost, "on_lost was called for a hold the server has"
            self.take_lock_away(other_backend, lock_name)
            assert lost.wait(self.lost_within), f"on_lost was not called within {self.lost_within}s of the loss"
            assert handle.lost
            with pytest.raises(LockLost):
                handle.release()
        finally:
            if handle.owned or handle.lost:
                with contextlib.suppress(LockError):
                    handle.release()

    async def _async_watchdog_calls_on_lost(
        self, handle: AsyncLock, other_backend: BaseLockBackend, lock_name: str, lost: threading.Event
    ) -> None:
        assert await handle.acquire()
        try:
            await asyncio.sleep(self.watchdog_every * 3)
            assert not lost.is_set() and not handle.lost, "on_lost was called for a hold the server has"
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.take_lock_away, other_backend, lock_name)
            assert await loop.run_in_executor(None, lost.wait, self.lost_within), (
                f"on_lost was not called within {self.lost_within}s of the loss"
            )
            assert handle.lost
            with pytest.raises(LockLost):
                await handle.release()
        finally:
            if handle.owned or handle.lost:
                with contextlib.suppress(LockError):
                    await handle.release()


class AbstractFencingTests(ContractBase):
    @requires(FENCING)
    def test_tokens_strictly_increase_across_clients(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        tokens = []
        for i in range(10):
            with (backend if i % 2 else other_backend).lock(lock_name, timeout=5) as held:
                token = held.token
                assert isinstance(token, int)
                tokens.append(token)
        assert all(a < b for a, b in zip(tokens, tokens[1:])), tokens

    @requires(FENCING)
    def test_token_is_none_when_not_held(self, backend: BaseLockBackend, lock_name: str) -> None:
        assert backend.lock(lock_name).token is None


class AbstractSharedTests(ContractBase):
    @requires(SHARED)
    def test_shared_holders_coexist_and_exclude_a_writer(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        with backend.lock(lock_name, shared=True, timeout=5):
            with other_backend.lock(lock_name, shared=True, timeout=0) as second:
                assert second
            writer = other_backend.lock(lock_name)
            assert writer.acquire(timeout=0) is False
        writer = other_backend.lock(lock_name)
        assert writer.acquire(timeout=5)
        assert backend.lock(lock_name, shared=True).acquire(timeout=0) is False
        writer.release()

    @requires(SHARED)
    def test_writer_waiting_gets_the_lock_when_readers_leave(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        reader = backend.lock(lock_name, shared=True)
        reader.acquire(timeout=5)
        got = []
        thread = threading.Thread(target=lambda: got.append(other_backend.lock(lock_name).acquire(timeout=10)))
        thread.start()
        time.sleep(0.3)
        assert got == []
        reader.release()
        thread.join(15)
        assert got == [True]
        for entry in list(other_backend.holds.entries()):
            assert entry.count == 1


def _listed(backend: BaseLockBackend, name: str) -> list[HolderInfo]:
    """What ``backend.holders()`` lists of the lock ``name``: by its key, or by the name."""
    key = backend.make_key(name)
    return [h for h in backend.holders() if h.key == key or h.name == name]


class AbstractListingTests(ContractBase):
    @requires(LISTING)
    def test_holders_lists_a_held_lock_and_forgets_it_after_release(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        with backend.lock(lock_name, timeout=5):
            assert len(_listed(other_backend, lock_name)) == 1, other_backend.holders()
        assert not _listed(other_backend, lock_name)

    @requires(LISTING)
    def test_holders_filters_by_prefix(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        with backend.lock(lock_name + "-x", timeout=5), backend.lock("elsewhere-" + lock_name, timeout=5):
            names = {h.name for h in other_backend.holders(prefix=lock_name)}
            assert lock_name + "-x" in names
            assert "elsewhere-" + lock_name not in names


class AbstractForceReleaseTests(ContractBase):
    @requires(FORCE_RELEASE)
    def test_force_release_frees_the_lock_and_the_holder_learns_it(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        handle = backend.lock(lock_name)
        handle.acquire(timeout=5)
        assert other_backend.force_release(lock_name) >= 1
        taker = other_backend.lock(lock_name)
        assert taker.acquire(timeout=5)
        with pytest.raises(LockLost):
            handle.release()
        assert _held_elsewhere(backend, lock_name)
        taker.release()

    def test_force_release_of_a_free_lock_breaks_nothing(self, backend: BaseLockBackend, lock_name: str) -> None:
        if FORCE_RELEASE in backend.capabilities:
            assert backend.force_release(lock_name) == 0
        else:
            # Without the capability a backend may refuse outright, or clean up a free lock.
            try:
                assert backend.force_release(lock_name) == 0
            except NotSupported:
                pass
        assert not _held_elsewhere(backend, lock_name)
