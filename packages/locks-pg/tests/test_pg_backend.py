"""What the advisory lock backend adds to the contract: keys, round trips, server-side waits,
connection safety (Django, pools, pgbouncer), lost locks, fencing and the transaction scope."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import django
import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction

import locks
from locks import LockLost, NotSupported
from locks.backends import ASYNC_NATIVE, FENCING, WATCHDOG
from locks_pg import (
    PG_OPTIONS,
    AdvisoryLockBackend,
    PoolerDetected,
    TransactionAdvisoryLockBackend,
    TransactionRequired,
    advisory_key,
    key_from_pg_locks,
    pg_locks_ids,
)
from locks_pg._testing import MakeBackend, admin, pg_url, terminate
from locks_pg.connection import PgConnection
from locks_pg.session_scope import IDLE_LABEL_RESET

URL = pg_url()
pytestmark = pytest.mark.timeout(120)  # a lock wait gone wrong fails, never hangs the run


def advisory_pids(key: int, granted: bool = True) -> list[int]:
    classid, objid = pg_locks_ids(key)
    rows = admin(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND classid = %s::int8::oid "
        "AND objid = %s::int8::oid AND granted = %s",
        (classid, objid, granted),
    )
    return [row[0] for row in rows]


@pytest.fixture
def backend(make_backend: MakeBackend) -> AdvisoryLockBackend:
    return make_backend(FENCING=True)


@pytest.fixture
def other(make_backend: MakeBackend) -> AdvisoryLockBackend:
    return make_backend("other", FENCING=True)


@pytest.fixture
def xact() -> Iterator[TransactionAdvisoryLockBackend]:
    backend = TransactionAdvisoryLockBackend(alias="xact", options={"database": "default", "FENCING": True})
    yield backend
    backend.close()


class TestKeys:
    def test_names_hash_to_the_documented_int64(self, backend: AdvisoryLockBackend) -> None:
        expected = int.from_bytes(hashlib.sha256(b"invoices:close-month").digest()[:8], "big", signed=True)
        assert advisory_key("invoices:close-month") == expected
        assert backend.make_key("invoices:close-month") == expected
        assert AdvisoryLockBackend(location=URL, options={"KEY_PREFIX": "app:"}).make_key("x") == advisory_key(
            "x", prefix="app:"
        )

    def test_django_pglock_keys_for_a_gradual_migration(self) -> None:
        backend = AdvisoryLockBackend(location=URL, options={"KEYS": "django-pglock"})
        little = int.from_bytes(hashlib.sha256(b"nightly").digest()[:8], "little", signed=True)
        assert backend.make_key("nightly") == little
        assert backend.make_key(7) == 7
        with pytest.raises(ImproperlyConfigured):
            AdvisoryLockBackend(location=URL, options={"KEYS": "crc32"})

    def test_int_names_are_keys_as_they_are(self, backend: AdvisoryLockBackend) -> None:
        assert backend.make_key(backend.validate_name(-42)) == -42
        with pytest.raises(ValueError):
            backend.lock(2**63)
        with pytest.raises(ValueError):
            advisory_key(-(2**63) - 1)
        with pytest.raises(TypeError):
            advisory_key(1.5)  # type: ignore[arg-type]

    @pytest.mark.parametrize("key", [-1, -(2**63), 2**63 - 1, 5, -123456789012, 2**32])
    def test_pg_locks_ids_are_what_pg_locks_shows(self, backend: AdvisoryLockBackend, key: int) -> None:
        # A unique key per run: these integers are shared with everyone on the server.
        with backend.lock(key, timeout=5):
            classid, objid = pg_locks_ids(key)
            rows = admin(
                "SELECT classid::int8, objid::int8 FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
                "AND pid = ANY(%s)",
                ([c.pid for c in _held_connections(backend)],),
            )
            assert (classid, objid) in rows
            assert key_from_pg_locks(classid, objid) == key

    def test_pg_locks_ids_of_a_negative_key_are_unsigned(self) -> None:
        assert pg_locks_ids(-1) == (2**32 - 1, 2**32 - 1)
        assert pg_locks_ids(-(2**63)) == (2**31, 0)
        with pytest.raises(ValueError):
            key_from_pg_locks(-1, 0)


def _held_connections(backend: AdvisoryLockBackend) -> list[PgConnection]:
    return [entry.hold.data for entry in backend.holds.entries()]


class TestOptions:
    @pytest.mark.parametrize(
        "options",
        [
            {"SCOPE": "statement"},
            {"SCOPE": "transaction"},  # that is the other class
            {"POOLER": "transaction"},
            {"FENCING_SEQUENCE": "x; DROP TABLE y"},
            {"FENCING": "maybe"},
            {"MAX_IDLE": -1},
            {"CONNECT_TIMEOUT": "soon"},
            {"FENCNIG": True},  # neither an option nor a libpq parameter
            {"sslmdoe": "require"},
        ],
    )
    def test_bad_options_are_refused_before_any_connection(self, options: dict[str, Any]) -> None:
        with pytest.raises(ImproperlyConfigured):
            AdvisoryLockBackend(location="postgresql://nobody@127.0.0.1:9/none", options=options)

    def test_a_typo_is_refused_with_the_alias_and_the_closest_spelling(self) -> None:
        with pytest.raises(ImproperlyConfigured) as info:
            locks.connect(URL, FENCNIG=True)
        assert "AdvisoryLockBackend (alias 'url')" in str(info.value)
        assert "nor a parameter of libpq; did you mean 'FENCING'?" in str(info.value)
        with pytest.raises(ImproperlyConfigured, match="did you mean 'sslmode'"):
            AdvisoryLockBackend(location=URL, options={"sslmdoe": "require"})

    def test_libpq_parameters_pass_through(self) -> None:
        backend = AdvisoryLockBackend(location=URL, options={"sslmode": "disable", "FENCING": True})
        assert backend.options == {"sslmode": "disable"}
        with backend.lock(f"libpq-{uuid.uuid4().hex}", timeout=5):
            pass
        backend.close()

    def test_the_scope_is_the_class(self) -> None:
        with pytest.raises(ImproperlyConfigured, match=r"use BACKEND 'locks_pg\.TransactionAdvisoryLockBackend'"):
            AdvisoryLockBackend(location=URL, options={"SCOPE": "transaction"})
        with pytest.raises(ImproperlyConfigured, match="set OPTIONS\\['DATABASE'\\]"):
            TransactionAdvisoryLockBackend(location=URL)
        AdvisoryLockBackend(location=URL, options={"scope": "Session"}).close()  # says what it is: fine

    def test_capabilities_are_known_from_the_options(self) -> None:
        assert FENCING in AdvisoryLockBackend.capabilities_with({"FENCING": True})
        assert FENCING not in AdvisoryLockBackend.capabilities_with()
        assert WATCHDOG in AdvisoryLockBackend.capabilities_with()
        assert WATCHDOG not in TransactionAdvisoryLockBackend.capabilities_with({"DATABASE": "default"})
        assert ASYNC_NATIVE not in TransactionAdvisoryLockBackend.capabilities_with({"DATABASE": "default"})
        for cls, options in (
            (AdvisoryLockBackend, {"FENCING": "1"}),
            (TransactionAdvisoryLockBackend, {"DATABASE": "default"}),
        ):
            backend = cls(location=URL, options=options)
            assert backend.capabilities == cls.capabilities_with(options)
            backend.close()

    def test_the_settings_page_shows_the_declared_options(self) -> None:
        from pathlib import Path

        from locks.backends.options import options_table

        page = Path(__file__).resolve().parents[3] / "docs" / "pages" / "backends" / "postgresql.md"
        table = options_table(PG_OPTIONS)
        assert table in page.read_text(encoding="utf-8"), f"docs/pages/backends/postgresql.md must show:\n{table}"

    def test_a_location_or_a_database_is_needed(self) -> None:
        with pytest.raises(ImproperlyConfigured):
            AdvisoryLockBackend()

    def test_url_query_gives_our_options_and_keeps_libpq_ones(self) -> None:
        backend = locks.connect(URL + "?FENCING=true&sslmode=disable")
        assert isinstance(backend, AdvisoryLockBackend)
        assert backend.fencing is True
        assert "FENCING" not in backend._factory.conninfo
        assert "sslmode=disable" in backend._factory.conninfo
        with backend.lock(f"url-{uuid.uuid4().hex}", timeout=5) as held:
            assert isinstance(held.token, int)
        backend.close()

    def test_no_fencing_by_default(self) -> None:
        backend = locks.connect(URL)
        with backend.lock(f"plain-{uuid.uuid4().hex}", timeout=5) as held:
            with pytest.raises(NotSupported):
                held.token
        backend.close()

    def test_database_must_be_postgresql_and_exist(self) -> None:
        with pytest.raises(ImproperlyConfigured, match="not an alias"):
            AdvisoryLockBackend(options={"database": "nope"})


class TestRoundTrips:
    def test_uncontended_acquire_and_release_are_one_statement_each(
        self, backend: AdvisoryLockBackend, name: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        with backend.lock(name + "-warm", timeout=5):
            pass
        calls: list[str] = []
        original = PgConnection.execute

        def counting(self: PgConnection, sql: Any, params: Any = None) -> Any:
            calls.append(str(sql))
            return original(self, sql, params)

        monkeypatch.setattr(PgConnection, "execute", counting)
        for options in ({"timeout": 0}, {"timeout": 5}, {"timeout": None}):
            calls.clear()
            handle = backend.lock(name, **options)
            assert handle.acquire()
            assert len(calls) == 1, calls
            assert isinstance(handle.token, int)  # the token came with it
            handle.release()
            assert len(calls) == 2, calls

    def test_waiting_happens_on_the_server_without_polling(
        self, backend: AdvisoryLockBackend, other: AdvisoryLockBackend, name: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[str] = []
        original = PgConnection.execute

        def counting(self: PgConnection, sql: Any, params: Any = None) -> Any:
            calls.append(str(sql))
            return original(self, sql, params)

        holder = other.lock(name)
        holder.acquire(timeout=5)
        monkeypatch.setattr(PgConnection, "execute", counting)
        got: list[bool] = []

        def waiter() -> None:
            handle = backend.lock(name)
            got.append(handle.acquire(timeout=30))
            handle.release()

        thread = threading.Thread(target=waiter)
        thread.start()
        deadline = time.monotonic() + 10
        while not advisory_pids(backend.make_key(name), granted=False):
            assert time.monotonic() < deadline, "no session waits on the server"
            time.sleep(0.05)
        time.sleep(0.5)
        waits = [c for c in calls if "pg_advisory_lock(" in c]
        assert len(waits) == 1, calls  # one statement, waiting: no polling
        holder.release()
        thread.join(10)
        assert got == [True]

    def test_a_timed_out_wait_leaves_the_session_as_it_was(
        self, backend: AdvisoryLockBackend, other: AdvisoryLockBackend, name: str
    ) -> None:
        with other.lock(name, timeout=5):
            assert backend.lock(name).acquire(timeout=0.2) is False
        conn = backend._factory.idle()
        assert conn is not None
        assert conn.execute("SELECT current_setting('lock_timeout')")[0] == "0"
        assert conn.raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert (
            conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s", (conn.pid,))[0] == 0
        )
        backend._factory.put(conn)

    def test_waits_longer_than_lock_timeouts_range_go_on_in_parts(
        self, backend: AdvisoryLockBackend, other: AdvisoryLockBackend, name: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import locks_pg.session_scope

        monkeypatch.setattr(locks_pg.session_scope, "_MAX_LOCK_TIMEOUT_MS", 100)
        with other.lock(name, timeout=5):
            started = time.monotonic()
            assert backend.lock(name).acquire(timeout=0.5) is False
            assert time.monotonic() - started >= 0.5

        async def main() -> bool:
            return await backend.alock(name).acquire(timeout=0.3)

        with other.lock(name, timeout=5):
            started = time.monotonic()
            assert asyncio.run(main()) is False
            assert time.monotonic() - started >= 0.3


class TestConnectionSafety:
    def test_idle_connections_kept_for_reuse_hold_no_lock(self, backend: AdvisoryLockBackend, name: str) -> None:
        both = threading.Barrier(2)

        def hold(suffix: str, shared: bool) -> None:
            with backend.lock(name + suffix, shared=shared, timeout=5), backend.lock(name + suffix + "-2", timeout=5):
                both.wait(5)  # two threads hold at once: two sessions

        threads = [threading.Thread(target=hold, args=("-a", False)), threading.Thread(target=hold, args=("-b", True))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        pids = [conn.pid for conn in backend._factory._idle]
        assert len(pids) == 2
        assert not admin("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND pid = ANY(%s)", (pids,))
        # an idle session names no lock: the keeper's sweep renames it (IDLE_LABEL_RESET)
        deadline = time.monotonic() + IDLE_LABEL_RESET + 2
        while (labels := admin("SELECT application_name FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))) != [
            ("locks",),
            ("locks",),
        ]:
            assert time.monotonic() < deadline, labels
            time.sleep(0.02)

    def test_a_threads_holds_share_its_session(self, backend: AdvisoryLockBackend, name: str) -> None:
        with backend.lock(name + "-a", timeout=5):
            with backend.lock(name + "-b", timeout=5), backend.lock(name + "-c", shared=True, timeout=5):
                pids = {c.pid for c in _held_connections(backend)}
                assert len(pids) == 1
                other_thread: list[int] = []

                def elsewhere() -> None:
                    with backend.lock(name + "-d", timeout=5):
                        other_thread.extend(advisory_pids(backend.make_key(name + "-d")))

                thread = threading.Thread(target=elsewhere)
                thread.start()
                thread.join(10)
                assert len(other_thread) == 1 and other_thread[0] not in pids  # a session per thread

    def test_the_lock_is_never_on_djangos_connection(self, name: str) -> None:
        backend = AdvisoryLockBackend(options={"database": "default"})
        try:
            with backend.lock(name, timeout=5):
                with connections["default"].cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    django_pid = cursor.fetchone()[0]
                assert django_pid not in advisory_pids(backend.make_key(name))
                connections["default"].close()
                assert advisory_pids(backend.make_key(name)), "closing Django's connection dropped the lock"
        finally:
            backend.close()

    @pytest.mark.skipif(django.VERSION < (5, 1), reason="Django < 5.1 has no connection pool")
    def test_django_connection_pool_neither_drops_nor_inherits_a_lock(self, name: str) -> None:
        backend = AdvisoryLockBackend(options={"database": "pooled"})
        seen: set[int] = set()

        def borrow() -> None:
            with connections["pooled"].cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                seen.add(cursor.fetchone()[0])
            connections["pooled"].close()  # back to Django's pool

        try:
            handle = backend.lock(name, timeout=5)
            handle.acquire()
            key = backend.make_key(name)
            for _ in range(3):
                borrow()
                thread = threading.Thread(target=borrow)
                thread.start()
                thread.join()
            holders = advisory_pids(key)
            assert len(holders) == 1 and holders[0] not in seen
            handle.release()
            borrow()
            assert not admin("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND pid = ANY(%s)", (list(seen),))
        finally:
            backend.close()
            connections["pooled"].close_pool()


class TestLostLocks:
    def test_terminated_session_makes_release_raise_lock_lost(self, backend: AdvisoryLockBackend, name: str) -> None:
        handle = backend.lock(name)
        handle.acquire(timeout=5)
        (pid,) = advisory_pids(backend.make_key(name))
        terminate(pid)
        with pytest.raises(LockLost):
            handle.release()
        assert not advisory_pids(backend.make_key(name))
        with backend.lock(name, timeout=5):  # the backend carries on with a fresh connection
            pass

    def test_watchdog_reports_a_lost_session_within_seconds(self, name: str) -> None:
        backend = AdvisoryLockBackend(location=URL, options={"WATCHDOG": True})
        backend.watchdog_interval = 0.2  # type: ignore[misc]
        lost = threading.Event()
        handle = backend.lock(name, on_lost=lambda h: lost.set())
        try:
            handle.acquire(timeout=5)
            (pid,) = advisory_pids(backend.make_key(name))
            admin("SELECT pg_terminate_backend(%s)", (pid,))
            assert lost.wait(5), "on_lost was not called"
            assert handle.lost
            with pytest.raises(LockLost):
                handle.release()
        finally:
            backend.close()


def test_spec_of_a_database_alias_needs_no_django_settings(name: str) -> None:
    backend = AdvisoryLockBackend(options={"database": "default", "FENCING": False})
    spec = backend.spec()
    assert spec.setup is None and "database" not in spec.options and spec.options == {"FENCING": False}
    rebuilt = spec.build()
    try:
        with rebuilt.lock(name, timeout=5):
            assert backend.is_locked(backend.make_key(name))
    finally:
        rebuilt.close()
        backend.close()


class TestFencing:
    def test_a_missing_sequence_is_created_and_tokens_grow(self, name: str) -> None:
        sequence = f"locks_test_seq_{uuid.uuid4().hex[:8]}"
        backend = AdvisoryLockBackend(location=URL, options={"FENCING": True, "FENCING_SEQUENCE": sequence})
        try:
            tokens = []
            for _ in range(3):
                with backend.lock(name, timeout=5) as held:
                    tokens.append(held.token)
            assert tokens == [1, 2, 3]
        finally:
            backend.close()
            admin(f"DROP SEQUENCE IF EXISTS {sequence}")

    def test_shared_holders_get_tokens_too(
        self, backend: AdvisoryLockBackend, other: AdvisoryLockBackend, name: str
    ) -> None:
        with backend.lock(name, shared=True, timeout=5) as a, other.lock(name, shared=True, timeout=5) as b:
            assert isinstance(a.token, int) and isinstance(b.token, int) and a.token != b.token


class TestTransactionScope:
    def test_outside_a_transaction_is_a_clear_error(self, xact: TransactionAdvisoryLockBackend, name: str) -> None:
        with pytest.raises(TransactionRequired, match=r"transaction\.atomic"):
            xact.lock(name).acquire(timeout=0)

    def test_held_until_commit_and_released_by_it(
        self, xact: TransactionAdvisoryLockBackend, backend: AdvisoryLockBackend, name: str
    ) -> None:
        with transaction.atomic():
            with xact.lock(name, timeout=5) as held:
                assert isinstance(held.token, int)
            # the with block is over, the transaction is not: PostgreSQL still holds it
            assert backend.lock(name).acquire(timeout=0) is False
        assert not backend.is_locked(backend.make_key(name))

    def test_released_by_rollback(
        self, xact: TransactionAdvisoryLockBackend, backend: AdvisoryLockBackend, name: str
    ) -> None:
        class Boom(Exception):
            pass

        with pytest.raises(Boom), transaction.atomic(), xact.lock(name, timeout=5):
            assert backend.is_locked(backend.make_key(name))
            raise Boom
        assert not backend.is_locked(backend.make_key(name))

    def test_timed_out_wait_keeps_the_transaction_usable_and_lock_timeout(
        self, xact: TransactionAdvisoryLockBackend, other: AdvisoryLockBackend, name: str
    ) -> None:
        with other.lock(name, timeout=5), transaction.atomic():
            with connections["default"].cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '7s'")
            started = time.monotonic()
            assert xact.lock(name).acquire(timeout=0.3) is False
            assert time.monotonic() - started >= 0.3
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT current_setting('lock_timeout')")
                assert cursor.fetchone()[0] == "7s"

    def test_a_wait_that_succeeds_restores_lock_timeout(
        self, xact: TransactionAdvisoryLockBackend, other: AdvisoryLockBackend, name: str
    ) -> None:
        held = threading.Event()

        def hold_briefly() -> None:
            with other.lock(name, timeout=5):
                held.set()
                time.sleep(0.3)

        threading.Thread(target=hold_briefly).start()
        assert held.wait(10)
        with transaction.atomic():
            with xact.lock(name, timeout=10):
                with connections["default"].cursor() as cursor:
                    cursor.execute("SELECT current_setting('lock_timeout')")
                    assert cursor.fetchone()[0] == "0"

    def test_release_after_the_transaction_ended_reports_the_lock_lost(
        self, xact: TransactionAdvisoryLockBackend, name: str
    ) -> None:
        handle = xact.lock(name)
        with transaction.atomic():
            handle.acquire(timeout=5)
        with pytest.raises(LockLost, match="its transaction"):
            handle.release()

    def test_a_lock_left_to_the_commit_is_taken_again_by_the_next_transaction(
        self, xact: TransactionAdvisoryLockBackend, backend: AdvisoryLockBackend, name: str
    ) -> None:
        key = backend.make_key(name)
        first = xact.lock(name)
        with transaction.atomic():
            assert first.acquire(timeout=5)  # never released: the commit does it
        assert not backend.is_locked(key)
        with transaction.atomic():
            second = xact.lock(name)
            assert second.acquire(timeout=5)
            assert backend.is_locked(key), "counted as nested instead of locked in this transaction"
            second.release()
        with pytest.raises(LockLost):
            first.release()

    def test_a_savepoint_rollback_releases_and_is_noticed(
        self, xact: TransactionAdvisoryLockBackend, backend: AdvisoryLockBackend, name: str
    ) -> None:
        class Boom(Exception):
            pass

        key = backend.make_key(name)
        handle = xact.lock(name)
        with transaction.atomic():
            with pytest.raises(Boom), transaction.atomic():
                handle.acquire(timeout=5)
                assert backend.is_locked(key)
                raise Boom
            assert not backend.is_locked(key)  # PostgreSQL released it with the savepoint
            with xact.lock(name, timeout=0):
                assert backend.is_locked(key)
            with pytest.raises(LockLost):
                handle.release()

    def test_threads_exclude_each_other(self, xact: TransactionAdvisoryLockBackend, name: str) -> None:
        inside = threading.Event()
        leave = threading.Event()
        result: list[bool] = []

        def first() -> None:
            with transaction.atomic(), xact.lock(name, timeout=5):
                inside.set()
                leave.wait(10)
            connections.close_all()

        def second() -> None:
            with transaction.atomic():
                result.append(xact.lock(name).acquire(timeout=0))
            with transaction.atomic():
                result.append(xact.lock(name).acquire(timeout=10))
            connections.close_all()

        one = threading.Thread(target=first)
        one.start()
        assert inside.wait(10)
        two = threading.Thread(target=second)
        two.start()
        time.sleep(0.3)
        leave.set()
        one.join(10)
        two.join(10)
        assert result == [False, True]


class TestPgbouncer:
    def test_session_locks_through_transaction_pooling_are_refused(self, pgbouncer: str, name: str) -> None:
        backend = AdvisoryLockBackend(location=pgbouncer)
        try:
            with pytest.raises(PoolerDetected, match="pooler") as info:
                backend.lock(name).acquire(timeout=0)
            assert isinstance(info.value, NotSupported)
            assert "TransactionAdvisoryLockBackend" in str(info.value)
            assert not backend.is_locked(backend.make_key(name))  # plain queries are fine
            # and the backend's session settings did not leak into pgbouncer's server connections
            with psycopg.connect(pgbouncer, autocommit=True) as conn:
                for _ in range(4):
                    assert conn.execute("SELECT current_setting('tcp_keepalives_count')").fetchone() != ("3",)
        finally:
            backend.close()

    def test_transaction_locks_through_transaction_pooling_work(
        self, pgbouncer: str, backend: AdvisoryLockBackend, name: str
    ) -> None:
        through = TransactionAdvisoryLockBackend(alias="bouncer", options={"database": "bouncer", "FENCING": True})
        inside = threading.Event()
        leave = threading.Event()
        seen: list[Any] = []

        def holder() -> None:
            try:
                with transaction.atomic(using="bouncer"), through.lock(name, timeout=5) as held:
                    seen.append(held.token)
                    inside.set()
                    leave.wait(10)
            finally:
                connections.close_all()

        def contender() -> None:
            try:
                with transaction.atomic(using="bouncer"):
                    seen.append(through.lock(name).acquire(timeout=0))
            finally:
                connections.close_all()

        thread = threading.Thread(target=holder)
        thread.start()
        try:
            assert inside.wait(10)
            assert backend.is_locked(backend.make_key(name))  # held on the real server
            probe = threading.Thread(target=contender)
            probe.start()
            probe.join(10)
        finally:
            leave.set()
            thread.join(10)
        assert isinstance(seen[0], int) and seen[1] is False
        assert not backend.is_locked(backend.make_key(name))
        through.close()


class TestAsyncio:
    def test_async_holds_use_no_thread(
        self, backend: AdvisoryLockBackend, other: AdvisoryLockBackend, name: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def no_threads() -> Any:
            raise AssertionError("the asyncio path used a worker thread")

        monkeypatch.setattr(backend, "executor", no_threads)

        async def main() -> tuple[bool, bool]:
            async with backend.alock(name, timeout=5) as held:
                inside = bool(held) and other.is_locked(other.make_key(name))
            busy = False
            with other.lock(name, timeout=5):
                busy = await backend.alock(name).acquire(timeout=0.3)
            return inside, busy

        assert asyncio.run(main()) == (True, False)
        assert not other.is_locked(other.make_key(name))

    def test_cancelled_waiter_ends_its_wait_on_the_server(
        self, backend: AdvisoryLockBackend, other: AdvisoryLockBackend, name: str
    ) -> None:
        key = backend.make_key(name)

        async def main() -> None:
            waiter = asyncio.create_task(backend.alock(name).acquire(timeout=60))
            deadline = time.monotonic() + 10
            while not advisory_pids(key, granted=False):
                assert time.monotonic() < deadline, "the waiter never waited on the server"
                await asyncio.sleep(0.05)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter

        with other.lock(name, timeout=5):
            asyncio.run(main())
            deadline = time.monotonic() + 10
            while advisory_pids(key, granted=False):
                assert time.monotonic() < deadline, "the cancelled waiter still waits on the server"
                time.sleep(0.05)
        assert not backend.is_locked(key)

    def test_watchdog_and_release_of_a_lost_async_hold(self, name: str) -> None:
        backend = AdvisoryLockBackend(location=URL, options={"WATCHDOG": True})
        backend.watchdog_interval = 0.2  # type: ignore[misc]
        lost = threading.Event()

        async def main() -> None:
            handle = backend.alock(name, on_lost=lambda h: lost.set())
            assert await handle.acquire(timeout=5)
            (pid,) = advisory_pids(backend.make_key(name))
            terminate(pid)
            deadline = time.monotonic() + 5
            while not lost.is_set():
                assert time.monotonic() < deadline, "on_lost was not called"
                await asyncio.sleep(0.05)
            with pytest.raises(LockLost):
                await handle.release()

        try:
            asyncio.run(main())
        finally:
            backend.close()

    def test_terminated_async_hold_release_raises_lock_lost(self, backend: AdvisoryLockBackend, name: str) -> None:
        async def main() -> None:
            handle = backend.alock(name)
            assert await handle.acquire(timeout=5)
            (pid,) = advisory_pids(backend.make_key(name))
            terminate(pid)
            with pytest.raises(LockLost):
                await handle.release()
            async with backend.alock(name, timeout=5):  # a fresh session takes over
                pass

        asyncio.run(main())
