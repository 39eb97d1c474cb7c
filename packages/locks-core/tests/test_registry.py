"""The registry of holds: when a nested acquisition is trusted, and holders that end.

Run on the in-process backend (``memory://``); every server backend runs the same
scenarios in the contract suite (``AbstractHoldTrustTests``), against a second real process.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from memory_backend import CountingMemoryBackend

import locks
from locks import registry


@pytest.fixture
def backend() -> CountingMemoryBackend:
    return CountingMemoryBackend(alias="memory")


def test_a_nested_acquisition_well_within_the_lease_asks_nobody(backend: CountingMemoryBackend) -> None:
    with backend.lock("fresh", ttl=5, auto_renew=False):
        with backend.lock("fresh", timeout=0):
            pass
    assert backend.extend_calls == 0


def test_a_nested_acquisition_near_the_end_of_the_lease_renews_it_first(backend: CountingMemoryBackend) -> None:
    ttl = 0.5
    with backend.lock("ending", ttl=ttl, auto_renew=False) as outer:
        time.sleep(ttl - registry.margin(ttl) + 0.05)  # inside the margin, not yet expired
        with backend.lock("ending", timeout=0):
            assert backend.extend_calls == 1
        time.sleep(ttl - registry.margin(ttl) + 0.05)  # past the first lease: renewed, still ours
        assert not outer.lost


def test_a_nested_acquisition_past_the_lease_raises_lock_lost_and_forgets_the_hold(
    backend: CountingMemoryBackend,
) -> None:
    outer = backend.lock("expired", ttl=0.2, auto_renew=False)
    assert outer.acquire(timeout=0)
    time.sleep(0.3)
    with pytest.raises(locks.LockLost):
        backend.lock("expired").acquire(timeout=0)
    assert not backend.holds
    fresh = backend.lock("expired")
    assert fresh.acquire(timeout=0)  # nobody else took it: a new hold from the server
    fresh.release()
    with pytest.raises(locks.LockLost):
        outer.release()


def test_holders_are_thread_objects_and_an_ended_thread_gives_its_holds_back(backend: CountingMemoryBackend) -> None:
    lost = threading.Event()

    def take() -> None:
        assert backend.lock("left", ttl=30, auto_renew=True, on_lost=lambda h: lost.set()).acquire(timeout=0)
        (entry,) = backend.holds.entries()
        assert entry.holder is threading.current_thread()

    thread = threading.Thread(target=take)
    thread.start()
    thread.join()
    assert lost.wait(5), "the ended thread's hold was never given back"
    assert not backend.holds
    assert not backend.is_locked(backend.make_key("left"))


def test_an_ended_task_gives_its_holds_back(backend: CountingMemoryBackend) -> None:
    async def main() -> None:
        async def take() -> None:
            assert await backend.alock("task-left", ttl=30).acquire(timeout=0)

        await asyncio.create_task(take())
        for _ in range(100):
            if not backend.is_locked(backend.make_key("task-left")):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the ended task's hold was never given back")

    asyncio.run(main())
    assert not backend.holds


def test_the_default_lease_is_renewed_and_an_explicit_ttl_is_not(backend: CountingMemoryBackend) -> None:
    default = backend.lock("default-lease")
    explicit = backend.lock("explicit-lease", ttl=5)
    with default, explicit:
        (kept,) = [entry for entry in backend.holds.entries() if entry.keep_every]
        assert kept.hold.name == "default-lease"
        assert kept.renew_ttl == backend.default_ttl


def test_on_lost_without_any_means_to_notice_is_refused() -> None:
    class Blind(CountingMemoryBackend):
        capabilities = frozenset()  # neither leases nor a watchdog

    with pytest.raises(locks.NotSupported):
        Blind(alias="blind").lock("blind", on_lost=lambda h: None).acquire(timeout=0)
