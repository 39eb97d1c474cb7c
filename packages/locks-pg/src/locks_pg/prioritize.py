"""``prioritize()``: end the sessions that block the wrapped code, and only those.

```python
from locks_pg import prioritize

with transaction.atomic(), prioritize(interval=0.5):
    call_command("migrate")          # whoever holds a lock the migration waits for is terminated
```

While the block runs, a watcher thread asks PostgreSQL every ``interval`` seconds, on a connection
of its own, which sessions block the block's session (``pg_blocking_pids``: the holders of the
lock it waits for and those queued ahead of it) and terminates (``action="terminate"``) or
cancels (``action="cancel"``: their current statement only) them. Sessions that block nobody, or
block someone else, are left alone. Behind a transaction pooler (pgbouncer) use it inside a
transaction, so the block keeps one server session.
"""

from __future__ import annotations

import logging
import threading
from contextlib import ContextDecorator
from datetime import timedelta
from types import TracebackType
from typing import Any

from django.db import DEFAULT_DB_ALIAS

from locks_pg._django import connection_of

__all__ = ["prioritize"]

logger = logging.getLogger("locks.pg")

_ACTIONS = {"terminate": "pg_terminate_backend", "cancel": "pg_cancel_backend"}


class _Watcher(threading.Thread):
    def __init__(self, params: dict[str, Any], pid: int, interval: float, function: str) -> None:
        super().__init__(name=f"locks-pg-prioritize-{pid}", daemon=True)
        self.params = params
        self.pid = pid
        self.interval = interval
        self.function = function
        self.stop = threading.Event()
        self.ended: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(autocommit=True, application_name="locks-prioritize", **self.params) as conn:
                while not self.stop.wait(self.interval):
                    rows = conn.execute(
                        f"SELECT b.pid, {self.function}(b.pid) FROM unnest(pg_blocking_pids(%s)) AS b(pid)",
                        (self.pid,),
                    ).fetchall()
                    for pid, done in rows:
                        if done:
                            logger.warning("prioritize: %s session %s that blocked %s", self.function, pid, self.pid)
                            self.ended.append(pid)
        except Exception as exc:  # noqa: BLE001 - reported at exit
            self.error = exc


class prioritize(ContextDecorator):
    """Terminate (or cancel) the sessions blocking the wrapped code, every ``interval`` seconds.

    Args:
        interval: seconds between two checks (float or timedelta, > 0).
        action: ``"terminate"`` (end the blocking sessions: their locks go with them) or
            ``"cancel"`` (cancel their current statement).
        using: the ``DATABASES`` alias whose session is prioritized.

    After the block, :attr:`ended` lists the pids terminated or cancelled. Needs the blockers'
    role, ``pg_signal_backend`` or superuser; a failing watcher is logged and re-raised at exit
    as ``RuntimeError`` when the block itself succeeded.
    """

    def __init__(
        self, *, interval: float | timedelta = 1.0, action: str = "terminate", using: str = DEFAULT_DB_ALIAS
    ) -> None:
        if isinstance(interval, timedelta):
            interval = interval.total_seconds()
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval < float("inf"):
            raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
        if action not in _ACTIONS:
            raise ValueError(f"action must be 'terminate' or 'cancel', not {action!r}")
        self.interval = float(interval)
        self.action = action
        self.using = using
        self.ended: list[int] = []
        self._state = threading.local()

    def __enter__(self) -> prioritize:
        from locks_pg.connection import conninfo_from_django

        connection = connection_of(self.using)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        watcher = _Watcher(conninfo_from_django(self.using), pid, self.interval, _ACTIONS[self.action])
        stack: list[_Watcher] = self._state.__dict__.setdefault("stack", [])
        stack.append(watcher)
        watcher.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        watcher: _Watcher = self._state.stack.pop()
        watcher.stop.set()
        watcher.join()
        self.ended = list(watcher.ended)
        if watcher.error is not None:
            logger.error("prioritize: the watcher failed: %s", watcher.error)
            if exc_type is None:
                raise RuntimeError(f"prioritize could not watch for blockers: {watcher.error}") from watcher.error
