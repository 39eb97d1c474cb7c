"""What the contract does not pin down for MySQL/MariaDB user locks: sessions, killed connections,
deadlocks, key mapping, listing, KILL, round trips, fork safety."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from locks import BackendUnavailable, LockError, LockLost, NotSupported
from locks.cli import main as cli
from locks.deadline import MARGIN
from locks_mysql import LockDeadlock, UserLockBackend
from locks_mysql._testing import mysql_url


@pytest.fixture
def backend(server: Any) -> Iterator[UserLockBackend]:
    backend = UserLockBackend.from_url(mysql_url())
    yield backend
    backend.close()


@pytest.fixture
def other(server: Any) -> Iterator[UserLockBackend]:
    backend = UserLockBackend.from_url(mysql_url())
    yield backend
    backend.close()


def kill(server: Any, connection_id: int) -> None:
    server.cursor().execute(f"KILL CONNECTION {int(connection_id)}")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # KILL is asynchronous
        cursor = server.cursor()
        cursor.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", (connection_id,))
        if cursor.fetchone()[0] == 0:
            return
        time.sleep(0.01)


def free(backend: UserLockBackend, name: str) -> bool:
    probe = backend.lock(name, timeout=0)
    if probe.acquire():
        probe.release()
        return True
    return False


# -- names ---------------------------------------------------------------------------------------
def test_keys_are_namespaced_by_database_like_django_mysql(backend: UserLockBackend) -> None:
    database = backend.database_name
    assert backend.make_key("nightly-report") == f"{database}.nightly-report"


def test_keys_fit_in_64_characters_and_hash_what_does_not(backend: UserLockBackend) -> None:
    for name in ("x" * 64, "ü" * 10, "a b", "x" * 10_000, "Report"):
        key = backend.make_key(name)
        assert isinstance(key, str) and len(key) <= 64 and key.isascii()
        assert key.startswith(backend.namespace)
        assert "~" in key
    assert backend.make_key("Report") != backend.make_key("report")


def test_another_database_or_prefix_is_another_namespace() -> None:
    a = UserLockBackend.from_url("mysql://root@127.0.0.1/app_one")
    b = UserLockBackend.from_url("mysql://root@127.0.0.1/app_two")
    c = UserLockBackend.from_url("mysql://root@127.0.0.1/app_one", KEY_PREFIX="v2:")
    keys = {backend.make_key("job") for backend in (a, b, c)}
    assert keys == {"app_one.job", "app_two.job", "app_one.v2:job"}
    long = UserLockBackend.from_url("mysql://root@127.0.0.1/" + "Very_Long_Database_Name_" * 2)
    key = long.make_key("job")
    assert len(long.namespace) == 17 and key == long.namespace + "job"


def test_names_differing_in_case_are_distinct_locks_on_either_server(
    backend: UserLockBackend, other: UserLockBackend, unique: str
) -> None:
    # MySQL folds the case of lock names, MariaDB does not: hashing upper-case names hides that.
    with backend.lock(unique + "-Case", timeout=0):
        assert free(other, unique + "-case")
        assert not free(other, unique + "-Case")


# -- sessions ------------------------------------------------------------------------------------
def test_a_thread_holds_several_locks_on_one_session(backend: UserLockBackend, unique: str) -> None:
    names = [f"{unique}-{i}" for i in range(3)]
    handles = [backend.lock(name, timeout=5) for name in names]
    for handle in handles:
        handle.acquire()
    holders = {backend.holder_id(name) for name in names}
    assert backend.is_held(names[0])
    assert len(holders) == 1 and None not in holders
    for handle in (handles[1], handles[0], handles[2]):  # any order
        handle.release()
    assert all(backend.holder_id(name) is None for name in names)
    assert not backend.is_held(names[0])


def test_threads_hold_on_separate_sessions(backend: UserLockBackend, unique: str) -> None:
    ids: list[int | None] = []
    barrier = threading.Barrier(2)

    def hold(name: str) -> None:
        with backend.lock(name, timeout=5):
            ids.append(backend.holder_id(name))
            barrier.wait(5)

    threads = [threading.Thread(target=hold, args=(f"{unique}-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 2


def test_locks_never_live_on_djangos_connection(backend: UserLockBackend, unique: str) -> None:
    from django.db import connection

    backend_via_alias = UserLockBackend(options={"DATABASE": "default"})
    try:
        with backend_via_alias.lock(unique, timeout=5):
            with connection.cursor() as cursor:
                cursor.execute("SELECT CONNECTION_ID()")
                (django_id,) = cursor.fetchone()
            assert backend.holder_id(unique) not in (None, django_id)
            connection.close()
            assert backend.holder_id(unique) is not None
    finally:
        backend_via_alias.close()


def test_acquire_and_release_are_one_round_trip_each(backend: UserLockBackend, unique: str) -> None:
    handle = backend.lock(unique, timeout=5)
    handle.acquire()
    session = handle._current_entry().hold.data
    handle.release()

    def questions() -> int:
        row = session.row("SHOW SESSION STATUS LIKE 'Questions'")
        return int(row[1])

    before = questions()
    for _ in range(5):
        handle.acquire()
        assert handle._current_entry().hold.data is session  # the pooled session again
        handle.release()
    assert questions() - before == 5 * 2 + 1  # + the SHOW itself


def test_fractional_timeout_waits_on_the_server(backend: UserLockBackend, other: UserLockBackend, unique: str) -> None:
    with other.lock(unique, timeout=5):
        started = time.monotonic()
        assert backend.lock(unique).acquire(timeout=0.25) is False
        elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 0.25 + 0.5


def test_lock_order_deadlock_raises_lock_deadlock(backend: UserLockBackend, unique: str) -> None:
    a, b = unique + "-a", unique + "-b"
    outcomes: dict[str, Any] = {}
    both_hold = threading.Barrier(2)

    def worker(first: str, second: str, delay: float) -> None:
        with backend.lock(first, timeout=5):
            both_hold.wait(5)
            time.sleep(delay)
            started = time.monotonic()
            try:
                with backend.lock(second, timeout=20):
                    outcomes[first] = "acquired"
            except LockDeadlock as exc:
                outcomes[first] = exc
            outcomes[first + "-elapsed"] = time.monotonic() - started

    threads = [
        threading.Thread(target=worker, args=(a, b, 0.0)),
        threading.Thread(target=worker, args=(b, a, 0.3)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    errors = [v for k, v in outcomes.items() if isinstance(v, LockDeadlock)]
    assert len(errors) == 1, outcomes
    assert "deadlock" in str(errors[0])
    assert [v for v in outcomes.values() if v == "acquired"], outcomes  # the other one went on
    assert max(v for k, v in outcomes.items() if k.endswith("-elapsed")) < 10
    assert free(backend, a) and free(backend, b)


# -- lost connections ----------------------------------------------------------------------------
def test_killed_holder_connection_frees_the_lock_and_release_raises_lock_lost(
    backend: UserLockBackend, other: UserLockBackend, server: Any, unique: str
) -> None:
    handle = backend.lock(unique, timeout=5)
    handle.acquire()
    kill(server, backend.holder_id(unique))  # type: ignore[arg-type]
    taker = other.lock(unique)
    assert taker.acquire(timeout=5)
    with pytest.raises(LockLost):
        handle.release()
    taker.release()
    # the backend goes on with a new connection
    with backend.lock(unique, timeout=5):
        pass


def test_watchdog_calls_on_lost_when_the_connection_dies(server: Any, unique: str) -> None:
    watcher = UserLockBackend.from_url(mysql_url(), WATCHDOG=True)
    watcher.watchdog_interval = 0.2  # type: ignore[misc]
    lost = threading.Event()
    handle = watcher.lock(unique, timeout=5, on_lost=lambda lock: lost.set())
    try:
        handle.acquire()
        kill(server, watcher.holder_id(unique))  # type: ignore[arg-type]
        assert lost.wait(10)
        assert handle.lost
        with pytest.raises(LockLost):
            handle.release()
    finally:
        watcher.close()


def test_dead_idle_connection_is_replaced_without_error(backend: UserLockBackend, server: Any, unique: str) -> None:
    with backend.lock(unique, timeout=5):
        holder = backend.holder_id(unique)
    kill(server, holder)  # type: ignore[arg-type]  # the idle pooled session
    with backend.lock(unique, timeout=5):
        assert backend.holder_id(unique) not in (None, holder)


def test_new_lock_after_the_threads_session_died(backend: UserLockBackend, server: Any, unique: str) -> None:
    first = backend.lock(unique + "-1", timeout=5)
    first.acquire()
    kill(server, backend.holder_id(unique + "-1"))  # type: ignore[arg-type]
    second = backend.lock(unique + "-2", timeout=5)
    second.acquire()  # on a fresh session, not the dead one
    assert backend.holder_id(unique + "-2") is not None
    with pytest.raises(LockLost):
        first.release()
    second.release()


def test_forked_child_does_not_drop_the_parents_lock(
    backend: UserLockBackend, other: UserLockBackend, unique: str
) -> None:
    with backend.lock(unique, timeout=5) as held:
        session = held._current_entry().hold.data
        pid = os.fork()
        if pid == 0:  # the child lets go of everything it inherited, connections included
            try:
                backend.close()
                try:
                    session.conn.close()  # without the fork hook this would end the parent's session
                except Exception:
                    pass
                gc.collect()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(0.1)
        assert not free(other, unique)
    assert free(other, unique)


def test_async_holds_use_a_session_each(backend: UserLockBackend, unique: str) -> None:
    async def main() -> set[int | None]:
        async with backend.alock(unique + "-1", timeout=5), backend.alock(unique + "-2", timeout=5):
            return {backend.holder_id(unique + "-1"), backend.holder_id(unique + "-2")}

    ids = asyncio.run(main())
    assert len(ids) == 2 and None not in ids


# -- listing and force release --------------------------------------------------------------------
def test_holders_give_the_connection_and_list_hashed_names_by_key(
    backend: UserLockBackend, other: UserLockBackend, unique: str
) -> None:
    plain, hashed = unique + "-plain", unique + "-Hashed Name"
    with backend.lock(plain, timeout=5), backend.lock(hashed, timeout=5):
        listed = {h.key: h for h in other.holders(prefix=unique)}
        holder = backend.holder_id(plain)
        assert listed[backend.make_key(plain)].name == plain
        assert listed[backend.make_key(hashed)].name is None
        for info in listed.values():
            assert info.extra["connection_id"] == holder
            assert f"connection {holder}" in (info.owner or "")
    assert not other.holders(prefix=unique)


def test_holders_ignore_other_namespaces(backend: UserLockBackend, unique: str) -> None:
    elsewhere = UserLockBackend.from_url(mysql_url(), KEY_PREFIX="elsewhere:")
    with backend.lock(unique, timeout=5):
        assert not [h for h in elsewhere.holders() if unique in h.key]


def test_force_release_kills_the_holder(backend: UserLockBackend, other: UserLockBackend, unique: str) -> None:
    assert other.force_release(unique) == 0
    handle = backend.lock(unique, timeout=5)
    handle.acquire()
    assert other.force_release(unique) == 1
    assert free(other, unique)
    with pytest.raises(LockLost):
        handle.release()


def test_cli_lists_and_releases_with_confirmation(
    backend: UserLockBackend, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    handle = backend.lock(unique, timeout=5)
    handle.acquire()
    assert cli(["list", "--url", mysql_url(), "--prefix", unique, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [entry["name"] for entry in listed] == [unique]
    assert cli(["release", "--url", mysql_url(), unique]) != 0  # no terminal, no --yes: refused
    capsys.readouterr()
    assert backend.holder_id(unique) is not None
    assert cli(["release", "--url", mysql_url(), unique, "--yes"]) == 0
    assert backend.holder_id(unique) is None
    with pytest.raises(LockLost):
        handle.release()


def test_unreachable_server_is_backend_unavailable_for_every_operation() -> None:
    backend = UserLockBackend.from_url("mysql://root@127.0.0.1:1/test?connect_timeout=2")
    with pytest.raises(BackendUnavailable):
        backend.lock("x").acquire(timeout=0)
    with pytest.raises(BackendUnavailable):
        backend.holders()
    with pytest.raises(BackendUnavailable):
        backend.force_release("x")


def test_shared_locks_are_not_supported(backend: UserLockBackend, unique: str) -> None:
    with pytest.raises(NotSupported):
        backend.lock(unique, shared=True).acquire()


def test_whole_second_waits_as_on_mysql_end_on_time(
    backend: UserLockBackend, other: UserLockBackend, unique: str
) -> None:
    # A timeout just short of a whole second must not be rounded up to one on the server.
    backend.fractional_waits = False
    waits = (0.97, 0.98, 1.97)

    async def async_waits() -> list[float]:
        late = []
        for wait in waits:
            handle = backend.alock(unique)
            started = time.monotonic()
            assert await handle.acquire(timeout=wait) is False
            late.append(time.monotonic() - started - wait)
        return late

    with other.lock(unique, timeout=5):
        late = []
        for wait in waits:
            handle = backend.lock(unique)
            started = time.monotonic()
            assert handle.acquire(timeout=wait) is False
            late.append(time.monotonic() - started - wait)
        async_late = asyncio.run(async_waits())
    for api, lateness in (("sync", late), ("asyncio", async_late)):
        assert min(lateness) >= 0
        assert sorted(lateness)[1] <= MARGIN, f"{api}: late by {[round(x * 1000, 1) for x in lateness]} ms"


def test_whole_second_waits_as_on_mysql_keep_the_timeout(
    backend: UserLockBackend, other: UserLockBackend, unique: str
) -> None:
    # MySQL rounds GET_LOCK's timeout to whole seconds: the backend waits the whole seconds on
    # the server and polls the rest. MariaDB made to behave so exercises that path.
    backend.fractional_waits = False
    with other.lock(unique, timeout=5):
        for wait in (0.3, 1.2):
            started = time.monotonic()
            assert backend.lock(unique).acquire(timeout=wait) is False
            elapsed = time.monotonic() - started
            assert wait <= elapsed < wait + 0.5
    held = threading.Event()

    def hold_briefly() -> None:
        with other.lock(unique, timeout=5):
            held.set()
            time.sleep(0.2)

    thread = threading.Thread(target=hold_briefly)
    thread.start()
    assert held.wait(5)
    waiter = backend.lock(unique)
    assert waiter.acquire(timeout=0.9)  # freed while the poll of the fraction runs
    waiter.release()
    thread.join()


def test_blocking_calls_of_two_tasks_on_one_thread_still_exclude(
    backend: UserLockBackend, other: UserLockBackend, unique: str
) -> None:
    # Each task is its own holder, but both run on the loop's thread, whose session holds the
    # lock: asked again on that session, the server would grant it a second time.
    async def main() -> bool:
        async def first() -> bool:
            return backend.lock(unique).acquire(timeout=0)

        async def second() -> bool:
            return backend.lock(unique).acquire(timeout=0)

        assert await asyncio.create_task(first())
        return await asyncio.create_task(second())

    try:
        assert asyncio.run(main()) is False
    finally:
        other.force_release(unique)


def test_wait_interrupted_by_kill_query_is_a_lock_error(
    backend: UserLockBackend, other: UserLockBackend, server: Any, unique: str
) -> None:
    outcome: list[BaseException | bool] = []
    with other.lock(unique, timeout=5):

        def wait() -> None:
            try:
                outcome.append(backend.lock(unique).acquire(timeout=20))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=wait)
        thread.start()
        key = backend.make_key(unique)
        waiter = None
        deadline = time.monotonic() + 5
        while waiter is None and time.monotonic() < deadline:
            cursor = server.cursor()
            cursor.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE %s AND ID <> CONNECTION_ID()",
                (f"%GET_LOCK('{key}'%",),
            )
            row = cursor.fetchone()
            waiter = row[0] if row else None
            time.sleep(0.02)
        assert waiter is not None, "the waiter never showed up in the process list"
        started = time.monotonic()
        server.cursor().execute(f"KILL QUERY {int(waiter)}")
        thread.join(10)
        assert time.monotonic() - started < 5
    assert len(outcome) == 1
    assert isinstance(outcome[0], LockError) and not isinstance(outcome[0], LockLost), outcome
    assert "interrupted" in str(outcome[0]) or "NULL" in str(outcome[0])
    with backend.lock(unique, timeout=5):  # the backend goes on
        pass


def test_force_release_without_the_privilege_is_refused(backend: UserLockBackend, server: Any, unique: str) -> None:
    user = "lk_" + unique.replace("-", "_")[-12:]
    database = backend.database_name
    cursor = server.cursor()
    # No password: MySQL 8's caching_sha2_password then needs no secure connection either.
    cursor.execute(f"CREATE USER '{user}'@'%'")
    try:
        cursor.execute(f"GRANT SELECT ON `{database}`.* TO '{user}'@'%'")
        parts = urlsplit(mysql_url())
        url = f"mysql://{user}@{parts.hostname}:{parts.port or 3306}{parts.path}"
        limited = UserLockBackend.from_url(url)
        try:
            with backend.lock(unique, timeout=5):
                with pytest.raises(NotSupported, match="KILL"):
                    limited.force_release(unique)
                assert backend.holder_id(unique) is not None  # still held
        finally:
            limited.close()
    finally:
        cursor.execute(f"DROP USER '{user}'@'%'")


def test_threads_taking_two_locks_in_order_exclude_on_both(
    backend: UserLockBackend, other: UserLockBackend, unique: str
) -> None:
    counters = {"a": 0, "b": 0}
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        client = backend if index % 2 else other
        try:
            for _ in range(15):
                with client.lock(unique + "-a", timeout=30):
                    value = counters["a"]
                    with client.lock(unique + "-b", timeout=30):
                        counters["b"] += 1
                    time.sleep(0.0005)
                    counters["a"] = value + 1
                with client.lock(unique + "-b", timeout=30):
                    value = counters["b"]
                    time.sleep(0.0005)
                    counters["b"] = value + 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert counters == {"a": 60, "b": 120}


def test_server_waits_end_before_the_clients_read_timeout(other: UserLockBackend, server: Any, unique: str) -> None:
    backend = UserLockBackend.from_url(mysql_url(), READ_TIMEOUT=2)
    try:
        assert backend.wait_slice < 2
        got: list[bool] = []
        with backend.lock(unique + "-held", timeout=5):  # the thread's session holds a lock
            holder = backend.holder_id(unique + "-held")
            with other.lock(unique, timeout=5):
                # longer than read_timeout: the server wait must come in slices
                got.append(backend.lock(unique).acquire(timeout=3))
            assert got == [False]
            assert backend.holder_id(unique + "-held") == holder  # the session survived the wait
    finally:
        backend.close()
