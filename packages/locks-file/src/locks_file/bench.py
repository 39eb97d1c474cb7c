"""Peers measured beside the file backend by ``locks bench --peers`` (registered in the
``locks.bench_peers`` entry-point group)."""

from __future__ import annotations

import fcntl
import importlib.util
import os
from typing import Any

from locks.backends import BaseLockBackend, BenchSubject
from locks.bench.subjects import KeptLocks


def peers(backend: BaseLockBackend) -> list[BenchSubject]:
    """The raw flock floor, then filelock and portalocker where installed."""
    from locks_file.backend import FileLockBackend

    if not isinstance(backend, FileLockBackend):
        return []
    directory = os.path.join(backend.directory, "bench-peers")
    found = [BenchSubject("raw flock", "locks_file.bench:RawFlock", {"directory": directory}, floor=True)]
    for module, label, factory in (
        ("filelock", "filelock", "locks_file.bench:FileLockPeer"),
        ("portalocker", "portalocker", "locks_file.bench:PortalockerPeer"),
    ):
        if importlib.util.find_spec(module) is not None:
            found.append(BenchSubject(label, factory, {"directory": directory}))
    return found


class RawFlock:
    """The floor: what any per-name file lock must do (open, flock, unlock, close)."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.fds: dict[str, int] = {}

    def acquire(self, name: str) -> None:
        fd = os.open(os.path.join(self.directory, name + ".raw"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.fds[name] = fd

    def release(self, name: str) -> None:
        fd = self.fds.pop(name)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)


class _InDirectory(KeptLocks):
    """A peer keeping one lock object per name, on files in ``directory``."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        os.makedirs(directory, exist_ok=True)
        self.directory = directory


class FileLockPeer(_InDirectory):
    """The ``filelock`` package (py-filelock), one lock object per name."""

    def new(self, name: str) -> Any:
        import filelock

        return filelock.FileLock(os.path.join(self.directory, name + ".filelock"))


class PortalockerPeer(_InDirectory):
    """``portalocker.Lock``, one lock object per name (it polls while waiting)."""

    def new(self, name: str) -> Any:
        import portalocker

        return portalocker.Lock(
            os.path.join(self.directory, name + ".portalocker"),
            timeout=3600,
            check_interval=0.001,
            fail_when_locked=False,
        )
