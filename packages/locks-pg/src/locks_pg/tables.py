"""``table_lock(*models_or_tables, mode=...)``: ``LOCK TABLE`` in the caller's transaction.

```python
from locks_pg import table_lock, SHARE_ROW_EXCLUSIVE

with transaction.atomic():
    with table_lock(Invoice, "audit.events", mode=SHARE_ROW_EXCLUSIVE, timeout=5):
        ...                                   # held until the transaction ends
```

PostgreSQL releases table locks only at the end of the transaction, so a table lock needs one
(:class:`~locks_pg.TransactionRequired` otherwise) and leaving the ``with`` block does not release
it. ``timeout=0`` (or ``nowait=True``) is ``NOWAIT``; a positive timeout waits under a
transaction-local ``lock_timeout`` inside a savepoint, so running out raises
:class:`locks.LockTimeout` and leaves the caller's transaction usable, its ``lock_timeout`` as it was.
"""

from __future__ import annotations

from contextlib import ContextDecorator
from datetime import timedelta
from types import TracebackType
from typing import Any

from django.db import DEFAULT_DB_ALIAS

from locks.exceptions import LockTimeout
from locks_pg._django import connection_of, milliseconds, require_transaction
from locks_pg.transaction_scope import sqlstate

__all__ = [
    "ACCESS_EXCLUSIVE",
    "ACCESS_SHARE",
    "EXCLUSIVE",
    "MODES",
    "ROW_EXCLUSIVE",
    "ROW_SHARE",
    "SHARE",
    "SHARE_ROW_EXCLUSIVE",
    "SHARE_UPDATE_EXCLUSIVE",
    "table_lock",
]

# The eight table lock modes, weakest first (PostgreSQL's "Table-Level Locks").
ACCESS_SHARE = "ACCESS SHARE"
ROW_SHARE = "ROW SHARE"
ROW_EXCLUSIVE = "ROW EXCLUSIVE"
SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"
SHARE = "SHARE"
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
EXCLUSIVE = "EXCLUSIVE"
ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
MODES = (
    ACCESS_SHARE,
    ROW_SHARE,
    ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    EXCLUSIVE,
    ACCESS_EXCLUSIVE,
)


def _mode(mode: object) -> str:
    if not isinstance(mode, str):
        raise TypeError(f"mode must be one of locks_pg's mode constants, not {type(mode).__name__}")
    normal = " ".join(mode.replace("_", " ").upper().split())
    if normal not in MODES:
        raise ValueError(f"unknown table lock mode {mode!r}; one of: {', '.join(MODES)}")
    return normal


def _table_name(item: Any) -> str:
    """A model class or instance, an ``"app_label.Model"`` label, or a table name (``"schema.t"``)."""
    meta = getattr(item, "_meta", None)
    if meta is not None:
        return str(meta.db_table)
    if not isinstance(item, str) or not item:
        raise TypeError(f"table_lock takes models or table names, not {item!r}")
    if item.count(".") == 1:
        from django.apps import apps

        try:
            return str(apps.get_model(item)._meta.db_table)
        except (LookupError, ValueError):
            pass  # not a model label: a schema-qualified table
    return item


class table_lock(ContextDecorator):
    """Lock tables for the rest of the current transaction (a context manager or a decorator).

    Args:
        *models_or_tables: models, ``"app_label.Model"`` labels or table names (``"schema.name"``).
        mode: one of the eight mode constants (default :data:`ACCESS_EXCLUSIVE`).
        timeout: ``None`` waits as the session's ``lock_timeout`` says; ``0`` is ``NOWAIT``;
            otherwise seconds (float or timedelta).
        nowait: the same as ``timeout=0``.
        using: the ``DATABASES`` alias.

    Raises:
        TransactionRequired: outside a transaction.
        LockTimeout: the tables could not be locked in time (the transaction stays usable).
    """

    def __init__(
        self,
        *models_or_tables: Any,
        mode: str = ACCESS_EXCLUSIVE,
        timeout: float | timedelta | None = None,
        nowait: bool = False,
        using: str = DEFAULT_DB_ALIAS,
    ) -> None:
        if not models_or_tables:
            raise ValueError("table_lock needs at least one model or table")
        if not isinstance(nowait, bool):
            raise TypeError("nowait must be a bool")
        self.mode = _mode(mode)
        self.milliseconds = milliseconds(timeout, "timeout", zero_ok=True)
        self.nowait = nowait or (timeout is not None and self.milliseconds == 0)
        self.using = using
        self._items = models_or_tables
        self._tables: list[str] | None = None

    @property
    def tables(self) -> list[str]:
        if self._tables is None:  # resolved late: models may be declared after the decorator
            self._tables = [_table_name(item) for item in self._items]
        return self._tables

    def __enter__(self) -> table_lock:
        from django.db import DatabaseError, transaction

        connection = connection_of(self.using)
        require_transaction(connection, "table_lock")
        quote = connection.ops.quote_name
        names = ", ".join(".".join(quote(part) for part in table.split(".")) for table in self.tables)
        sql = f"LOCK TABLE {names} IN {self.mode} MODE" + (" NOWAIT" if self.nowait else "")
        if not self.nowait and not self.milliseconds:
            with connection.cursor() as cursor:
                cursor.execute(sql)
            return self
        try:
            # LOCK's failure aborts the transaction it runs in: run it in a savepoint.
            with transaction.atomic(using=self.using), connection.cursor() as cursor:
                if self.nowait:
                    cursor.execute(sql)
                else:
                    cursor.execute(
                        "SELECT current_setting('lock_timeout'), set_config('lock_timeout', %s, true)",
                        [str(self.milliseconds)],
                    )
                    previous = cursor.fetchone()[0]
                    cursor.execute(sql)
                    cursor.execute("SELECT set_config('lock_timeout', %s, true)", [previous])
        except DatabaseError as exc:
            if sqlstate(exc) == "55P03":
                how = "at once (NOWAIT)" if self.nowait else f"within {self.milliseconds / 1000:g}s"
                raise LockTimeout(f"{', '.join(self.tables)} could not be locked in {self.mode} mode {how}") from exc
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Nothing to do: PostgreSQL holds table locks until the transaction ends."""

    def __repr__(self) -> str:
        return f"table_lock({', '.join(map(repr, self._items))}, mode={self.mode!r})"
