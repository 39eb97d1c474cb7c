"""PostgreSQL release notifications: one listening connection per backend wakes its waiters.

A release runs ``pg_notify('locks_rowlock', digest)`` in its own statement; the listener thread
sets the events of the waiters of that digest. Waiters subscribe *before* they try the lock, so a
release between their failed attempt and their wait is never missed. A lost notification (the
listener reconnecting) costs at most one fallback poll.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from typing import Any

logger = logging.getLogger("locks_rowlock")


class Listener:
    def __init__(self, pool: Any, channel: str) -> None:
        self._pool = pool
        self._channel = channel
        self._waiters: dict[str, set[threading.Event]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._idle_since: float | None = None
        #: Set while a LISTEN is in place: only then may waiters rely on notifications.
        self.ready = threading.Event()

    def subscribe(self, digest: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._waiters.setdefault(digest, set()).add(event)
            self._idle_since = None
            if self._thread is None or not self._thread.is_alive():
                self._stopping.clear()
                self._thread = threading.Thread(target=self._run, name="locks-rowlock-listen", daemon=True)
                self._thread.start()
        return event

    def unsubscribe(self, digest: str, event: threading.Event) -> None:
        with self._lock:
            events = self._waiters.get(digest)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiters[digest]

    def _wake(self, digest: str | None) -> None:
        with self._lock:
            if digest is None:
                targets = [e for events in self._waiters.values() for e in events]
            else:
                targets = list(self._waiters.get(digest, ()))
        for event in targets:
            event.set()

    def stop(self) -> None:
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)
        self._thread = None

    def forget(self) -> None:
        """After a fork: the child has no listener thread."""
        self._lock = threading.Lock()
        self._waiters = {}
        self._thread = None
        self._stopping = threading.Event()
        self.ready = threading.Event()

    #: The listener closes its connection after this long without waiters (seconds).
    idle_timeout = 30.0

    def _idle(self) -> bool:
        """Whether nobody has waited for :attr:`idle_timeout` seconds (no side effect)."""
        with self._lock:
            if self._waiters:
                self._idle_since = None
                return False
            if self._idle_since is None:
                self._idle_since = time.monotonic()
            return time.monotonic() - self._idle_since >= self.idle_timeout

    def _retire(self) -> bool:
        """Called with the connection closed: stop the thread unless someone subscribed since
        (``subscribe`` starts no second thread while this one is alive)."""
        with self._lock:
            if self._waiters:
                return False
            self._thread = None
            return True

    def _run(self) -> None:
        warned = False
        while not self._stopping.is_set():
            idle_exit = False
            wrapper = self._pool.new()
            try:
                wrapper.ensure_connection()
                connection = wrapper.connection
                with connection.cursor() as cursor:
                    cursor.execute(f'LISTEN "{self._channel}"')
                self.ready.set()
                warned = False
                self._wake(None)  # anything released before the LISTEN: look again
                idle_exit = self._listen(connection)
            except Exception as exc:  # noqa: BLE001 - waiters fall back to polling meanwhile
                if not self._stopping.is_set() and not warned:
                    logger.warning("release notifications interrupted (%s); waiters poll until they are back", exc)
                    warned = True
            finally:
                self.ready.clear()
                self._pool.discard(wrapper)
            self._wake(None)
            if self._idle() and self._retire():
                return
            if not idle_exit:
                self._stopping.wait(0.5)  # before reconnecting

    def _listen(self, connection: Any) -> bool:
        """Wake waiters until stopped (False) or idle for long (True)."""
        notifies = getattr(connection, "notifies", None)
        if callable(notifies):  # psycopg 3 (3.2+: timeout)
            while not self._stopping.is_set():
                for note in connection.notifies(timeout=0.5):
                    self._wake(note.payload)
                    if self._stopping.is_set():
                        return False
                if self._idle():
                    return True
        else:  # psycopg2
            while not self._stopping.is_set():
                if select.select([connection], [], [], 0.5)[0]:
                    connection.poll()
                    while connection.notifies:
                        self._wake(connection.notifies.pop(0).payload)
                elif self._idle():
                    return True
        return False
