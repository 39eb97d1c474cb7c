"""What the file backend adds to the contract: its directory, files, listing and cleanup."""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

import locks
from locks import BackendUnavailable, NotSupported
from locks_file import FileLockBackend, default_directory
from locks_file.backend import FILE_SIZE, SUFFIX, _read_record


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "locks"


@pytest.fixture
def backend(directory: Path) -> Iterator[FileLockBackend]:
    backend = FileLockBackend(location=str(directory))
    yield backend
    backend.close()


@pytest.fixture
def other(directory: Path) -> Iterator[FileLockBackend]:
    backend = FileLockBackend(alias="other", location=str(directory))
    yield backend
    backend.close()


def _hold_in_child(directory: str, name: str, ready: object, stop: object) -> None:
    backend = FileLockBackend(location=directory)
    with backend.lock(name):
        ready.set()  # type: ignore[attr-defined]
        stop.wait(30)  # type: ignore[attr-defined]


class TestDirectory:
    def test_directory_is_created_private(self, backend: FileLockBackend, directory: Path) -> None:
        with backend.lock("x"):
            pass
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_IMODE((directory / f"x{SUFFIX}").stat().st_mode) == 0o600
        assert (directory / f"x{SUFFIX}").stat().st_size == FILE_SIZE

    def test_default_directory_must_be_private(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
        assert default_directory() == str(tmp_path / "locks")
        (tmp_path / "locks").mkdir(mode=0o777)
        os.chmod(tmp_path / "locks", 0o777)
        with pytest.raises(BackendUnavailable, match="not private"):
            FileLockBackend().lock("x").acquire()

    def test_names_never_escape_the_directory(self, backend: FileLockBackend, directory: Path, tmp_path: Path) -> None:
        for name in ("../escape", "../../etc/passwd", "/abs", "..", "a/../../b"):
            with backend.lock(name):
                pass
        assert sorted(p.parent for p in tmp_path.rglob(f"*{SUFFIX}")) == [directory] * 5

    def test_a_symlinked_lock_file_is_refused(self, backend: FileLockBackend, directory: Path, tmp_path: Path) -> None:
        directory.mkdir(mode=0o700)
        target = tmp_path / "target"
        target.write_text("precious")
        (directory / f"evil{SUFFIX}").symlink_to(target)
        with pytest.raises(BackendUnavailable, match="symbolic link"):
            backend.lock("evil").acquire()
        assert target.read_text() == "precious"

    def test_bad_options_are_improperly_configured(self, tmp_path: Path) -> None:
        with pytest.raises(ImproperlyConfigured):
            FileLockBackend(location=str(tmp_path), options={"FILE_MODE": "rw"})
        with pytest.raises(ImproperlyConfigured):
            FileLockBackend(location=str(tmp_path), options={"SPEED": "fast"})
        with pytest.raises(ValueError, match="local directory"):
            locks.connect("file://otherhost/x")

    def test_group_shared_file_mode(self, tmp_path: Path) -> None:
        backend = FileLockBackend(location=str(tmp_path), options={"FILE_MODE": "660"})
        with backend.lock("g"):
            pass
        assert stat.S_IMODE((tmp_path / f"g{SUFFIX}").stat().st_mode) & 0o660 == 0o660 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class TestListingAndRelease:
    def test_holders_show_pid_owner_since_and_token(self, backend: FileLockBackend, other: FileLockBackend) -> None:
        before = time.time()
        with backend.lock("listed-job") as held:
            [info] = [h for h in other.holders() if h.name == "listed-job"]
            assert info.pid == os.getpid()
            assert info.owner is not None and str(os.getpid()) in info.owner
            assert info.since is not None and before - 1 <= info.since <= time.time() + 1
            assert info.token == held.token
            assert not info.shared
        assert not [h for h in other.holders() if h.name == "listed-job"]

    def test_shared_holders_are_listed_with_every_pid(self, backend: FileLockBackend, other: FileLockBackend) -> None:
        with backend.lock("readers", shared=True), other.lock("readers", shared=True):
            [info] = [h for h in backend.holders() if h.key == "readers"]
            assert info.shared
            assert info.extra["pids"] == [os.getpid(), os.getpid()]

    def test_release_refuses_to_break_a_live_holder_and_names_it(
        self, backend: FileLockBackend, directory: Path
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        ready, stop = ctx.Event(), ctx.Event()
        child = ctx.Process(target=_hold_in_child, args=(str(directory), "busy", ready, stop))
        child.start()
        try:
            assert ready.wait(30)
            with pytest.raises(NotSupported, match=f"process {child.pid}"):
                backend.force_release("busy")
            assert backend.lock("busy").locked()
        finally:
            stop.set()
            child.join(30)
        assert backend.force_release("busy") == 0
        assert not (directory / f"busy{SUFFIX}").exists()

    def test_removing_stale_files_never_lets_two_holders_in(
        self, backend: FileLockBackend, other: FileLockBackend, directory: Path
    ) -> None:
        # backend keeps a descriptor of the old file in its pool; the cleaner removes that file;
        # other takes the new file; backend must then see it held, not lock the dead inode.
        with backend.lock("recycled"):
            pass
        assert other.remove_stale_files() == 1
        with other.lock("recycled", timeout=0):
            assert backend.lock("recycled").acquire(timeout=0) is False
        with backend.lock("recycled", timeout=0) as held:
            assert held

    def test_remove_stale_files_keeps_held_ones(
        self, backend: FileLockBackend, other: FileLockBackend, directory: Path
    ) -> None:
        with backend.lock("kept"):
            with other.lock("gone"):
                pass
            assert other.remove_stale_files() == 1
            assert (directory / f"kept{SUFFIX}").exists()
            assert not (directory / f"gone{SUFFIX}").exists()

    def test_watchdog_reports_a_lock_file_deleted_under_a_holder(self, directory: Path) -> None:
        watched = FileLockBackend(location=str(directory), options={"WATCHDOG": True})
        watched.watchdog_interval = 0.1  # type: ignore[misc]
        lost = threading.Event()
        handle = watched.lock("deleted", on_lost=lambda h: lost.set())
        handle.acquire()
        os.unlink(directory / f"deleted{SUFFIX}")
        assert lost.wait(5)
        with pytest.raises(locks.LockLost):
            handle.release()


class TestProcessesAndRecords:
    def test_fencing_token_survives_in_the_file(self, backend: FileLockBackend, directory: Path) -> None:
        tokens = []
        for _ in range(3):
            with backend.lock("fenced") as held:
                tokens.append(held.token)
        fresh = FileLockBackend(location=str(directory))
        with fresh.lock("fenced") as held:
            tokens.append(held.token)
        assert tokens == [1, 2, 3, 4]
        assert _read_record(str(directory / f"fenced{SUFFIX}"))["token"] == 4

    def test_forked_child_does_not_keep_the_parents_lock(
        self, backend: FileLockBackend, other: FileLockBackend
    ) -> None:
        handle = backend.lock("parent-only")
        handle.acquire()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child closes its copies at fork, then waits to be told to exit
            os.close(write)
            os.read(read, 1)
            os._exit(0)
        os.close(read)
        try:
            handle.release()
            # the child still runs: the lock must be free all the same
            assert other.lock("parent-only").acquire(timeout=0)
            other.lock("parent-only")
        finally:
            os.write(write, b"x")
            os.close(write)
            os.waitpid(pid, 0)
        for entry in other.holds.entries():
            for h in list(entry.handles):
                h.release()

    def test_lock_file_descriptors_are_not_inherited_by_exec(
        self, backend: FileLockBackend, other: FileLockBackend
    ) -> None:
        import subprocess
        import sys

        with backend.lock("no-inherit"):
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"], close_fds=False)
        try:
            assert other.lock("no-inherit").acquire(timeout=0)
        finally:
            child.kill()
            child.wait()


def test_the_settings_page_shows_the_declared_options() -> None:
    from pathlib import Path

    from locks.backends.options import options_table

    page = Path(__file__).resolve().parents[3] / "docs" / "pages" / "backends" / "file.md"
    table = options_table(FileLockBackend.OPTIONS)
    assert table in page.read_text(encoding="utf-8"), f"docs/pages/backends/file.md must show:\n{table}"
