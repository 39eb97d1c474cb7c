"""``LOCK TABLES`` on a Django connection: :class:`TableLock`.

Table locks belong to the connection that runs the queries, so (unlike user locks) they are taken
on Django's own connection of the ``using`` alias. The body runs in a transaction, as the server's
manual prescribes for InnoDB (``SET autocommit = 0; LOCK TABLES ...; ... COMMIT; UNLOCK TABLES``):
leaving the block commits (or rolls back when it raised) and then unlocks.

While the tables are locked, the connection may use only the locked tables (each under the name
it was locked with): a query on any other table fails with "Table ... was not locked with LOCK
TABLES". List every table the block touches, including through related models.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Iterable
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model
from django.db.transaction import Atomic, TransactionManagementError, atomic

from locks import options as lock_options
from locks.exceptions import LockTimeout, NotSupported

__all__ = ["TableLock"]

F = TypeVar("F", bound=Callable[..., Any])

ER_LOCK_WAIT_TIMEOUT = 1205

TableSpec = str | type[Model]


def table_names(items: Iterable[TableSpec] | None, what: str) -> list[str]:
    """Table names of models and names, parents of multi-table inheritance included, in order,
    without duplicates. ``items`` itself is left as it was."""
    if items is None:
        return []
    if isinstance(items, (str, type)):
        raise TypeError(f"{what} must be a list of models or table names, not a single {type(items).__name__}")
    pending = list(items)  # a copy: the caller's list is never changed
    names: dict[str, None] = {}
    while pending:
        item = pending.pop(0)
        if isinstance(item, type) and issubclass(item, Model):
            meta = item._meta
            if meta.abstract:
                raise ValueError(f"{item.__name__} is an abstract model: it has no table to lock")
            names[meta.db_table] = None
            pending.extend(meta.parents)  # multi-table inheritance: the parents' tables too
        elif isinstance(item, str):
            if not item:
                raise ValueError(f"{what}: a table name must not be empty")
            names[item] = None
        else:
            raise TypeError(f"{what}: expected a model class or a table name, not {item!r}")
    return list(names)


class TableLock:
    """Lock tables for reading or writing for the duration of a block (``LOCK TABLES``).

    ```python
    with TableLock(read=[Customer], write=[Invoice, "audit_log"]):
        ...

    @TableLock(write=[Counter], timeout=5)
    def bump(): ...
    ```

    Args:
        read: models or table names locked for reading (others may read, nobody may write).
        write: models or table names locked for writing (nobody else may read or write).
            A model brings its multi-table-inheritance parents along. A table in both lists is
            locked for writing.
        using: the ``DATABASES`` alias (default ``"default"``).
        timeout: how long to wait for the locks (seconds or a timedelta; ``None``: the server's
            ``lock_wait_timeout``). The server counts whole seconds: a fraction rounds up; ``0``
            is ``NOWAIT`` on MariaDB and one second on MySQL.

    Raises:
        TransactionManagementError: entering it inside an open transaction (``LOCK TABLES``
            would commit that transaction).
        locks.LockTimeout: the tables could not be locked within ``timeout``.
    """

    def __init__(
        self,
        read: Iterable[TableSpec] | None = None,
        write: Iterable[TableSpec] | None = None,
        using: str | None = None,
        timeout: float | timedelta | None = None,
    ) -> None:
        self.write: list[str] = table_names(write, "write")
        written = set(self.write)
        self.read: list[str] = [name for name in table_names(read, "read") if name not in written]
        if not self.read and not self.write:
            raise ValueError("TableLock needs at least one table to lock (read=[...] or write=[...])")
        if using is not None and not isinstance(using, str):
            raise TypeError(f"using must be a DATABASES alias (str), not {type(using).__name__}")
        self.using = using or DEFAULT_DB_ALIAS
        self.timeout = lock_options.timeout(timeout)
        self._state = threading.local()  # one open block per thread (as Django's connections are)

    def __repr__(self) -> str:
        return f"<TableLock read={self.read} write={self.write} using={self.using!r}>"

    def _statement(self, quote: Callable[[str], str], mariadb: bool) -> str:
        parts = [f"{quote(name)} READ" for name in self.read] + [f"{quote(name)} WRITE" for name in self.write]
        sql = "LOCK TABLES " + ", ".join(parts)
        if mariadb and self.timeout is not None:
            sql += " NOWAIT" if self.timeout == 0 else f" WAIT {max(1, math.ceil(self.timeout))}"
        return sql

    def acquire(self) -> None:
        """Start a transaction and lock the tables (on this thread's connection of ``using``)."""
        connection = connections[self.using]
        if connection.vendor != "mysql":
            raise NotSupported(f"TableLock needs MySQL or MariaDB; DATABASES[{self.using!r}] is {connection.vendor}")
        if getattr(self._state, "atomic", None) is not None:
            raise TransactionManagementError(f"{self!r} is already held in this thread: it does not nest")
        if connection.in_atomic_block or not connection.get_autocommit():
            raise TransactionManagementError(
                "TableLock cannot be taken inside an open transaction: LOCK TABLES would commit it. "
                "Take the table lock first, outside transaction.atomic()."
            )
        block = atomic(using=self.using)
        block.__enter__()  # SET autocommit = 0, as InnoDB needs around LOCK TABLES
        try:
            with connection.cursor() as cursor:
                mariadb = bool(getattr(connection, "mysql_is_mariadb", False))
                previous = None
                if self.timeout is not None and not mariadb:
                    cursor.execute("SELECT @@SESSION.lock_wait_timeout")
                    (previous,) = cursor.fetchone()
                    cursor.execute("SET SESSION lock_wait_timeout = %s", [max(1, math.ceil(self.timeout))])
                try:
                    cursor.execute(self._statement(connection.ops.quote_name, mariadb))
                finally:
                    if previous is not None:
                        cursor.execute("SET SESSION lock_wait_timeout = %s", [previous])
        except BaseException as exc:
            block.__exit__(type(exc), exc, exc.__traceback__)
            if _error_code(exc) == ER_LOCK_WAIT_TIMEOUT:
                raise LockTimeout(f"{self!r} could not lock the tables within {self.timeout}s", None) from exc
            raise
        self._state.atomic = block

    def release(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        """Commit (or roll back, when given the exception of the block) and unlock the tables."""
        block: Atomic | None = getattr(self._state, "atomic", None)
        if block is None:
            raise TransactionManagementError(f"{self!r} is not held in this thread")
        self._state.atomic = None
        try:
            block.__exit__(exc_type, exc, tb)
        finally:
            connection = connections[self.using]
            if connection.connection is not None:
                with connection.cursor() as cursor:
                    cursor.execute("UNLOCK TABLES")

    def __enter__(self) -> TableLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release(exc_type, exc, tb)

    def __call__(self, func: F) -> F:
        @functools.wraps(func)
        def locked_call(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return locked_call  # type: ignore[return-value]


def _error_code(exc: BaseException) -> int | None:
    while exc is not None:
        args = getattr(exc, "args", ())
        if args and isinstance(args[0], int):
            return args[0]
        exc = exc.__cause__  # type: ignore[assignment]
    return None
