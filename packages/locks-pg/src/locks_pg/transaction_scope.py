"""Transaction scope: ``pg_advisory_xact_lock`` in the caller's open Django transaction
(``OPTIONS['DATABASE']``), released by PostgreSQL at commit or rollback. It works behind
pgbouncer in transaction pooling mode, where session locks cannot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

from locks.backends import Hold, LockRequest
from locks.exceptions import LockError, LockLost
from locks_pg.session_scope import milliseconds

if TYPE_CHECKING:
    from locks.keys import LockName


class TransactionRequired(LockError):
    """A transaction-scoped lock was asked for outside a transaction (autocommit)."""


class _TransactionMarker:
    """Registered with ``transaction.on_commit`` when a transaction-scoped lock is taken. Django
    drops it when that transaction commits or rolls back, and when a savepoint the lock was taken
    in rolls back: exactly when PostgreSQL releases the lock. Running it does nothing."""

    __slots__ = ()

    def __call__(self) -> None:
        pass


@dataclass(frozen=True)
class _XactHold:
    """Where a transaction-scoped lock lives: the Django connection and its marker."""

    alias: str
    marker: _TransactionMarker


class TransactionScope:
    """The transaction-scope primitives of :class:`~locks_pg.TransactionAdvisoryLockBackend`."""

    if TYPE_CHECKING:
        database: str | None
        sequence: str
        _fence_ready: bool
        _nextval: str
        fencing: bool

    def _django_connection(self, name: LockName) -> Any:
        from django.db import connections

        assert self.database is not None
        connection = connections[self.database]
        if not connection.in_atomic_block:
            raise TransactionRequired(
                f"{name!r} is a transaction-scoped advisory lock: take it inside transaction.atomic("
                f"using={self.database!r}) (it is released when that transaction ends)",
                name,
            )
        if connection.needs_rollback:
            raise TransactionRequired(f"the transaction of {name!r} is marked for rollback: no lock taken", name)
        return connection

    def _xact_row(self, cursor: Any, sql: str, params: list[Any]) -> Any:
        cursor.execute(sql, params)
        return cursor.fetchone()

    def _xact_try(self, request: LockRequest) -> Hold | None:
        connection = self._django_connection(request.name)
        function = "pg_try_advisory_xact_lock_shared" if request.shared else "pg_try_advisory_xact_lock"
        self._xact_ensure_fencing(connection)
        with connection.cursor() as cursor:
            row = self._xact_row(
                cursor, f"SELECT CASE WHEN {function}(%s::bigint) THEN {self._nextval} END", [request.key]
            )
        if row[0] is None:
            return None
        return Hold(request, data=self._xact_mark(), token=row[0] if self.fencing else None)

    def _xact_acquire(self, request: LockRequest, timeout: float | None) -> Hold | None:
        hold = self._xact_try(request)
        if hold is not None or timeout == 0:
            return hold
        from django.db import DatabaseError, transaction

        connection = self._django_connection(request.name)
        function = "pg_advisory_xact_lock_shared" if request.shared else "pg_advisory_xact_lock"
        wait = "0" if timeout is None else milliseconds(timeout)
        try:
            # A lock_timeout error aborts the transaction it happens in: wait in a savepoint,
            # so the caller's transaction carries on, and put lock_timeout back as it was.
            with transaction.atomic(using=self.database), connection.cursor() as cursor:
                previous = self._xact_row(
                    cursor, "SELECT current_setting('lock_timeout'), set_config('lock_timeout', %s, true)", [wait]
                )[0]
                row = self._xact_row(
                    cursor,
                    f"SELECT {function}(%s::bigint), {self._nextval}, set_config('lock_timeout', %s, true)",
                    [request.key, previous],
                )
        except DatabaseError as exc:
            state = sqlstate(exc)
            if state == "55P03":
                return None
            if state == "40P01":
                raise LockError(f"deadlock detected waiting for {request.name!r}", request.name) from exc
            raise
        return Hold(request, data=self._xact_mark(), token=row[1] if self.fencing else None)

    def _xact_mark(self) -> _XactHold:
        """Tie a new hold to the current transaction (see :class:`_TransactionMarker`)."""
        from django.db import transaction

        marker = _TransactionMarker()
        transaction.on_commit(marker, using=self.database)
        return _XactHold(self.database or "", marker)

    def reentry_lost(self, hold: Hold) -> str | None:
        # A transaction-scoped lock taken again in this thread after its transaction ended:
        # PostgreSQL released it at commit or rollback, so take it again in the new transaction.
        data = hold.data
        if isinstance(data, _XactHold) and not self._xact_alive(data):
            return "its transaction ended (PostgreSQL released it at commit or rollback)"
        return None

    def _xact_alive(self, state: _XactHold) -> bool:
        """Whether the transaction (and savepoint) that took the lock is still open: no query."""
        from django.db import connections

        connection = connections[state.alias]
        if connection.connection is None or not connection.in_atomic_block:
            return False
        return any(len(hook) > 1 and hook[1] is state.marker for hook in connection.run_on_commit)

    def _xact_release(self, hold: Hold) -> None:
        """A transaction-scoped lock cannot be released early: while its transaction is open this
        leaves it to PostgreSQL (it ends at commit or rollback); after that, it is reported lost,
        since the work between the transaction's end and this release was not under the lock."""
        if not self._xact_alive(hold.data):
            raise LockLost(
                f"{hold.name!r} was a transaction-scoped lock: it ended with its transaction, before release()",
                hold.name,
            )

    def _xact_ensure_fencing(self, connection: Any) -> None:
        # On the caller's connection (an owned one could be behind a pooler), and in a savepoint:
        # a failing CREATE must not abort the caller's transaction.
        if self._fence_ready:
            return
        from django.db import DatabaseError, transaction

        with connection.cursor() as cursor:
            exists = self._xact_row(cursor, "SELECT to_regclass(%s) IS NOT NULL", [self.sequence])[0]
        if not exists:
            try:
                with transaction.atomic(using=self.database), connection.cursor() as cursor:
                    cursor.execute(f"CREATE SEQUENCE IF NOT EXISTS {self.sequence} AS bigint")
            except DatabaseError as exc:
                if sqlstate(exc) not in ("23505", "42P07"):  # created by someone else meanwhile
                    raise ImproperlyConfigured(
                        f"the fencing sequence {self.sequence} is missing and could not be created ({exc}): "
                        "run the locks_pg migration, or set OPTIONS['FENCING'] = False"
                    ) from exc
        self._fence_ready = True


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a (Django-wrapped) psycopg 2 or 3 error."""
    for candidate in (exc, exc.__cause__):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if state:
            return str(state)
    return None
