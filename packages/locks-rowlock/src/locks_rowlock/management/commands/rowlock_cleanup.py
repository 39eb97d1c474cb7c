"""``manage.py rowlock_cleanup``: delete lock rows released or expired long ago."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = (
        "Delete rows of the lock table released or expired more than --older-than seconds ago "
        "(by the database's clock). Held locks are never touched; fencing tokens keep growing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--using", default=None, help="the LOCKS alias (default: the first lock-table one)")
        parser.add_argument("--older-than", type=float, default=86400.0, help="seconds (default: one day)")

    def handle(self, *args: Any, **options: Any) -> None:
        from locks.config import get_backend
        from locks_rowlock.admin import lock_table_alias
        from locks_rowlock.backend import RowLockBackend

        alias = options["using"] or lock_table_alias()
        if alias is None:
            raise CommandError("no LOCKS alias uses locks_rowlock.RowLockBackend: pass --using")
        backend = get_backend(alias)
        if not isinstance(backend, RowLockBackend):
            raise CommandError(f"LOCKS[{alias!r}] is not a lock-table backend")
        try:
            deleted = backend.remove_stale_rows(options["older_than"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{deleted} stale lock row(s) deleted")
