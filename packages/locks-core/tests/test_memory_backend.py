"""What the in-process backend adds to the contract: tables by name, options, a wait woken by the
release (no polling), listing details, and a forked child that starts with empty tables."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

import locks
from locks.backends.memory import MemoryLockBackend, table_name
from locks_contract import take_and_give_back


@pytest.fixture
def url() -> str:
    return f"memory://test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def backend(url: str) -> Iterator[MemoryLockBackend]:
    with MemoryLockBackend(alias="memory", location=url) as backend:
        yield backend


def held(backend: locks.BaseLockBackend, name: str) -> bool:
    return backend.is_locked(backend.make_key(name))


class TestTables:
    def test_backends_with_the_same_location_share_a_table_and_others_do_not(self, url: str) -> None:
        first, same = locks.connect(url), MemoryLockBackend(location=url)
        bare = MemoryLockBackend(location=url.removeprefix("memory://"))
        elsewhere = locks.connect(url + "-other")
        with first.lock("shared-table", timeout=0):
            assert held(same, "shared-table") and held(bare, "shared-table")
            assert not held(elsewhere, "shared-table")

    def test_memory_url_alone_is_the_default_table(self) -> None:
        assert table_name(None) == table_name("") == table_name("memory://") == ""
        assert table_name("memory://name") == table_name("name") == "name"
        assert locks.connect("memory://").table_name == ""  # type: ignore[attr-defined]

    def test_a_spec_rebuilds_a_backend_on_the_same_table(self, backend: MemoryLockBackend) -> None:
        with backend.lock("by-spec", timeout=0):
            assert held(backend.spec().build(), "by-spec")

    def test_it_serves_a_locks_alias(self, url: str) -> None:
        setting = {"default": {"BACKEND": "locks.backends.memory.MemoryLockBackend", "LOCATION": url}}
        with override_settings(LOCKS=setting):
            with locks.lock("via-settings", timeout=0) as handle:
                assert handle and isinstance(handle.token, int)
                assert held(MemoryLockBackend(location=url), "via-settings")

    def test_tokens_grow_with_every_acquisition_of_any_name(self, backend: MemoryLockBackend) -> None:
        tokens = []
        for name in ("a", "b", "a", "c", "a"):
            with backend.lock(name, timeout=0) as handle:
                tokens.append(handle.token)
        assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)

    def test_a_forked_child_starts_with_empty_tables(self, backend: MemoryLockBackend) -> None:
        with backend.lock("forked", timeout=0):
            pid = os.fork()
            if pid == 0:  # the child holds nothing and sees nothing held
                code = 0
                try:
                    if held(backend, "forked"):
                        code = 3
                    elif not backend.lock("forked").acquire(timeout=0):
                        code = 4
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert held(backend, "forked")


class TestOptions:
    def test_default_ttl_comes_from_options_or_the_url(self, url: str) -> None:
        assert MemoryLockBackend(location=url, options={"DEFAULT_TTL": 2}).default_ttl == 2.0
        assert locks.connect(url + "?default_ttl=0.5").default_ttl == 0.5

    @pytest.mark.parametrize(
        "options", [{"NOPE": 1}, {"DEFAULT_TTL": 0}, {"DEFAULT_TTL": "soon"}, {"DEFAULT_TTL": True}]
    )
    def test_bad_options_are_refused(self, url: str, options: dict[str, object]) -> None:
        with pytest.raises(ImproperlyConfigured):
            MemoryLockBackend(location=url, options=options)

    def test_settings_with_bad_options_are_improperly_configured(self, url: str) -> None:
        setting = {"default": {"BACKEND": "locks.backends.memory.MemoryLockBackend", "OPTIONS": {"NOPE": 1}}}
        with override_settings(LOCKS=setting), pytest.raises(ImproperlyConfigured, match=r"'NOPE' is not an option"):
            locks.get_backend()


class TestWaiting:
    def test_a_waiter_sleeps_until_the_release_instead_of_polling(
        self, backend: MemoryLockBackend, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        attempts = []
        original = MemoryLockBackend._grant

        def counted(self: MemoryLockBackend, *args: object) -> object:
            attempts.append(time.monotonic())
            return original(self, *args)  # type: ignore[arg-type]

        holder = backend.lock("sleepy", auto_renew=False)
        assert holder.acquire(timeout=0)
        monkeypatch.setattr(MemoryLockBackend, "_grant", counted)
        got: list[float] = []
        waiter = threading.Thread(target=lambda: got.append(backend.lock("sleepy").acquire(timeout=10) and 1.0))
        waiter.start()
        time.sleep(0.5)
        assert len(attempts) == 1, "the waiter polled instead of sleeping until the release"
        released = time.monotonic()
        holder.release()
        waiter.join(5)
        assert got == [1.0]
        assert len(attempts) == 2 and attempts[-1] - released < 0.5

    def test_a_waiter_blocked_by_a_lease_gets_the_lock_when_the_lease_runs_out(
        self, backend: MemoryLockBackend
    ) -> None:
        holder = backend.lock("leased", ttl=0.3, auto_renew=False)
        assert holder.acquire(timeout=0)
        results, spent = _take_and_give_back_in_a_thread(backend, "leased", 5)
        assert results == [True]
        assert 0.2 <= spent < 3.0
        with pytest.raises(locks.LockLost, match="lease ran out"):
            holder.release()

    def test_the_wait_gives_up_at_its_timeout(self, backend: MemoryLockBackend) -> None:
        with backend.lock("busy", timeout=0):
            results, spent = _take_and_give_back_in_a_thread(backend, "busy", 0.3)
            assert results == [False]
            assert 0.3 <= spent < 2.0
        assert not backend._table.waiters, "a waiter that gave up is still counted"


def _take_and_give_back_in_a_thread(backend: MemoryLockBackend, name: str, timeout: float) -> tuple[list[bool], float]:
    """:func:`take_and_give_back` run in another thread: its result (none if the thread did not
    end within ``timeout`` and 5 s), and the seconds from starting the thread to its end."""
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(take_and_give_back(backend, name, timeout)))
    started = time.monotonic()
    thread.start()
    thread.join(timeout + 5)
    return results, time.monotonic() - started


class TestListingAndAdministration:
    def test_holders_show_owner_token_lease_and_waiters(self, backend: MemoryLockBackend) -> None:
        with backend.lock("listed", ttl=30, timeout=0) as handle:
            waiter = threading.Thread(target=lambda: take_and_give_back(backend, "listed", 0.5))
            waiter.start()
            time.sleep(0.1)
            (info,) = backend.holders(prefix="listed")
            waiter.join()
            assert info.name == "listed" and info.token == handle.token
        assert info.pid == os.getpid() and info.owner and "MainThread" in info.owner
        assert info.since is not None and info.expires_at is not None
        assert 29 < info.expires_at - time.time() <= 30
        assert info.waiting == 1
        assert info.extra["table"] == backend.table_name

    def test_shared_holders_are_listed_one_by_one(self, backend: MemoryLockBackend) -> None:
        other = MemoryLockBackend(location=backend.location)
        with backend.lock("readers", shared=True, timeout=0), other.lock("readers", shared=True, timeout=0):
            listed = backend.holders(prefix="readers")
            assert [info.shared for info in listed] == [True, True]
            assert len({info.token for info in listed}) == 2
        assert backend.holders(prefix="readers") == []

    def test_force_release_breaks_every_shared_hold(self, backend: MemoryLockBackend) -> None:
        readers = [MemoryLockBackend(location=backend.location).lock("many-readers", shared=True) for _ in range(3)]
        for reader in readers:
            assert reader.acquire(timeout=0)
        assert backend.force_release("many-readers") == 3
        assert not held(backend, "many-readers")
        for reader in readers:
            with pytest.raises(locks.LockLost):
                reader.release()

    def test_a_force_released_hold_is_lost_for_check_extend_and_release(self, backend: MemoryLockBackend) -> None:
        handle = backend.lock("forced", ttl=30)
        assert handle.acquire(timeout=0)
        (entry,) = backend.holds.entries()
        assert backend.check(entry.hold)
        assert backend.force_release("forced") == 1
        assert not backend.check(entry.hold)
        with pytest.raises(locks.LockLost, match="force-released"):
            backend.extend(entry.hold, 5)
        with pytest.raises(locks.LockLost, match="force-released"):
            handle.release()
