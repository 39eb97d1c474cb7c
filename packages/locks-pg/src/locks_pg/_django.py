"""Helpers on Django's connections shared by table_lock, lock_timeout and prioritize."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from locks_pg.backend import TransactionRequired


def connection_of(using: str) -> Any:
    from django.core.exceptions import ImproperlyConfigured
    from django.db import connections

    connection = connections[using]
    if connection.vendor != "postgresql":
        raise ImproperlyConfigured(f"DATABASES[{using!r}] is {connection.vendor}, not PostgreSQL")
    return connection


def require_transaction(connection: Any, what: str) -> None:
    if not connection.in_atomic_block:
        raise TransactionRequired(
            f"{what} needs an open transaction: wrap it in transaction.atomic(using={connection.alias!r}) "
            "(PostgreSQL holds the lock until that transaction ends)"
        )


def in_failed_transaction(connection: Any) -> bool:
    """Whether the session's transaction is aborted (only a rollback may follow)."""
    if connection.needs_rollback:
        return True
    raw = connection.connection
    if raw is None:
        return False
    info = getattr(raw, "info", None)
    if info is not None:  # psycopg 3
        import psycopg

        return bool(info.transaction_status == psycopg.pq.TransactionStatus.INERROR)
    import psycopg2.extensions  # type: ignore[import-not-found,import-untyped,unused-ignore]

    return bool(raw.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_INERROR)


def milliseconds(seconds: float | timedelta | None, what: str, *, zero_ok: bool) -> int:
    """A timeout as PostgreSQL's integer milliseconds (0: no limit)."""
    if seconds is None:
        return 0
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{what} must be seconds (int, float or timedelta) or None, not {type(seconds).__name__}")
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a finite number of seconds >= 0, not {seconds}")
    if seconds == 0:
        if not zero_ok:
            raise ValueError(f"{what} of 0 would mean no limit to PostgreSQL: pass None for that")
        return 0
    return max(1, math.ceil(seconds * 1000))
