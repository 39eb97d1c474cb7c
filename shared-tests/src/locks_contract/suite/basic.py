"""Acquire and release, the context manager, the decorator, ownership, bad input, capabilities."""

from __future__ import annotations

import math
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from locks import LockError, LockLost, LockNotHeld, LockTimeout, NotSupported
from locks.backends.base import FENCING, FORCE_RELEASE, LISTING, SHARED, TTL, BaseLockBackend
from locks.backends.spec import BackendSpec
from locks_contract.base import ContractBase


def _held_elsewhere(backend: BaseLockBackend, name: str) -> bool:
    """Whether another client fails to take ``name`` at once (and leaves it as it was)."""
    probe = backend.lock(name, timeout=0)
    if probe.acquire():
        probe.release()
        return False
    return True


class AbstractBasicTests(ContractBase):
    def test_acquire_returns_true_and_release_frees(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        handle = backend.lock(lock_name)
        assert handle.acquire(timeout=5) is True
        assert handle.owned and bool(handle)
        assert handle.locked()
        assert _held_elsewhere(other_backend, lock_name)
        handle.release()
        assert not handle.owned
        assert not other_backend.lock(lock_name).locked()
        assert not _held_elsewhere(other_backend, lock_name)

    def test_context_manager_holds_inside_and_frees_after(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        with backend.lock(lock_name, timeout=5) as held:
            assert held
            assert _held_elsewhere(other_backend, lock_name)
        assert not _held_elsewhere(other_backend, lock_name)

    def test_body_that_raises_releases_the_lock(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        with pytest.raises(ZeroDivisionError), backend.lock(lock_name, timeout=5):
            1 / 0
        assert not _held_elsewhere(other_backend, lock_name)

    def test_decorator_holds_the_lock_during_each_call(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        @backend.lock(lock_name, timeout=5)
        def work(x: int) -> tuple[int, bool]:
            return x * 2, _held_elsewhere(other_backend, lock_name)

        assert work(21) == (42, True)
        assert work(x=1) == (2, True)
        assert not _held_elsewhere(other_backend, lock_name)

    def test_decorator_name_template_uses_the_arguments(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        @backend.lock(lock_name + "-{user_id}", timeout=5)
        def sync_user(user_id: int, verbose: bool = False) -> tuple[bool, bool]:
            return _held_elsewhere(other_backend, f"{lock_name}-{user_id}"), _held_elsewhere(
                other_backend, f"{lock_name}-{user_id + 1}"
            )

        assert sync_user(7) == (True, False)

    def test_decorator_skip_returns_none_without_calling(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        calls = []

        @backend.lock(lock_name, timeout=0, on_busy="skip")
        def job() -> str:
            calls.append(1)
            return "ran"

        with other_backend.lock(lock_name, timeout=5):
            assert job() is None
        assert calls == []
        assert job() == "ran"

    def test_try_once_on_a_busy_lock_is_false_at_once(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        with other_backend.lock(lock_name, timeout=5):
            started = time.monotonic()
            assert backend.lock(lock_name).acquire(timeout=0) is False
            assert backend.lock(lock_name).acquire(blocking=False) is False
            assert time.monotonic() - started < 2.0

    def test_on_busy_skip_gives_a_falsy_handle(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        with other_backend.lock(lock_name, timeout=5):
            with backend.lock(lock_name, timeout=0, on_busy="skip") as held:
                assert not held
                assert not held.owned
        assert not _held_elsewhere(other_backend, lock_name)

    def test_on_busy_raise_raises_lock_timeout_naming_the_lock(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        with other_backend.lock(lock_name, timeout=5), pytest.raises(LockTimeout) as info:
            with backend.lock(lock_name, timeout=0):
                pytest.fail("entered a busy lock")
        assert isinstance(info.value, TimeoutError)
        assert info.value.name == lock_name

    def test_release_of_an_unheld_lock_raises_lock_not_held(self, backend: BaseLockBackend, lock_name: str) -> None:
        handle = backend.lock(lock_name)
        with pytest.raises(LockNotHeld):
            handle.release()
        handle.acquire(timeout=5)
        handle.release()
        with pytest.raises(LockNotHeld):
            handle.release()

    def test_release_from_another_thread_is_refused_and_the_lock_stays(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        handle = backend.lock(lock_name)
        handle.acquire(timeout=5)
        errors: list[BaseException] = []

        def intruder() -> None:
            try:
                handle.release()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        thread = threading.Thread(target=intruder)
        thread.start()
        thread.join()
        assert len(errors) == 1 and isinstance(errors[0], LockNotHeld)
        with pytest.raises(LockNotHeld):
            other_backend.lock(lock_name).release()
        assert _held_elsewhere(other_backend, lock_name)
        handle.release()

    def test_distinct_names_do_not_block_each_other(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        with backend.lock(lock_name + "-a", timeout=5), other_backend.lock(lock_name + "-b", timeout=0):
            pass

    def test_one_handle_shared_by_threads_excludes_like_threading_lock(
        self, backend: BaseLockBackend, lock_name: str
    ) -> None:
        shared = backend.lock(lock_name, timeout=10)
        inside = []
        overlap = []

        def worker() -> None:
            for _ in range(5):
                with shared:
                    inside.append(1)
                    if len(inside) > 1:
                        overlap.append(1)
                    time.sleep(0.002)
                    inside.pop()

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert overlap == []


class AbstractArgumentTests(ContractBase):
    """Bad arguments raise TypeError/ValueError before any server is touched: they are checked
    on a backend whose server does not answer, so touching it would raise BackendUnavailable."""

    @pytest.mark.parametrize(
        ("options", "error"),
        [
            ({"timeout": -1}, ValueError),
            ({"timeout": math.nan}, ValueError),
            ({"timeout": math.inf}, ValueError),
            ({"timeout": "5"}, TypeError),
            ({"timeout": True}, TypeError),
            ({"timeout": timedelta(seconds=-1)}, ValueError),
            ({"ttl": 0}, ValueError),
            ({"ttl": -5}, ValueError),
            ({"ttl": "10"}, TypeError),
            ({"on_busy": "wait"}, ValueError),
            ({"on_lost": "not callable"}, TypeError),
            ({"shared": "yes"}, TypeError),
            ({"auto_renew": 1}, TypeError),
        ],
    )
    def test_bad_options_raise_before_any_server_work(
        self, unreachable_backend_spec: BackendSpec, options: dict[str, Any], error: type[Exception]
    ) -> None:
        backend = unreachable_backend_spec.build()
        with pytest.raises(error):
            backend.lock("fine-name", **options)

    @pytest.mark.parametrize(
        ("name", "error"),
        [("", ValueError), (b"bytes", TypeError), (1.5, TypeError), (True, TypeError), (["x"], TypeError)],
    )
    def test_bad_names_raise_before_any_server_work(
        self, unreachable_backend_spec: BackendSpec, name: Any, error: type[Exception]
    ) -> None:
        backend = unreachable_backend_spec.build()
        with pytest.raises(error):
            backend.lock(name)

    def test_acquire_with_a_bad_timeout_leaves_nothing_held(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        handle = backend.lock(lock_name)
        with pytest.raises(ValueError):
            handle.acquire(timeout=-2)
        with pytest.raises(TypeError):
            handle.acquire(timeout="1")  # type: ignore[arg-type]
        assert not handle.owned
        assert not _held_elsewhere(other_backend, lock_name)

    def test_timedelta_timeout_is_accepted(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        with other_backend.lock(lock_name, timeout=5):
            started = time.monotonic()
            assert backend.lock(lock_name).acquire(timeout=timedelta(milliseconds=200)) is False
            assert time.monotonic() - started >= 0.2


class AbstractCapabilityTests(ContractBase):
    """A capability is tested both ways: declared, it works; missing, asking raises NotSupported.
    These cases never skip."""

    def test_capability_ttl(self, backend: BaseLockBackend, lock_name: str) -> None:
        if TTL in backend.capabilities:
            with backend.lock(lock_name, ttl=5, timeout=5) as held:
                held.extend(5)
        else:
            with pytest.raises(NotSupported):
                backend.lock(lock_name, ttl=5).acquire(timeout=1)
            with pytest.raises(NotSupported):
                backend.lock(lock_name, auto_renew=True, ttl=5).acquire(timeout=1)

    def test_capability_shared(self, backend: BaseLockBackend, lock_name: str) -> None:
        if SHARED in backend.capabilities:
            with backend.lock(lock_name, shared=True, timeout=5) as held:
                assert held
        else:
            with pytest.raises(NotSupported):
                backend.lock(lock_name, shared=True).acquire(timeout=1)
        assert not backend.lock(lock_name).locked()

    def test_capability_fencing(self, backend: BaseLockBackend, lock_name: str) -> None:
        with backend.lock(lock_name, timeout=5) as held:
            if FENCING in backend.capabilities:
                assert isinstance(held.token, int)
            else:
                with pytest.raises(NotSupported):
                    held.token

    def test_capability_listing(self, backend: BaseLockBackend, lock_name: str) -> None:
        if LISTING in backend.capabilities:
            assert isinstance(backend.holders(prefix=lock_name), list)
        else:
            with pytest.raises(NotSupported):
                backend.holders()

    def test_capability_force_release(
        self, backend: BaseLockBackend, other_backend: BaseLockBackend, lock_name: str
    ) -> None:
        handle = backend.lock(lock_name, timeout=5)
        handle.acquire()
        if FORCE_RELEASE in backend.capabilities:
            assert other_backend.force_release(lock_name) >= 1
            with pytest.raises(LockLost):
                handle.release()
        else:
            with pytest.raises(NotSupported):
                other_backend.force_release(lock_name)
            assert _held_elsewhere(other_backend, lock_name)
            handle.release()

    def test_lock_error_is_the_base_of_every_error(self) -> None:
        from locks import BackendUnavailable

        for error in (LockTimeout, LockNotHeld, LockLost, BackendUnavailable, NotSupported):
            assert issubclass(error, LockError)
