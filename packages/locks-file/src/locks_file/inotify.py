"""Wake a waiter the moment a lock file is released, through Linux inotify (ctypes, no deps).

The kernel gives ``flock`` no timed wait, and polling costs 50-100 ms per handoff. Instead a
releaser touches the file (a one-byte read: ``IN_ACCESS``), and a holder that dies has its file
closed by the kernel (``IN_CLOSE_WRITE``); a waiter watches for either and tries again at once.
The watch is set *before* the attempt that failed, so no release can fall in between.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import sys

IN_ACCESS = 0x00000001
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_CLOSE_NOWRITE = 0x00000010
IN_DELETE_SELF = 0x00000400
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
WAKE_MASK = IN_ACCESS | IN_CLOSE_WRITE | IN_ATTRIB | IN_DELETE_SELF

_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.inotify_init1.argtypes = [ctypes.c_int]
        _libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        _libc = None

AVAILABLE = _libc is not None


class Watch:
    """An inotify watch on one file; ``wait(timeout)`` returns when it changed or time ran out."""

    __slots__ = ("fd", "poller")

    def __init__(self, path: str) -> None:
        assert _libc is not None
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.fd = fd
        if _libc.inotify_add_watch(fd, os.fsencode(path), WAKE_MASK) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, os.strerror(err), path)
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)

    def wait(self, timeout: float | None) -> bool:
        """Block until an event arrives (True) or ``timeout`` seconds pass (False)."""
        ready = self.poller.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999)))
        if ready:
            try:
                os.read(self.fd, 65536)  # drain: the next wait blocks again
            except BlockingIOError:
                pass
        return bool(ready)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
