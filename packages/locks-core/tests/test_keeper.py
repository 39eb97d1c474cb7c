"""The keeper thread: auto-renew, lost locks, on_lost, release joining a renewal in flight."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest
from memory_backend import CountingMemoryBackend

import locks
from locks import keeper as keeper_module
from locks import signals


@pytest.fixture
def backend() -> Iterator[CountingMemoryBackend]:
    with CountingMemoryBackend(alias="memory") as backend:
        yield backend


def test_auto_renew_keeps_a_short_lease_alive(backend: CountingMemoryBackend) -> None:
    with backend.lock("renewed", ttl=0.3, auto_renew=True) as held:
        time.sleep(1.0)
        assert backend.is_locked(backend.make_key("renewed"))
        assert not held.lost
    assert backend.extend_calls >= 2
    assert not backend.is_locked(backend.make_key("renewed"))


def test_one_keeper_thread_serves_every_lock(backend: CountingMemoryBackend) -> None:
    handles = [backend.lock(f"many-{i}", ttl=0.5, auto_renew=True) for i in range(20)]
    for handle in handles:
        handle.acquire()
    keepers = [t for t in threading.enumerate() if t.name == "locks-keeper"]
    for handle in handles:
        handle.release()
    assert len(keepers) == 1


def test_a_lease_the_keeper_cannot_renew_is_reported_lost(backend: CountingMemoryBackend) -> None:
    lost = threading.Event()
    sent: list[dict[str, object]] = []

    def receiver(sender: object, **kwargs: object) -> None:
        sent.append(kwargs)

    signals.lock_lost.connect(receiver)
    try:
        handle = backend.lock("doomed", ttl=0.3, auto_renew=True, on_lost=lambda h: lost.set())
        handle.acquire()
        backend.fail_extend = True
        assert lost.wait(3)
        assert handle.lost and not handle.owned
        with pytest.raises(locks.LockLost):
            handle.release()
    finally:
        signals.lock_lost.disconnect(receiver)
    assert sent and sent[0]["name"] == "doomed"


def _wait_until_lost(handle: locks.Lock, within: float = 3.0) -> None:
    """Waits until the keeper has marked ``handle``'s hold lost (failing after ``within`` s)."""
    deadline = time.monotonic() + within
    while not handle.lost:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_failing_on_lost_callback_does_not_kill_the_keeper(backend: CountingMemoryBackend) -> None:
    def explode(handle: object) -> None:
        raise RuntimeError("callback bug")

    first = backend.lock("first", ttl=0.2, auto_renew=True, on_lost=explode)
    first.acquire()
    backend.fail_extend = True
    _wait_until_lost(first)
    backend.fail_extend = False
    with backend.lock("second", ttl=0.3, auto_renew=True):
        time.sleep(0.8)
        assert backend.is_locked(backend.make_key("second"))
    with pytest.raises(locks.LockLost):
        first.release()


def test_release_returns_only_after_a_renewal_in_flight(backend: CountingMemoryBackend) -> None:
    # A renewer that ran after release could re-take the lock: release must wait for it.
    handle = backend.lock("joined", ttl=0.2, auto_renew=True)
    handle.acquire()
    for _ in range(20):
        time.sleep(0.013)
    handle.release()
    calls = backend.extend_calls
    time.sleep(0.5)
    assert backend.extend_calls == calls
    assert not backend.is_locked(backend.make_key("joined"))


def test_nested_holds_report_lost_on_every_release(backend: CountingMemoryBackend) -> None:
    outer = backend.lock("nested-lost", ttl=0.2, auto_renew=True)
    outer.acquire()
    inner = backend.lock("nested-lost")
    inner.acquire()
    backend.fail_extend = True
    _wait_until_lost(outer)
    with pytest.raises(locks.LockLost):
        inner.acquire()
    with pytest.raises(locks.LockLost):
        inner.release()
    with pytest.raises(locks.LockLost):
        outer.release()


def test_keeper_and_holds_are_forgotten_in_a_forked_child(backend: CountingMemoryBackend, tmp_path: object) -> None:
    handle = backend.lock("forked", ttl=5, auto_renew=True)
    handle.acquire()
    pid = os.fork()
    if pid == 0:  # child: it holds nothing, and may not release what its parent holds
        code = 0
        try:
            if backend.holds or keeper_module.keeper._heap:
                code = 3
            try:
                handle.release()
                code = 4
            except locks.LockNotHeld:
                pass
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert handle.owned
    handle.release()


def test_call_later_runs_in_the_keeper_thread_in_order_of_due_time(backend: CountingMemoryBackend) -> None:
    ran: list[tuple[str, str, float]] = []
    done = threading.Event()
    started = time.monotonic()

    def note(what: str) -> None:
        ran.append((what, threading.current_thread().name, time.monotonic() - started))
        if len(ran) == 3:
            done.set()

    with backend.lock("renewed-meanwhile", ttl=0.3, auto_renew=True):  # entries due in between
        keeper_module.keeper.call_later(0.4, note, "late")
        keeper_module.keeper.call_later(0.1, note, "early")
        keeper_module.keeper.call_soon(note, "now")
        assert done.wait(5)
    assert [what for what, _, _ in ran] == ["now", "early", "late"]
    assert {thread for _, thread, _ in ran} == {"locks-keeper"}
    early, late = ran[1][2], ran[2][2]
    assert 0.1 <= early < 0.4 <= late
    assert backend.extend_calls >= 1  # the renewals went on around the timers
