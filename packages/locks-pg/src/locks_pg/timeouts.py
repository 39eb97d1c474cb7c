"""``lock_timeout(seconds)``: bound how long statements wait for locks, then put it back.

```python
from locks_pg import lock_timeout

with transaction.atomic(), lock_timeout(2):
    Invoice.objects.select_for_update().get(pk=1)    # LockNotAvailable after 2 s instead of forever
```

Inside a transaction the value is set with ``is_local`` (it ends with the transaction, whatever
happens); outside, for the session. Leaving the block restores the previous value, nested blocks
included. When the transaction is already aborted (an error inside the block), nothing is sent:
the rollback to come restores the value by itself.
"""

from __future__ import annotations

import threading
from contextlib import ContextDecorator
from datetime import timedelta
from types import TracebackType

from django.db import DEFAULT_DB_ALIAS

from locks_pg._django import connection_of, in_failed_transaction, milliseconds

__all__ = ["lock_timeout"]


class lock_timeout(ContextDecorator):
    """Set PostgreSQL's ``lock_timeout`` on a Django connection for a block or a function.

    Args:
        seconds: the longest a statement waits for a lock (float or timedelta, at least 1 ms);
            ``None`` waits without limit.
        using: the ``DATABASES`` alias.

    A statement that waits longer fails with ``django.db.OperationalError`` (SQLSTATE 55P03),
    which aborts the transaction it is in (use a savepoint, ``transaction.atomic()``, to carry on).
    """

    def __init__(self, seconds: float | timedelta | None, *, using: str = DEFAULT_DB_ALIAS) -> None:
        self.milliseconds = milliseconds(seconds, "lock_timeout", zero_ok=False)
        self.using = using
        self._state = threading.local()  # a decorated function may run in many threads at once

    def _stack(self) -> list[tuple[str, bool]]:
        stack: list[tuple[str, bool]] | None = getattr(self._state, "stack", None)
        if stack is None:
            stack = self._state.stack = []
        return stack

    def __enter__(self) -> lock_timeout:
        connection = connection_of(self.using)
        local = bool(connection.in_atomic_block)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('lock_timeout'), set_config('lock_timeout', %s, %s)",
                [str(self.milliseconds), local],
            )
            previous = cursor.fetchone()[0]
        self._stack().append((previous, local))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        previous, local = self._stack().pop()
        connection = connection_of(self.using)
        if connection.connection is None:
            return  # closed meanwhile: a new session starts from the defaults
        if local and (not connection.in_atomic_block or in_failed_transaction(connection)):
            return  # the transaction ended or will roll back: PostgreSQL restores the value
        if in_failed_transaction(connection):
            return
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('lock_timeout', %s, %s)", [previous, local])

    def __repr__(self) -> str:
        return f"lock_timeout({self.milliseconds / 1000:g}s, using={self.using!r})"
