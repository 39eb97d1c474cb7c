"""locks-rowlock beyond the contract: clocks, notifications, cleanup, admin, URLs, settings."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import rowlock_workers
from conftest import VENDOR_ALIASES, migrate
from django.core.exceptions import ImproperlyConfigured

import locks
from locks import LockLost
from locks.backends import NOTIFY
from locks_rowlock import RowLockBackend
from locks_rowlock.models import RowLock
from locks_rowlock.rows import digest_of, display_name
from locks_rowlock.table import unregistered_model

_spawn = multiprocessing.get_context("spawn")


@pytest.fixture
def name() -> str:
    return f"rowlock-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def options(vendor: str) -> dict[str, Any]:
    return {"DATABASE": VENDOR_ALIASES[vendor]}


@pytest.fixture
def backend(options: dict[str, Any]) -> Iterator[RowLockBackend]:
    backend = RowLockBackend("a", options=options)
    yield backend
    backend.close()


@pytest.fixture
def other(options: dict[str, Any]) -> Iterator[RowLockBackend]:
    backend = RowLockBackend("b", options=options)
    yield backend
    backend.close()


def _sql(backend: RowLockBackend, statement: str, params: tuple[Any, ...] = ()) -> int:
    return backend._execute(statement, params)


# -- clocks --------------------------------------------------------------------------------------
def test_clients_with_skewed_clocks_never_both_hold(
    backend: RowLockBackend, options: dict[str, Any], name: str
) -> None:
    """Expiry is the database's business: a client an hour ahead does not see a live lease as
    expired, and a client an hour behind does not keep its lease an hour longer."""
    handle = backend.lock(name, ttl=30)
    assert handle.acquire(timeout=0)
    with _spawn.Pool(1) as pool:
        ahead = pool.apply(rowlock_workers.skewed_attempt, (options, name, 3600.0, 30.0, 0.0))
    assert abs(ahead["clock"] - time.time() - 3600) < 60, "the worker's clock was not skewed"
    assert ahead["got"] is False, "a client whose clock runs ahead took a live lease"
    handle.release()

    # A holder an hour behind takes a 2 s lease: it ends for everyone after 2 s, not an hour later.
    with _spawn.Pool(1) as pool:
        # it keeps working 4.5 s: a lease that outlived its 2 s would keep the taker waiting that long
        result = pool.apply_async(rowlock_workers.skewed_attempt, (options, name, -3600.0, 2.0, 4.5))
        deadline = time.monotonic() + 60
        while not backend.lock(name).locked():
            assert time.monotonic() < deadline, "the skewed holder never took the lock"
            time.sleep(0.05)
        started = time.monotonic()
        taker = backend.lock(name, ttl=30)
        assert taker.acquire(timeout=20)
        waited = time.monotonic() - started
        behind = result.get(60)
    assert behind["got"] is True
    assert waited < 3.5, f"the lease of a client whose clock runs behind lasted {waited:.1f}s"
    assert behind["released"] == "LockLost"  # and its late release left the new holder alone
    assert _held_by_someone(backend, name)
    taker.release()


def _held_by_someone(backend: RowLockBackend, name: str) -> bool:
    return backend.lock(name).locked()


# -- leases and tokens ---------------------------------------------------------------------------
def test_expired_lease_nobody_took_still_releases(backend: RowLockBackend, name: str) -> None:
    # The token did not change: nobody held it meanwhile, so no work overlapped.
    handle = backend.lock(name, ttl=0.3)
    assert handle.acquire(timeout=0)
    time.sleep(0.6)
    assert not handle.locked()
    handle.release()


def test_release_after_force_release_and_retake_leaves_the_new_row(
    backend: RowLockBackend, other: RowLockBackend, name: str
) -> None:
    old = backend.lock(name, ttl=30)
    old.acquire(timeout=0)
    assert other.force_release(name) == 1
    new = other.lock(name, ttl=30)
    assert new.acquire(timeout=0)
    with pytest.raises(LockLost):
        old.release()
    row = _row(backend, name)
    assert row["version"] == new.token and row["expires_at"] is not None
    new.release()


def test_tokens_keep_growing_after_stale_rows_are_removed(backend: RowLockBackend, name: str) -> None:
    with backend.lock(name) as held:
        first = held.token
    _sql(
        backend,
        f"UPDATE {backend.dialect.table} SET acquired_at = {backend.dialect.earlier} WHERE digest = %s",
        (backend.dialect.stale_params(7200)[0], digest_of(backend.make_key(name))),
    )
    assert backend.remove_stale_rows(3600) >= 1
    assert _row(backend, name) is None
    with backend.lock(name) as held:
        assert held.token > first


def test_stale_row_cleanup_never_removes_a_live_lock(backend: RowLockBackend, name: str) -> None:
    with backend.lock(name, ttl=30):
        # held for "two hours" (a long-running job renewing its lease)
        _sql(
            backend,
            f"UPDATE {backend.dialect.table} SET acquired_at = {backend.dialect.earlier} WHERE digest = %s",
            (backend.dialect.stale_params(7200)[0], digest_of(backend.make_key(name))),
        )
        backend.remove_stale_rows(3600)
        assert _row(backend, name) is not None
        assert backend.lock(name).locked()
    with pytest.raises(ValueError):
        backend.remove_stale_rows(1)


def _row(backend: RowLockBackend, name: str) -> dict[str, Any] | None:
    rows = backend._fetch(
        "SELECT version, expires_at FROM locks_rowlock_lock WHERE digest = %s", (digest_of(backend.make_key(name)),)
    )
    return {"version": rows[0][0], "expires_at": rows[0][1]} if rows else None


def test_long_and_hostile_names_are_stored_for_display(backend: RowLockBackend, name: str) -> None:
    long_name = name + "-" + "é" * 5000 + "\x00\udcff🔒"
    with backend.lock(long_name, timeout=0):
        listed = list(backend.holders(prefix=name))
        assert len(listed) == 1
        assert listed[0].name == display_name(long_name)
        assert listed[0].expires_at is not None and listed[0].since is not None
        assert listed[0].expires_at > listed[0].since


# -- waiting -------------------------------------------------------------------------------------
def test_release_wakes_a_waiter_through_notify_on_postgresql(name: str) -> None:
    migrate("pg")
    # A fallback poll of 30 s: only the notification can hand over in time.
    holder = RowLockBackend("h", options={"DATABASE": "pg"})
    waiter = RowLockBackend("w", options={"DATABASE": "pg", "NOTIFY_POLL": 30})
    try:
        assert NOTIFY in waiter.capabilities
        handle = holder.lock(name)
        handle.acquire(timeout=0)
        got: list[float] = []
        thread = threading.Thread(
            target=lambda: got.append(time.monotonic()) if waiter.lock(name).acquire(15) else None
        )
        thread.start()
        deadline = time.monotonic() + 10
        while not waiter._listener or not waiter._listener.ready.is_set():  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)
        released = time.monotonic()
        handle.release()
        thread.join(20)
        assert got and got[0] - released < 5.0
    finally:
        holder.close()
        waiter.close()


def test_waiters_are_counted_so_that_only_a_release_with_waiters_notifies(name: str) -> None:
    migrate("pg")
    holder = RowLockBackend("h", options={"DATABASE": "pg"})
    waiter = RowLockBackend("w", options={"DATABASE": "pg", "NOTIFY_POLL": 30})
    digest = digest_of(holder.make_key(name))

    def waiters() -> int:
        return int(holder._fetch("SELECT waiters FROM locks_rowlock_lock WHERE digest = %s", (digest,))[0][0])

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 10
        while waiters() != count:
            assert time.monotonic() < deadline, f"waiters stayed at {waiters()}, not {count}"
            time.sleep(0.02)

    try:
        handle = holder.lock(name)
        assert handle.acquire(timeout=0)
        assert waiters() == 0
        # a waiter that gives up counts itself out
        assert not waiter.lock(name).acquire(timeout=0.3)
        assert waiters() == 0
        got: list[bool] = []

        def wait() -> None:
            second = waiter.lock(name)
            got.append(second.acquire(15))
            if got[-1]:
                second.release()

        thread = threading.Thread(target=wait)
        thread.start()
        wait_for(1)
        handle.release()  # notifies: the waiter's fallback poll is 30 s
        thread.join(10)
        assert got == [True]
        assert waiters() == 0  # the attempt that took the lock counted the waiter out
    finally:
        holder.close()
        waiter.close()


def test_polling_waiter_gets_the_lock_without_notify(vendor: str, options: dict[str, Any], name: str) -> None:
    holder = RowLockBackend("h", options=options)
    waiter = RowLockBackend("w", options={**options, "NOTIFY": False, "POLL_MAX": 0.02})
    try:
        assert NOTIFY not in waiter.capabilities
        taken = threading.Event()

        def hold() -> None:
            with holder.lock(name, timeout=0):
                taken.set()
                time.sleep(0.3)

        thread = threading.Thread(target=hold)
        thread.start()
        assert taken.wait(10)
        started = time.monotonic()
        assert waiter.lock(name).acquire(timeout=10)
        assert time.monotonic() - started >= 0.2
        thread.join()
    finally:
        holder.close()
        waiter.close()


# -- settings and URLs ---------------------------------------------------------------------------
def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="file database"):
        RowLockBackend(location="rowlock+sqlite:///:memory:")


def test_url_backend_creates_its_table_and_locks(tmp_path: Any, name: str) -> None:
    url = f"rowlock+sqlite://{tmp_path}/locks.db?timeout=20"
    first, second = locks.connect(url), locks.connect(url)
    try:
        assert isinstance(first, RowLockBackend)
        with first.lock(name, timeout=0) as held:
            assert held.token
            assert not second.lock(name).acquire(timeout=0)
        spec = first.spec()
        assert spec.setup is None and spec.location == url
        rebuilt = spec.build()
        assert isinstance(rebuilt, RowLockBackend)
        rebuilt.close()
    finally:
        first.close()
        second.close()


def test_postgresql_url_backend(name: str) -> None:
    import os

    migrate("pg")
    base = os.environ.get("LOCKS_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    backend = locks.connect("rowlock+" + base + "?connect_timeout=5")
    try:
        with backend.lock(name, timeout=0) as held:
            assert held
    finally:
        backend.close()


def test_spec_of_a_databases_alias_configures_django_in_workers() -> None:
    backend = RowLockBackend(options={"DATABASE": "pg"})
    assert backend.spec().setup == "locks_rowlock.setup_django"
    backend.close()


def test_unregistered_model_has_the_columns_of_the_migrated_model() -> None:
    def columns(model: Any) -> list[tuple[str, str, bool, bool]]:
        return [
            (f.column, f.get_internal_type(), f.null, f.primary_key or bool(f.db_index))
            for f in model._meta.local_fields
        ]

    assert columns(unregistered_model()) == columns(RowLock)


def test_locks_configured_through_settings_use_the_lock_table(name: str) -> None:
    migrate("pg")
    with locks.lock(name, timeout=0) as held:
        assert held
        backend = locks.lock_backends["default"] if hasattr(locks, "lock_backends") else None
        if backend is not None:
            assert isinstance(backend, RowLockBackend)


def test_cli_lists_and_force_releases(tmp_path: Any, name: str) -> None:
    import subprocess
    import sys

    url = f"rowlock+sqlite://{tmp_path}/cli.db"
    backend = locks.connect(url)
    cli = [sys.executable, "-c", "import sys; from locks.cli import main; sys.exit(main())"]
    try:
        handle = backend.lock(name, ttl=120)
        handle.acquire(timeout=0)
        listed = subprocess.run([*cli, "list", "--url", url, "--json"], capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert name in listed.stdout
        released = subprocess.run(
            [*cli, "release", "--url", url, name, "--yes"], capture_output=True, text=True, timeout=60
        )
        assert released.returncode == 0, released.stderr
        with pytest.raises(LockLost):
            handle.release()
    finally:
        backend.close()


def test_missing_table_says_to_migrate(tmp_path: Any, name: str) -> None:
    backend = locks.connect(f"rowlock+sqlite://{tmp_path}/empty.db?CREATE_TABLE=false")
    try:
        with pytest.raises(ImproperlyConfigured, match="migrate"):
            backend.lock(name).acquire(timeout=0)
    finally:
        backend.close()


def test_notify_listener_closes_when_idle_and_comes_back(name: str) -> None:
    migrate("pg")
    holder = RowLockBackend("h", options={"DATABASE": "pg"})
    waiter = RowLockBackend("w", options={"DATABASE": "pg"})
    try:
        listener = waiter._listener
        assert listener is not None
        listener.idle_timeout = 0.2  # type: ignore[misc]
        for _ in range(2):
            with holder.lock(name, timeout=0):
                assert not waiter.lock(name).acquire(timeout=0.7)
                assert listener._thread is not None
            deadline = time.monotonic() + 10
            while listener._thread is not None:
                assert time.monotonic() < deadline, "the idle listener kept its connection"
                time.sleep(0.05)
    finally:
        holder.close()
        waiter.close()


def test_nothing_poisons_the_callers_transaction(
    vendor: str, backend: RowLockBackend, other: RowLockBackend, name: str
) -> None:
    from django.db import connections, transaction

    alias = VENDOR_ALIASES[vendor]
    with other.lock(name, timeout=0), transaction.atomic(using=alias):
        # a busy attempt and a failed release inside the caller's transaction...
        assert not backend.lock(name).acquire(timeout=0.05)
        with pytest.raises(locks.LockNotHeld):
            backend.lock(name).release()
        # ...leave it usable
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone()[0] == 1


def _child_tries(backend: RowLockBackend, name: str, results: Any) -> None:
    results.put(backend.lock(name).acquire(timeout=0))
    backend.close()  # must not close the parent's connections


def test_a_forked_child_uses_its_own_connections(backend: RowLockBackend, name: str) -> None:
    handle = backend.lock(name)
    handle.acquire(timeout=0)
    fork = multiprocessing.get_context("fork")
    results = fork.Queue()
    child = fork.Process(target=_child_tries, args=(backend, name, results))
    child.start()
    assert results.get(timeout=60) is False  # the parent's hold is not the child's
    child.join(30)
    handle.release()  # the parent's connections still work
    assert not backend.lock(name).locked()


def test_a_pooled_connection_killed_while_idle_is_replaced(name: str) -> None:
    migrate("pg")
    backend = RowLockBackend("killed", options={"DATABASE": "pg"})
    admin = RowLockBackend("killer", options={"DATABASE": "pg"})
    try:
        with backend.lock(name, timeout=0):
            pids = backend._fetch("SELECT pg_backend_pid()", ())
        admin._fetch("SELECT pg_terminate_backend(%s)", (pids[0][0],))
        time.sleep(0.2)
        with backend.lock(name, timeout=0) as held:  # on a fresh connection
            assert held
    finally:
        backend.close()
        admin.close()
