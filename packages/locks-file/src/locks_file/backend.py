"""OS file locks: ``flock`` on one file per lock name, in a private directory.

Why ``flock``: it belongs to the open file description, so two threads of one process (each with
its own ``open()``) exclude each other as two processes do, and the kernel releases it when the
holder dies. ``fcntl``/``lockf`` locks belong to the process and would let threads share a lock.

Each lock file is 4 KiB, mapped in memory, and records the fencing token, the holder (pid, host,
thread) and since when, so ``holders()`` can list them without a server. Open descriptors are
kept in a small pool between acquisitions; a file is never unlinked while another process may
lock it: :meth:`FileLockBackend.remove_stale_files` locks it first and marks it *retired*, and an
acquirer that finds the mark on the file it locked lets go and opens the new file.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from locks.backends import (
    FENCING,
    LISTING,
    NOTIFY,
    SESSION_BOUND,
    SHARED,
    WATCHDOG,
    BaseLockBackend,
    Hold,
    HolderInfo,
    LockRequest,
    Option,
)
from locks.exceptions import BackendUnavailable, LockLost, NotSupported
from locks.keys import SAFE_CHARS, Key, KeySpec, LockName
from locks_file import inotify

SUFFIX = ".lock"
FILE_SIZE = 4096
MAGIC = b"LCK1"
# Layout of the mapped page: magic, retired flag, token, since (Unix time), pid, lengths.
_HEADER = struct.Struct(">4sB3xQdIHH")
_TOKEN = struct.Struct(">QdI")  # token, since, pid at offset 8
_OWNER_AT = _HEADER.size
_OWNER_MAX = 256
_NAME_AT = _OWNER_AT + _OWNER_MAX
_NAME_MAX = FILE_SIZE - _NAME_AT
_RETIRED_AT = 4
_LENGTHS_AT = 28
_IDLE_PER_KEY = 2
_IDLE_KEYS = 256  # at most 512 idle descriptors
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


@dataclass(eq=False)
class _Slot:
    """An open lock file: descriptor and mapping, reused between acquisitions of one key."""

    fd: int
    mm: mmap.mmap
    owner: object = None  # the Owner whose details the page records

    def close(self) -> None:
        try:
            self.mm.close()
        finally:
            os.close(self.fd)


def default_directory() -> str:
    """``$XDG_RUNTIME_DIR/locks`` when there is one, else ``<tmp>/locks-<uid>``: private to the
    user, so no other account can create or swap lock files."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "locks")
    return os.path.join(tempfile.gettempdir(), f"locks-{os.geteuid()}")


def _file_mode(value: Any) -> int:
    """A permission mode: an int (``0o660``) or its octal digits as a string (``"660"``)."""
    if isinstance(value, str):
        try:
            value = int(value, 8)
        except ValueError:
            raise ValueError(f"must be an octal permission mode such as '660', not {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value & ~0o777:
        raise ValueError(f"must be a permission mode such as 0o600, not {value!r}")
    return value


class FileLockBackend(BaseLockBackend):
    """Locks on one machine with OS file locks; the default backend, no server needed.

    ``LOCATION``: the directory of the lock files (created with mode 0700; default
    :func:`default_directory`). ``OPTIONS``: ``FILE_MODE`` (default ``0o600``; ``0o660`` with a
    group-shared directory lets several accounts share locks).
    """

    OPTIONS = (
        Option(
            "FILE_MODE",
            int,
            0o600,
            "permissions of new lock files; `0o660` in a group-shared `LOCATION` lets several accounts "
            'share locks (a string is octal: `"660"`)',
            parser=_file_mode,
            shown_default="0o600",
        ),
    )
    capabilities = frozenset(
        {SHARED, FENCING, LISTING, SESSION_BOUND, WATCHDOG} | ({NOTIFY} if inotify.AVAILABLE else set())
    )
    key_spec = KeySpec(kind="text", max_length=200, safe_chars=SAFE_CHARS - {":", "="})
    watchdog_interval = 5.0

    def __init__(
        self, alias: str = "default", location: str | None = None, options: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(alias, location, options)
        if sys.platform == "win32":
            raise NotSupported("locks_file uses flock: Linux, macOS and the BSDs are supported, Windows is not")
        if location is not None and not isinstance(location, str):
            raise ImproperlyConfigured("the file backend's LOCATION must be a directory path (str)")
        self.file_mode: int = self.settings["FILE_MODE"]
        self._private = location is None
        self.directory = os.path.abspath(location) if location else default_directory()
        self._ready = False
        self._idle: dict[Key, list[_Slot]] = {}
        self._pool_lock = threading.Lock()
        self._pid = os.getpid()

    @classmethod
    def from_url(cls, url: str, alias: str = "default", **options: Any) -> FileLockBackend:
        """``file:///var/lock/app`` (``file://`` alone: the default private directory)."""
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file lock URLs name a local directory (file:///path), not host {parts.netloc!r}")
        path = unquote(parts.path) or None
        return cls(alias=alias, location=path, options=options)

    # -- the directory and its files --------------------------------------------------------
    def _ensure_directory(self) -> None:
        if self._ready:
            return
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            info = os.lstat(self.directory)
        except OSError as exc:
            raise BackendUnavailable(f"lock directory {self.directory!r} cannot be used: {exc.strerror}") from exc
        if not stat.S_ISDIR(info.st_mode):
            raise BackendUnavailable(f"lock directory {self.directory!r} is not a directory")
        if self._private and (info.st_uid != os.geteuid() or info.st_mode & 0o077):
            # Someone else could create or swap our lock files: refuse rather than guess.
            raise BackendUnavailable(
                f"lock directory {self.directory!r} is not private to this user (owner uid {info.st_uid}, "
                f"mode {stat.S_IMODE(info.st_mode):o}); remove it or set LOCATION"
            )
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise BackendUnavailable(f"lock directory {self.directory!r} is not writable")
        self._ready = True

    def path_of(self, key: Key) -> str:
        """The lock file of a key."""
        return os.path.join(self.directory, f"{key}{SUFFIX}")

    def _open(self, key: Key) -> _Slot:
        idle = self._idle.get(key)
        if idle:
            try:
                return idle.pop()  # atomic: no lock on the hot path
            except IndexError:
                pass
        self._ensure_directory()
        try:
            fd = os.open(self.path_of(key), _OPEN_FLAGS, self.file_mode)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BackendUnavailable(f"{self.path_of(key)!r} is a symbolic link: refused") from exc
            raise BackendUnavailable(f"cannot open lock file {self.path_of(key)!r}: {exc.strerror}") from exc
        try:
            if os.fstat(fd).st_size < FILE_SIZE:
                os.ftruncate(fd, FILE_SIZE)  # never shrinks: racing creators agree on the size
            mm = mmap.mmap(fd, FILE_SIZE)
        except BaseException:
            os.close(fd)
            raise
        return _Slot(fd, mm)

    def _put_back(self, key: Key, slot: _Slot) -> None:
        idle = self._idle.get(key)
        if idle is None:
            with self._pool_lock:
                if len(self._idle) >= _IDLE_KEYS:
                    # Too many names kept open: forget another key's descriptors.
                    for slot_ in self._idle.pop(next(iter(self._idle)), []):
                        slot_.close()
                idle = self._idle.setdefault(key, [])
        if len(idle) < _IDLE_PER_KEY:
            idle.append(slot)
        else:
            slot.close()

    # -- primitives ---------------------------------------------------------------------------
    def try_acquire(self, request: LockRequest) -> Hold | None:
        return self._lock(request, blocking=False)

    def _lock(self, request: LockRequest, blocking: bool) -> Hold | None:
        operation = fcntl.LOCK_SH if request.shared else fcntl.LOCK_EX
        if not blocking:
            operation |= fcntl.LOCK_NB
        while True:
            slot = self._open(request.key)
            try:
                fcntl.flock(slot.fd, operation)
            except BlockingIOError:
                self._put_back(request.key, slot)
                return None
            except BaseException:
                slot.close()
                raise
            mm = slot.mm
            if mm[_RETIRED_AT]:
                slot.close()  # a cleaner removed this file: lock the one at the path now
                continue
            if request.shared:
                token = _TOKEN.unpack_from(mm, 8)[0]
            else:
                token = _TOKEN.unpack_from(mm, 8)[0] + 1
                _TOKEN.pack_into(mm, 8, token, time.time(), request.owner.pid)
                if slot.owner is not request.owner:
                    self._record(mm, request)
                    slot.owner = request.owner
            return Hold(request, data=slot, token=token)

    @staticmethod
    def _record(mm: mmap.mmap, request: LockRequest) -> None:
        owner = str(request.owner).encode("utf-8", "replace")[:_OWNER_MAX]
        name = str(request.name).encode("utf-8", "surrogatepass")[:_NAME_MAX]
        mm[0:4] = MAGIC
        mm[_OWNER_AT : _OWNER_AT + len(owner)] = owner
        mm[_NAME_AT : _NAME_AT + len(name)] = name
        struct.pack_into(">HH", mm, _LENGTHS_AT, len(owner), len(name))

    def acquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        hold = self.try_acquire(request)
        if hold is not None or timeout == 0:
            return hold
        if timeout is None:
            # No deadline: wait in the kernel's own queue, woken by the release itself.
            return self._lock(request, blocking=True)
        if not inotify.AVAILABLE:
            return super().acquire(request, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        path = self.path_of(request.key)
        while True:
            # Watch first, then try: a release between the two still wakes us.
            try:
                watch = inotify.Watch(path)
            except OSError:
                return super().acquire(request, None if deadline is None else max(0.0, deadline - time.monotonic()))
            with watch:
                inode = os.fstat(watch.fd).st_ino  # noqa: F841 - the watch follows the inode it was set on
                while True:
                    hold = self.try_acquire(request)
                    if hold is not None:
                        return hold
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return None
                    # A one-second cap is the safety net for a file replaced under the watch.
                    if not watch.wait(1.0 if remaining is None else min(remaining, 1.0)):
                        break

    def release(self, hold: Hold) -> None:
        slot: _Slot = hold.data
        try:
            fcntl.flock(slot.fd, fcntl.LOCK_UN)
            os.pread(slot.fd, 1, 0)  # the access wakes inotify waiters
        except OSError as exc:
            slot.close()
            raise LockLost(f"lock file of {hold.name!r} failed on release: {exc}", hold.name) from exc
        self._put_back(hold.key, slot)

    def check(self, hold: Hold) -> bool:
        """Still held: the path still names the locked file (nobody deleted or replaced it)."""
        slot: _Slot = hold.data
        try:
            return os.stat(self.path_of(hold.key)).st_ino == os.fstat(slot.fd).st_ino
        except OSError:
            return False

    def is_locked(self, key: Key) -> bool:
        path = self.path_of(key)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise BackendUnavailable(f"cannot stat {path!r}: {exc.strerror}") from exc
        locked = _kernel_locks()
        if locked is not None:
            return (info.st_dev, info.st_ino) in locked
        return self._probe(path)

    @staticmethod
    def _probe(path: str) -> bool:
        # Without /proc/locks (macOS, BSD): try a shared lock for an instant. A shared holder looks
        # free, and an exclusive try-once elsewhere can fail during that instant: documented.
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def holders(self, prefix: str | None = None) -> list[HolderInfo]:
        """The held locks of the directory: from ``/proc/locks`` on Linux (pid of every holder,
        shared ones included) and the details each exclusive holder recorded in its file."""
        self._ensure_directory()
        kernel = _kernel_locks()
        found = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if not entry.name.endswith(SUFFIX) or not entry.is_file(follow_symlinks=False):
                    continue
                info = entry.stat(follow_symlinks=False)
                if kernel is not None:
                    holders = kernel.get((info.st_dev, info.st_ino))
                    if not holders:
                        continue
                elif not self._probe(entry.path):
                    continue
                else:
                    holders = []
                record = _read_record(entry.path)
                if prefix is not None and not (record.get("name") or "").startswith(prefix):
                    continue
                key = entry.name[: -len(SUFFIX)]
                shared = bool(holders) and all(mode == "READ" for mode, _ in holders)
                pids = [pid for _, pid in holders]
                found.append(
                    HolderInfo(
                        key=key,
                        name=record.get("name"),
                        shared=shared,
                        owner=None if shared else record.get("owner"),
                        pid=pids[0] if pids else record.get("pid"),
                        host=(record.get("owner") or "").split(":")[0] or None,
                        since=None if shared else record.get("since"),
                        token=record.get("token"),
                        extra={"pids": pids, "path": entry.path},
                    )
                )
        return found

    def force_release(self, name: LockName) -> int:
        """An OS file lock cannot be broken: when a live process holds it this raises
        :class:`NotSupported` naming the pid; a stale file is removed, and 0 is returned."""
        key = self.make_key(self.validate_name(name))
        self._ensure_directory()
        path = self.path_of(key)
        if not os.path.exists(path):
            return 0
        if not self._remove_if_free(path):
            pids = []
            kernel = _kernel_locks()
            if kernel is not None:
                info = os.stat(path)
                pids = [pid for _, pid in kernel.get((info.st_dev, info.st_ino), [])]
            who = f"process {', '.join(map(str, pids))}" if pids else "a live process"
            raise NotSupported(f"{name!r} is held by {who}: an OS file lock cannot be broken; stop the holder", name)
        return 0

    def remove_stale_files(self) -> int:
        """Delete lock files nobody holds; the number removed. Safe while locks are in use."""
        self._ensure_directory()
        removed = 0
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name.endswith(SUFFIX) and entry.is_file(follow_symlinks=False):
                    removed += self._remove_if_free(entry.path)
        return removed

    def _remove_if_free(self, path: str) -> bool:
        try:
            fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return True
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            # Whoever opened this inode before the unlink will find the mark once it locks it.
            os.pwrite(fd, b"\x01", _RETIRED_AT)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            return True
        finally:
            os.close(fd)

    def close(self) -> None:
        with self._pool_lock:
            idle, self._idle = self._idle, {}
        for slots in idle.values():
            for slot in slots:
                slot.close()

    def after_fork(self) -> None:
        # The child shares its parent's open file descriptions: close its copies (which leaves
        # the parent's locks alone) so a lock the parent releases is really free.
        held = [entry.hold.data for entry in self.holds.entries()]
        super().after_fork()
        self._pool_lock = threading.Lock()
        idle, self._idle = self._idle, {}
        for slot in held + [s for slots in idle.values() for s in slots]:
            try:
                slot.close()
            except (OSError, ValueError):
                pass


def _kernel_locks() -> dict[tuple[int, int], list[tuple[str, int]]] | None:
    """Held ``flock`` locks from ``/proc/locks``: (device, inode) → [(READ|WRITE, pid)], or None
    where the file does not exist. Blocked requests (``->``) are left out."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    result: dict[tuple[int, int], list[tuple[str, int]]] = {}
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            device = os.makedev(int(major, 16), int(minor, 16))
            result.setdefault((device, int(inode)), []).append((fields[3], int(fields[4])))
        except ValueError:
            continue
    return result


def _read_record(path: str) -> dict[str, Any]:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return {}
    try:
        page = os.pread(fd, FILE_SIZE, 0)
    finally:
        os.close(fd)
    if len(page) < _HEADER.size or page[:4] != MAGIC:
        return {}
    _, _, token, since, pid, owner_len, name_len = _HEADER.unpack_from(page)
    return {
        "token": token,
        "since": since or None,
        "pid": pid or None,
        "owner": page[_OWNER_AT : _OWNER_AT + owner_len].decode("utf-8", "replace") or None,
        "name": page[_NAME_AT : _NAME_AT + name_len].decode("utf-8", "replace") or None,
    }
