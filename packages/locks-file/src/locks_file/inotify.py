"""Wake a waiter the moment a lock file is released, through Linux inotify (ctypes, no deps).

The kernel gives ``flock`` no timed wait, and polling costs 50-100 ms per handoff. Instead a
releaser touches the file (a one-byte read: ``IN_ACCESS``), and a holder that dies has its file
closed by the kernel (``IN_CLOSE_WRITE``); a waiter watches for either and tries again at once.
The watch is set *before* the attempt that failed, so no release can fall in between.

Each thread keeps one inotify instance and moves it from watch to watch: closing an instance
waits for the kernel's RCU grace period (measured: 3 ms on average, up to 35 ms), which a wait
that gives up at its deadline would spend late.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import sys
import threading

IN_ACCESS = 0x00000001
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_CLOSE_NOWRITE = 0x00000010
IN_DELETE_SELF = 0x00000400
IN_IGNORED = 0x00008000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
WAKE_MASK = IN_ACCESS | IN_CLOSE_WRITE | IN_ATTRIB | IN_DELETE_SELF

_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.inotify_init1.argtypes = [ctypes.c_int]
        _libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        _libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        _libc = None

AVAILABLE = _libc is not None


_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


class _Instance:
    """One inotify instance of a thread, reused watch after watch."""

    __slots__ = ("fd", "pid", "poller")

    def __init__(self) -> None:
        assert _libc is not None
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.fd = fd
        self.pid = os.getpid()
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)

    def events(self) -> list[tuple[int, int]]:
        """The (watch, mask) pairs queued so far (none: an empty list), without blocking."""
        found: list[tuple[int, int]] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return found
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _, length = _EVENT.unpack_from(data, offset)
                found.append((wd, mask))
                offset += _EVENT.size + length

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


_local = threading.local()


def _instance() -> _Instance:
    instance: _Instance | None = getattr(_local, "instance", None)
    if instance is None or instance.pid != os.getpid():
        # (a forked child's copy of its parent's instance is closed when dropped: the parent's stays)
        instance = _local.instance = _Instance()
    return instance


class Watch:
    """An inotify watch on one file; ``wait(timeout)`` returns when it changed or time ran out."""

    __slots__ = ("fd", "instance", "wd")

    def __init__(self, path: str) -> None:
        assert _libc is not None
        instance = _instance()
        instance.events()  # left over from an earlier watch: not ours
        wd = _libc.inotify_add_watch(instance.fd, os.fsencode(path), WAKE_MASK)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        self.instance = instance
        self.fd = instance.fd
        self.wd = wd

    def wait(self, timeout: float | None) -> bool:
        """Block until an event arrives (True) or ``timeout`` seconds pass (False)."""
        ready = self.instance.poller.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999)))
        if ready:
            self.instance.events()  # drain: the next wait blocks again
        return bool(ready)

    def close(self) -> None:
        assert _libc is not None
        _libc.inotify_rm_watch(self.fd, self.wd)  # the file may be gone: then so is the watch

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
