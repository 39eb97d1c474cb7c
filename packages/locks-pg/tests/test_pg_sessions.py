"""How many server sessions the backend uses, counted in ``pg_stat_activity``: per thread and per
event loop, not per lock; what a session's ``application_name`` says; lost sessions; dropped
backends; Django's test database teardown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Any

import psycopg
import pytest

import locks
from locks import LockError, LockLost
from locks_pg import AdvisoryLockBackend
from locks_pg._testing import MakeBackend, admin, pg_url, terminate
from locks_pg.session_scope import IDLE_LABEL_RESET

URL = pg_url()
pytestmark = pytest.mark.timeout(180)


def sessions(app: str) -> int:
    """The backend's sessions: those whose application_name is its APPLICATION_NAME, bare or
    with what they hold (``app:name``, ``app[n]:name``)."""
    rows = admin(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s OR application_name LIKE %s "
        "OR application_name LIKE %s",
        (app, app + ":%", app + "[%"),
    )
    return int(rows[0][0])


def labels(app: str) -> list[str]:
    rows = admin(
        "SELECT application_name FROM pg_stat_activity WHERE application_name = %s OR application_name LIKE %s "
        "OR application_name LIKE %s ORDER BY 1",
        (app, app + ":%", app + "[%"),
    )
    return [row[0] for row in rows]


def eventually(condition: Any, within: float) -> bool:
    """Whether ``condition()`` comes true within ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def held_by(key: int) -> list[int]:
    rows = admin(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted "
        "AND ((classid::int8 << 32) | objid::int8) = %s",
        (key,),
    )
    return [row[0] for row in rows]


class Peak:
    """The most sessions seen while a block runs (sampled from another thread)."""

    def __init__(self, app: str) -> None:
        self.app = app
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(URL, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                    "OR application_name LIKE %s OR application_name LIKE %s",
                    (self.app, self.app + ":%", self.app + "[%"),
                ).fetchone()
                assert row is not None
                self.most = max(self.most, int(row[0]))
                self._stop.wait(0.02)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.05)
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def app() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def backend(make_backend: MakeBackend, app: str) -> AdvisoryLockBackend:
    return make_backend(APPLICATION_NAME=app, FENCING=True)


def hold_in_thread(
    backend: AdvisoryLockBackend, name: str, seconds: float, released: list[float] | None = None
) -> threading.Thread:
    """Hold ``name`` in a thread of its own for ``seconds``; returns once it is held."""
    held = threading.Event()

    def run() -> None:
        with backend.lock(name, timeout=5):
            held.set()
            time.sleep(seconds)
        if released is not None:
            released.append(time.monotonic())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert held.wait(10)
    return thread


class TestThreads:
    def test_one_thread_holding_1000_locks_uses_one_session(self, backend: AdvisoryLockBackend, app: str) -> None:
        with contextlib.ExitStack() as stack:
            for i in range(1000):
                handle = stack.enter_context(backend.lock(f"{app}-{i}", timeout=5))
                assert isinstance(handle.token, int)
            assert sessions(app) == 1
            assert len(held_by(backend.make_key(f"{app}-999"))) == 1
        assert not held_by(backend.make_key(f"{app}-0"))
        assert sessions(app) == 1  # kept idle for reuse, holding nothing

    def test_nested_holds_and_waits_use_one_session(
        self, backend: AdvisoryLockBackend, other: AdvisoryLockBackend, app: str
    ) -> None:
        holder = hold_in_thread(other, f"{app}-busy", 0.3)
        with backend.lock(f"{app}-1", timeout=5), backend.lock(f"{app}-2", shared=True, timeout=5):
            with backend.lock(f"{app}-busy", timeout=10):  # waits on the server, on the same session
                with backend.lock(f"{app}-1", timeout=5):  # reentrant: counted, no statement
                    assert sessions(app) == 1
        holder.join(5)

    def test_threads_holding_and_waiting_use_a_session_each(
        self, backend: AdvisoryLockBackend, other: AdvisoryLockBackend, app: str
    ) -> None:
        threads = 8
        busy = other.lock(f"{app}-busy")
        assert busy.acquire(timeout=5)
        holding = threading.Barrier(threads + 1)
        got: list[bool] = []

        def work(i: int) -> None:
            with backend.lock(f"{app}-{i}", timeout=5), backend.lock(f"{app}-{i}-b", timeout=5):
                holding.wait(10)
                handle = backend.lock(f"{app}-busy", shared=True)
                got.append(handle.acquire(timeout=30))
                handle.release()

        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        with Peak(app) as peak:
            for worker in workers:
                worker.start()
            holding.wait(10)
            deadline = time.monotonic() + 10
            while len(admin("SELECT 1 FROM pg_locks WHERE NOT granted AND locktype = 'advisory'")) < threads:
                assert time.monotonic() < deadline, "the threads did not all wait"
                time.sleep(0.02)
            busy.release()
            for worker in workers:
                worker.join(30)
        assert got == [True] * threads
        assert peak.most <= threads

    def test_a_key_held_on_the_threads_session_by_another_holder_goes_to_another_session(
        self, backend: AdvisoryLockBackend, app: str
    ) -> None:
        # Two asyncio tasks of one thread using the synchronous API are two holders: the
        # second must not be granted the lock through the first one's session. (The first task
        # stays alive meanwhile: a task that ends gives its holds back.)
        async def main() -> tuple[bool, int]:
            first = backend.lock(f"{app}-x", timeout=5)
            held, done = asyncio.Event(), asyncio.Event()

            async def hold() -> None:
                first.acquire()
                held.set()
                await done.wait()
                first.release()

            holder = asyncio.create_task(hold())
            await held.wait()
            result: list[bool] = []

            async def contend() -> None:
                result.append(backend.lock(f"{app}-x").acquire(timeout=0))

            await asyncio.create_task(contend())
            holders = len(held_by(backend.make_key(f"{app}-x")))
            done.set()
            await holder
            return result[0], holders

        assert asyncio.run(main()) == (False, 1)

    def test_a_deadlock_between_threads_is_reported(
        self, backend: AdvisoryLockBackend, other: AdvisoryLockBackend, app: str
    ) -> None:
        # One session per thread: PostgreSQL sees the cycle (with a session per hold it could not).
        ready = threading.Barrier(2)
        errors: list[BaseException] = []

        def cross(first: str, second: str, via: AdvisoryLockBackend) -> None:
            try:
                with via.lock(first, timeout=5):
                    ready.wait(5)
                    with via.lock(second, timeout=20):
                        pass
            except LockError as exc:
                errors.append(exc)

        a = threading.Thread(target=cross, args=(f"{app}-a", f"{app}-b", backend))
        b = threading.Thread(target=cross, args=(f"{app}-b", f"{app}-a", backend))
        started = time.monotonic()
        a.start()
        b.start()
        a.join(30)
        b.join(30)
        assert len(errors) == 1 and "deadlock" in str(errors[0])
        assert time.monotonic() - started < 15  # detected (deadlock_timeout), not timed out

    @pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="needs signals")
    def test_an_interrupted_wait_keeps_the_sessions_other_locks(
        self, backend: AdvisoryLockBackend, other: AdvisoryLockBackend, app: str
    ) -> None:
        def interrupt(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGALRM, interrupt)
        try:
            with backend.lock(f"{app}-kept", timeout=5), other.lock(f"{app}-busy", timeout=5):
                signal.setitimer(signal.ITIMER_REAL, 0.3)
                with pytest.raises(KeyboardInterrupt):
                    backend.lock(f"{app}-busy").acquire(timeout=10)
                (pid,) = held_by(backend.make_key(f"{app}-kept"))
                mine = admin("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s", (pid,))
                assert mine == [(1,)]  # nothing but the kept lock on its session
                assert labels(app) == [f"{app}:{app}-kept"]
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        assert not held_by(backend.make_key(f"{app}-kept"))


class TestAsyncio:
    @pytest.mark.parametrize("tasks", [32, 100, 1000])
    def test_tasks_each_holding_a_lock_share_a_few_sessions(
        self, backend: AdvisoryLockBackend, app: str, tasks: int
    ) -> None:
        async def main() -> None:
            all_in = asyncio.Event()
            holding = 0

            async def one(i: int) -> None:
                nonlocal holding
                async with backend.alock(f"{app}-{i}", timeout=30) as handle:
                    assert isinstance(handle.token, int)
                    holding += 1
                    if holding == tasks:
                        all_in.set()
                    await all_in.wait()  # every task holds its lock at once

            await asyncio.gather(*(one(i) for i in range(tasks)))

        with Peak(app) as peak:
            asyncio.run(main())
        assert 1 <= peak.most <= backend.async_sessions
        assert sessions(app) <= 2  # what is kept idle afterwards

    @pytest.mark.parametrize("tasks", [32, 1000])
    def test_tasks_waiting_share_a_bounded_number_of_sessions(
        self, backend: AdvisoryLockBackend, app: str, tasks: int
    ) -> None:
        held: set[int] = set()
        overlap: list[int] = []

        async def main() -> list[bool]:
            async def one(i: int) -> bool:
                key = i % 10
                handle = backend.alock(f"{app}-{key}")
                if not await handle.acquire(timeout=60):
                    return False
                if key in held:
                    overlap.append(key)
                held.add(key)
                await asyncio.sleep(0.002)
                held.discard(key)
                await handle.release()
                return True

            return await asyncio.gather(*(one(i) for i in range(tasks)))

        with Peak(app) as peak:
            results = asyncio.run(main())
        assert all(results) and not overlap
        assert peak.most <= backend.async_sessions + backend.async_waits

    def test_idle_sessions_beyond_a_few_are_closed(self, backend: AdvisoryLockBackend, app: str) -> None:
        async def main() -> int:
            async def one(i: int) -> None:
                async with backend.alock(f"{app}-{i % 3}", timeout=30):
                    await asyncio.sleep(0.01)

            await asyncio.gather(*(one(i) for i in range(32)))
            return sessions(app)

        assert asyncio.run(main()) <= 2

    def test_a_waiter_is_woken_by_a_release_from_another_process(
        self, backend: AdvisoryLockBackend, other: AdvisoryLockBackend, app: str
    ) -> None:
        released: list[float] = []
        holder = hold_in_thread(other, f"{app}-x", 1.0, released)

        async def main() -> float:
            assert await backend.alock(f"{app}-x").acquire(timeout=30)
            return time.monotonic() - released[0]

        assert asyncio.run(main()) < 0.2  # woken by the release, not by polling
        holder.join(5)


class TestLabels:
    def test_the_label_says_what_is_held_and_is_reset_on_release(
        self, backend: AdvisoryLockBackend, other: AdvisoryLockBackend, app: str
    ) -> None:
        with backend.lock(f"{app}-a", timeout=5):
            assert labels(app) == [f"{app}:{app}-a"]
            with other.lock(f"{app}-busy", timeout=5):
                assert not backend.lock(f"{app}-busy").acquire(timeout=0)
                assert not backend.lock(f"{app}-busy").acquire(timeout=0.1)
            assert labels(app) == [f"{app}:{app}-a"]  # a failed attempt names nothing
            with backend.lock(f"{app}-b", timeout=5), backend.lock("é", timeout=5):
                assert labels(app) == [f"{app}[3]:{app}-a"]
            assert labels(app) == [f"{app}:{app}-a"]
        # the last release renames nothing; the idle session is named back by the keeper's sweep
        assert eventually(lambda: labels(app) == [app], within=IDLE_LABEL_RESET + 2)

    def test_a_lock_taken_again_soon_costs_no_rename(
        self, backend: AdvisoryLockBackend, other: AdvisoryLockBackend, app: str
    ) -> None:
        name = f"{app}-again"
        with backend.lock(name, timeout=5):
            pass
        (session,) = backend._factory.idle_sessions()
        assert session.label == f"{app}:{name}"  # kept: the sweep comes later
        with backend.lock(name, timeout=5):
            assert labels(app) == [f"{app}:{name}"]
            assert [h.name for h in backend.holders() if h.key == backend.make_key(name)] == [name]
        assert other.holders(prefix=name) == []  # a session that holds nothing is in no listing
        # (the listing above used a second session, named `app`)
        assert eventually(lambda: set(labels(app)) == {app}, within=IDLE_LABEL_RESET + 2)
        assert session.label == app

    def test_a_session_taken_before_the_sweep_keeps_its_label(self, backend: AdvisoryLockBackend, app: str) -> None:
        with backend.lock(f"{app}-first", timeout=5):
            pass
        with backend.lock(f"{app}-second", timeout=5):
            assert labels(app) == [f"{app}:{app}-second"]
            time.sleep(IDLE_LABEL_RESET + 0.3)  # the sweep runs meanwhile and leaves it alone
            assert labels(app) == [f"{app}:{app}-second"]
        assert eventually(lambda: labels(app) == [app], within=IDLE_LABEL_RESET + 2)

    def test_asyncio_sessions_too(self, backend: AdvisoryLockBackend, app: str) -> None:
        async def main() -> list[list[str]]:
            seen = []
            async with backend.alock(f"{app}-a", timeout=5):
                seen.append(await asyncio.to_thread(labels, app))
                async with backend.alock(f"{app}-b", timeout=5):
                    seen.append(await asyncio.to_thread(labels, app))
            seen.append(await asyncio.to_thread(labels, app))
            return seen

        assert asyncio.run(main()) == [[f"{app}:{app}-a"], [f"{app}[2]:{app}-a"], [app]]

    def test_listings_name_the_oldest_lock_of_a_session(self, backend: AdvisoryLockBackend, app: str) -> None:
        other = AdvisoryLockBackend(location=URL, options={"APPLICATION_NAME": app})
        with backend.lock(f"{app}-outer", timeout=5), backend.lock(f"{app}-inner", timeout=5):
            names = {h.key: h.name for h in other.holders()}
            assert names[backend.make_key(f"{app}-outer")] == f"{app}-outer"
            assert names[backend.make_key(f"{app}-inner")] is None  # another process cannot know it
            mine = {h.key: h.name for h in backend.holders()}
            assert mine[backend.make_key(f"{app}-inner")] == f"{app}-inner"  # this one does
        other.close()


class TestLostSessions:
    def test_every_hold_on_a_terminated_session_is_lost(self, app: str) -> None:
        backend = AdvisoryLockBackend(location=URL, options={"APPLICATION_NAME": app, "WATCHDOG": True})
        backend.watchdog_interval = 0.2  # type: ignore[misc]
        lost: list[str] = []
        handles = [backend.lock(f"{app}-{i}", on_lost=lambda h: lost.append(str(h.name))) for i in range(3)]
        try:
            for handle in handles:
                assert handle.acquire(timeout=5)
            (pid,) = held_by(backend.make_key(f"{app}-0"))
            terminate(pid)
            deadline = time.monotonic() + 5
            while len(lost) < 3:
                assert time.monotonic() < deadline, f"the watchdog reported {lost}"
                time.sleep(0.05)
            for handle in reversed(handles):
                assert handle.lost
                with pytest.raises(LockLost):
                    handle.release()
            with backend.lock(f"{app}-0", timeout=5):  # a new session takes over
                pass
        finally:
            backend.close()

    def test_release_reports_each_hold_of_a_terminated_session(self, backend: AdvisoryLockBackend, app: str) -> None:
        handles = [backend.lock(f"{app}-{i}") for i in range(3)]
        for handle in handles:
            assert handle.acquire(timeout=5)
        (pid,) = held_by(backend.make_key(f"{app}-0"))
        terminate(pid)
        for handle in reversed(handles):
            with pytest.raises(LockLost):
                handle.release()

    def test_every_async_hold_on_a_terminated_session_is_lost(self, app: str) -> None:
        backend = AdvisoryLockBackend(location=URL, options={"APPLICATION_NAME": app, "WATCHDOG": True})
        backend.watchdog_interval = 0.2  # type: ignore[misc]
        lost: list[str] = []

        async def main() -> None:
            handles = [backend.alock(f"{app}-{i}", on_lost=lambda h: lost.append(str(h.name))) for i in range(3)]
            for handle in handles:
                assert await handle.acquire(timeout=5)
            pids = {held_by(backend.make_key(f"{app}-{i}"))[0] for i in range(3)}
            assert len(pids) == 1
            terminate(pids.pop())
            deadline = time.monotonic() + 5
            while len(lost) < 3:
                assert time.monotonic() < deadline, f"the watchdog reported {lost}"
                await asyncio.sleep(0.05)
            for handle in reversed(handles):
                with pytest.raises(LockLost):
                    await handle.release()
            async with backend.alock(f"{app}-0", timeout=5):
                pass

        try:
            asyncio.run(main())
        finally:
            backend.close()

    def test_async_release_reports_each_hold_of_a_terminated_session(
        self, backend: AdvisoryLockBackend, app: str
    ) -> None:
        async def main() -> None:
            handles = [backend.alock(f"{app}-{i}") for i in range(3)]
            for handle in handles:
                assert await handle.acquire(timeout=5)
            terminate(held_by(backend.make_key(f"{app}-0"))[0])
            for handle in reversed(handles):
                with pytest.raises(LockLost):
                    await handle.release()

        asyncio.run(main())

    def test_a_cancelled_task_never_breaks_the_shared_session(self, backend: AdvisoryLockBackend, app: str) -> None:
        async def main() -> None:
            keeper = backend.alock(f"{app}-kept")
            assert await keeper.acquire(timeout=5)
            for _ in range(20):  # cancelled at every point of its statements
                task = asyncio.create_task(backend.alock(f"{app}-other", timeout=5).acquire())
                await asyncio.sleep(0)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await asyncio.sleep(0.2)
            assert not held_by(backend.make_key(f"{app}-other"))  # a lock got meanwhile was given back
            await keeper.release()  # its session was never cut off

        asyncio.run(main())

    def test_tasks_cancelled_anywhere_leave_no_lock_behind(self, backend: AdvisoryLockBackend, app: str) -> None:
        import random

        rng = random.Random(7)
        used: list[int] = []

        async def one() -> None:
            handle = backend.alock(f"{app}-{rng.randrange(8)}", shared=rng.random() < 0.3, timeout=2, on_busy="skip")
            async with handle as held:
                if held:
                    used.append(1)
                    await asyncio.sleep(rng.random() * 0.002)

        async def worker() -> None:
            for _ in range(40):
                task = asyncio.create_task(one())
                await asyncio.sleep(rng.random() * 0.004)
                if rng.random() < 0.4:
                    task.cancel()  # while waiting, taking, holding or releasing
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        async def main() -> None:
            await asyncio.gather(*(worker() for _ in range(50)))
            await asyncio.sleep(0.3)  # unlocks handed to the loop by cancelled releases

        asyncio.run(main())
        assert used
        left = admin(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND (a.application_name = %s OR a.application_name LIKE %s)",
            (app, app + "%"),
        )
        assert left == [(0,)]
        assert set(labels(app)) <= {app}


class TestDroppedBackends:
    def test_a_dropped_backend_is_freed_at_once_and_closes_its_sessions(self, app: str) -> None:
        gc.collect()
        gc.disable()
        try:
            backend = locks.connect(f"{URL}?APPLICATION_NAME={app}")
            with backend.lock(f"{app}-x", timeout=5):
                pass

            async def main(backend: AdvisoryLockBackend) -> None:
                async with backend.alock(f"{app}-y", timeout=5):
                    pass

            asyncio.run(main(backend))
            assert sessions(app) >= 1
            assert sys.getrefcount(backend) == 2  # this name and the call's argument: no cycle
            ref = weakref.ref(backend)
            del backend
            assert ref() is None
            assert sessions(app) == 0
        finally:
            gc.enable()

    def test_100_connect_use_drop_cycles_leave_no_session(self, app: str) -> None:
        before = sessions(app)
        for i in range(100):
            backend = locks.connect(f"{URL}?APPLICATION_NAME={app}")
            with backend.lock(f"{app}-{i}", timeout=5):
                pass
            del backend
        assert sessions(app) == before == 0

    def test_with_closes_on_exit(self, app: str) -> None:
        with locks.connect(f"{URL}?APPLICATION_NAME={app}") as backend:
            with backend.lock(f"{app}-x", timeout=5):
                pass
            assert sessions(app) == 1
        assert sessions(app) == 0


class TestDjangoTestRunner:
    def test_manage_py_test_drops_its_test_database(self, tmp_path: Path) -> None:
        test_db = "test_locks_pg_" + uuid.uuid4().hex[:10]
        (tmp_path / "project_settings.py").write_text(
            textwrap.dedent(
                f"""
                from locks_pg._testing import database_settings
                SECRET_KEY = "x"
                INSTALLED_APPS = ["locks", "locks_pg", "project_app"]
                DATABASES = {{"default": database_settings(TEST={{"NAME": {test_db!r}}})}}
                LOCKS = {{
                    "default": {{"BACKEND": "locks_pg.AdvisoryLockBackend", "OPTIONS": {{"database": "default"}}}}
                }}
                USE_TZ = True
                DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
                """
            )
        )
        (tmp_path / "project_app").mkdir()
        (tmp_path / "project_app" / "__init__.py").write_text("")
        (tmp_path / "project_app" / "tests.py").write_text(
            textwrap.dedent(
                """
                import asyncio
                import locks
                from django.test import TestCase, TransactionTestCase

                class Locked(TestCase):
                    def test_a_lock(self):
                        with locks.lock("project:nightly", timeout=5) as held:
                            self.assertTrue(held)

                class LockedAsync(TransactionTestCase):
                    def test_an_async_lock(self):
                        async def main():
                            async with locks.alock("project:async", timeout=5) as held:
                                return bool(held)
                        self.assertTrue(asyncio.run(main()))
                """
            )
        )
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project_settings", "PYTHONPATH": str(tmp_path)}
        try:
            result = subprocess.run(
                [sys.executable, "-m", "django", "test", "project_app", "--noinput", "-v", "1"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            output = result.stdout + result.stderr
            assert result.returncode == 0, output
            assert "Ran 2 tests" in output and "OK" in output
            assert not admin("SELECT 1 FROM pg_database WHERE datname = %s", (test_db,)), "the test database was left"
        finally:
            admin(f'DROP DATABASE IF EXISTS "{test_db}"')
