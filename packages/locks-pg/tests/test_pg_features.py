"""The rest of django-pglock's features: table locks, lock_timeout, prioritize, lock views, and
``locks list`` / ``locks release`` on PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.contrib.auth.models import User
from django.db import DatabaseError, OperationalError, connections, transaction

import locks
from locks import LockTimeout
from locks_pg import (
    ACCESS_EXCLUSIVE,
    ACCESS_SHARE,
    MODES,
    SHARE_ROW_EXCLUSIVE,
    AdvisoryLockBackend,
    TransactionRequired,
    lock_timeout,
    prioritize,
    table_lock,
    views,
)
from locks_pg._testing import pg_url
from locks_pg.tables import _table_name

URL = pg_url()
pytestmark = pytest.mark.timeout(120)  # a lock wait gone wrong fails, never hangs the run
PG_MODE_NAMES = {mode: "".join(word.capitalize() for word in mode.split()) + "Lock" for mode in MODES}


def setting() -> str:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT current_setting('lock_timeout')")
        return str(cursor.fetchone()[0])


def django_pid() -> int:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


@pytest.fixture
def table() -> Iterator[str]:
    name = f"locks_pg_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id int)")
    yield name
    connections["default"].close()  # no transaction of ours may keep it locked
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
def blocker(table: str) -> Iterator[psycopg.Connection[Any]]:
    """Another session, in a transaction that holds ACCESS EXCLUSIVE on the table."""
    conn = psycopg.connect(URL, application_name="locks-test-blocker")
    conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    yield conn
    try:
        conn.rollback()
    except psycopg.Error:
        pass
    conn.close()


@pytest.fixture(autouse=True)
def _fresh_django_connection() -> Iterator[None]:
    yield
    connections["default"].close()


class TestTableLock:
    def test_outside_a_transaction_is_a_clear_error(self, table: str) -> None:
        with pytest.raises(TransactionRequired, match="atomic"), table_lock(table):
            pass

    @pytest.mark.parametrize("mode", MODES)
    def test_every_mode_locks_the_table_until_the_transaction_ends(self, table: str, mode: str) -> None:
        def modes_held(pid: int) -> list[str]:
            with psycopg.connect(URL, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT mode FROM pg_locks WHERE locktype = 'relation' AND relation = %s::regclass AND pid = %s",
                    (table, pid),
                ).fetchall()
            return [row[0] for row in rows]

        with transaction.atomic():
            with table_lock(table, mode=mode):
                pid = django_pid()
            assert PG_MODE_NAMES[mode] in modes_held(pid)
        assert modes_held(pid) == []

    def test_modes_are_checked_and_forgiving_about_case(self) -> None:
        assert table_lock("t", mode="access_share").mode == ACCESS_SHARE
        with pytest.raises(ValueError):
            table_lock("t", mode="SUPER EXCLUSIVE")
        with pytest.raises(ValueError):
            table_lock()
        with pytest.raises(ValueError):
            table_lock("t", timeout=-1)

    def test_models_and_labels_name_their_tables(self) -> None:
        assert _table_name(User) == "auth_user"
        assert _table_name("auth.User") == "auth_user"
        assert _table_name("audit.events") == "audit.events"

    def test_nowait_fails_at_once_and_keeps_the_transaction(self, table: str, blocker: Any) -> None:
        with transaction.atomic():
            started = time.monotonic()
            with pytest.raises(LockTimeout, match="NOWAIT"), table_lock(table, timeout=0):
                pass
            assert time.monotonic() - started < 2
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT 1")  # the transaction is still usable

    def test_timeout_waits_then_fails_and_restores_lock_timeout(self, table: str, blocker: Any) -> None:
        with transaction.atomic():
            with connections["default"].cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '9s'")
            started = time.monotonic()
            with pytest.raises(LockTimeout), table_lock(table, mode=SHARE_ROW_EXCLUSIVE, timeout=0.3):
                pass
            assert time.monotonic() - started >= 0.3
            assert setting() == "9s"

    def test_timeout_succeeds_when_the_blocker_leaves(self, table: str, blocker: Any) -> None:
        threading.Timer(0.3, blocker.rollback).start()
        with transaction.atomic():
            with table_lock(table, timeout=10):
                assert setting() == "0"

    def test_works_as_a_decorator(self, table: str) -> None:
        @transaction.atomic
        @table_lock(table, mode=ACCESS_EXCLUSIVE)
        def locked() -> int:
            return django_pid()

        assert isinstance(locked(), int)


class TestLockTimeout:
    def test_sets_and_restores_the_session_value(self) -> None:
        assert setting() == "0"
        with lock_timeout(1.5):
            assert setting() == "1500ms"
        assert setting() == "0"

    def test_nests(self) -> None:
        with lock_timeout(2):
            with lock_timeout(0.5):
                assert setting() == "500ms"
            assert setting() == "2s"
        assert setting() == "0"

    def test_restores_a_previous_non_default_value(self) -> None:
        with connections["default"].cursor() as cursor:
            cursor.execute("SET lock_timeout = '3s'")
        with lock_timeout(1):
            assert setting() == "1s"
        assert setting() == "3s"

    def test_inside_an_atomic_block_that_rolls_back(self) -> None:
        with pytest.raises(DatabaseError), transaction.atomic(), lock_timeout(0.5):
            assert setting() == "500ms"
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT 1 / 0")
        assert setting() == "0"
        with transaction.atomic():
            with pytest.raises(DatabaseError), transaction.atomic(), lock_timeout(0.5):
                with connections["default"].cursor() as cursor:
                    cursor.execute("SELECT 1 / 0")
            assert setting() == "0"  # the savepoint's rollback restored it

    def test_bounds_a_lock_wait(self, table: str, blocker: Any) -> None:
        with transaction.atomic(), lock_timeout(0.2):
            started = time.monotonic()
            with pytest.raises(OperationalError), transaction.atomic():
                with connections["default"].cursor() as cursor:
                    cursor.execute(f"LOCK TABLE {table}")
            assert time.monotonic() - started < 5

    def test_works_as_a_decorator_and_checks_its_argument(self) -> None:
        @lock_timeout(0.25)
        def inside() -> str:
            return setting()

        assert inside() == "250ms"
        assert setting() == "0"
        with pytest.raises(ValueError):
            lock_timeout(0)
        with pytest.raises(ValueError):
            lock_timeout(-1)
        with pytest.raises(TypeError):
            lock_timeout("1")  # type: ignore[arg-type]
        with lock_timeout(None):
            assert setting() == "0"


class TestPrioritize:
    def test_terminates_the_blocker_and_only_it(self, table: str, blocker: Any) -> None:
        bystander = psycopg.connect(URL, autocommit=True)
        try:
            blocker_pid = blocker.info.backend_pid
            with transaction.atomic():
                with prioritize(interval=0.2) as p, lock_timeout(30):
                    with connections["default"].cursor() as cursor:
                        cursor.execute(f"LOCK TABLE {table} IN ACCESS SHARE MODE")
            assert p.ended == [blocker_pid]
            with pytest.raises(psycopg.OperationalError):
                blocker.execute("SELECT 1")
            assert bystander.execute("SELECT 1").fetchone() == (1,)
        finally:
            bystander.close()

    def test_cancel_ends_the_blockers_statement(self, table: str) -> None:
        conn = psycopg.connect(URL)
        conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        outcome: list[str] = []

        def busy() -> None:
            try:
                conn.execute("SELECT pg_sleep(30)")
            except psycopg.errors.QueryCanceled:
                outcome.append("cancelled")
                conn.rollback()

        thread = threading.Thread(target=busy)
        thread.start()
        try:
            time.sleep(0.2)
            with transaction.atomic(), prioritize(interval=0.2, action="cancel") as p, lock_timeout(30):
                with connections["default"].cursor() as cursor:
                    cursor.execute(f"LOCK TABLE {table} IN ACCESS SHARE MODE")
            thread.join(10)
            assert outcome == ["cancelled"]
            assert p.ended == [conn.info.backend_pid]
        finally:
            conn.close()

    def test_arguments_are_checked(self) -> None:
        with pytest.raises(ValueError):
            prioritize(interval=0)
        with pytest.raises(ValueError):
            prioritize(action="kill")


class TestViews:
    def test_advisory_locks_show_name_holder_and_waiters(
        self, backend: AdvisoryLockBackend, other: AdvisoryLockBackend, name: str
    ) -> None:
        key = backend.make_key(name)
        with backend.lock(name, timeout=5):
            (holder_pid,) = [e.hold.data.pid for e in backend.holds.entries()]
            waiting = threading.Thread(target=lambda: other.lock(name).acquire(timeout=1))
            waiting.start()
            deadline = time.monotonic() + 5
            while not [w for w in views.blocked("default") if w.key == key]:
                assert time.monotonic() < deadline, "the waiter never showed up"
                time.sleep(0.05)
            rows = [row for row in views.locks("default") if row.key == key]
            held = [row for row in rows if row.granted]
            assert len(held) == 1
            assert held[0].name == name and held[0].pid == holder_pid
            assert held[0].application_name == f"locks:{name}"
            assert held[0].since is not None and abs(held[0].since - time.time()) < 60
            (waiter,) = [w for w in views.blocked("default") if w.key == key]
            assert waiter.blocked_by == (holder_pid,)
            listed = other.holders(prefix=name)
            assert len(listed) == 1 and listed[0].pid == holder_pid and listed[0].waiting == 1
            waiting.join(5)

    def test_labels_can_be_turned_off(self, name: str) -> None:
        quiet = AdvisoryLockBackend(location=URL, options={"LABELS": False})
        try:
            with quiet.lock(name, timeout=5):
                (row,) = [row for row in views.locks("default") if row.key == quiet.make_key(name)]
                assert row.name is None and row.application_name == "locks"
        finally:
            quiet.close()

    def test_table_locks_are_listed_with_their_relation(self, table: str, blocker: Any) -> None:
        rows = [row for row in views.locks("default") if row.relation == table]
        assert rows and rows[0].mode == "AccessExclusiveLock" and rows[0].pid == blocker.info.backend_pid

    def test_foreign_advisory_locks_are_listed_without_a_name(self, backend: AdvisoryLockBackend) -> None:
        key = int(uuid.uuid4().int % 2**62)
        with psycopg.connect(URL, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            listed = [h for h in backend.holders() if h.key == key]
            assert len(listed) == 1 and listed[0].name is None
            assert not [h for h in backend.holders(prefix="") if h.key == key]  # name unknown: no match
            assert backend.force_release(key) == 1

    def test_shared_holders_are_listed_as_shared(
        self, backend: AdvisoryLockBackend, other: AdvisoryLockBackend, name: str
    ) -> None:
        with backend.lock(name, shared=True, timeout=5), other.lock(name, shared=True, timeout=5):
            listed = backend.holders(prefix=name)
            assert len(listed) == 2 and all(h.shared for h in listed)


class TestCommandLine:
    def test_list_and_release(
        self, backend: AdvisoryLockBackend, name: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from locks.cli import main

        handle = backend.lock(name)
        handle.acquire(timeout=5)
        assert main(["list", "--url", URL, "--prefix", name]) == 0
        assert name in capsys.readouterr().out
        assert main(["release", "--url", URL, "--yes", name]) == 0
        assert "released" in capsys.readouterr().out
        with pytest.raises(locks.LockLost):
            handle.release()

    def test_manage_py_locks_list_uses_the_configured_backend(
        self, name: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from django.core.management import call_command

        with locks.lock(name, timeout=5):  # LOCKS["default"]: AdvisoryLockBackend on DATABASES["default"]
            call_command("locks", "list", "--prefix", name)
        assert name in capsys.readouterr().out
